"""Cascades declared in YAML workflow files."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest

import flowroute as fr
from flowroute.models.testing import FunctionModel

SOURCE = """\
name: triage
inputs: {ticket: string}
nodes:
  classify:
    llm:
      model:
        cascade: [small, large]
        verifiers:
          - confidence: {min_mean: 0.8}
          - predicate: cascade_checks:not_other
        max_escalations: 1
      prompt: "Ticket: {{ inputs.ticket }}\\nCategory:"
      output: [refund, question, other]
output: classify
"""

CHECKS = """
def not_other(value):
    return value != "other", f"category {value}"
"""


@pytest.fixture
def checks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "cascade_checks.py").write_text(CHECKS)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def model(name: str, answer: str, p: float, cost: float) -> FunctionModel:
    return FunctionModel(lambda r: (answer, [math.log(p)] * 2), name=name, cost_per_call=cost)


def test_a_yaml_cascade_escalates_on_low_confidence(checks: Path) -> None:
    wf = fr.loads(SOURCE, source="triage.yaml")
    cascade = wf.nodes["classify"].model  # type: ignore[attr-defined]
    assert isinstance(cascade, fr.Cascade)
    assert [type(v).__name__ for v in cascade.verifiers] == ["Confidence", "Predicate"]
    assert cascade.budget.max_escalations == 1
    models = {
        "small": model("small", "refund", 0.6, 0.0),
        "large": model("large", "question", 0.9, 1.0),
    }
    result = dataclasses.replace(wf, models=models).run(ticket="charged twice")
    record = result.records["classify"]
    assert result.output == "question" and record.answered_by == "large"
    assert record.cascade[0]["verdicts"][1]["reason"].startswith("mean token probability 0.600")

    models["small"] = model("small", "other", 0.99, 0.0)
    result = dataclasses.replace(wf, models=models).run(ticket="hello")
    assert result.records["classify"].cascade[0]["verdicts"][2]["reason"] == "category other"


def test_bad_cascades_are_named_with_their_lines(checks: Path) -> None:
    bad = SOURCE.replace("- confidence: {min_mean: 0.8}", "- confidence: {min_mean: 1.5}")
    with pytest.raises(fr.WorkflowDefinitionError) as err:
        fr.loads(bad, source="triage.yaml")
    [problem] = err.value.problems
    assert problem.line == 9 and problem.node == "classify"
    assert problem.field == "llm.model.verifiers.0.confidence.min_mean"

    two = SOURCE.replace(
        "- predicate: cascade_checks:not_other",
        "- {predicate: cascade_checks:not_other, executable_calls: {}}",
    )
    with pytest.raises(fr.WorkflowDefinitionError, match=r"triage.yaml:10: .*exactly one of"):
        fr.loads(two, source="triage.yaml")

    missing = SOURCE.replace("cascade_checks:not_other", "cascade_checks:nope")
    with pytest.raises(fr.WorkflowDefinitionError, match=r"predicate: cannot import"):
        fr.loads(missing, source="triage.yaml")

    wf = fr.loads(SOURCE.replace("[small, large]", "[small, nonsense]"), source="triage.yaml")
    messages = [p.message for p in wf.check()]
    assert any("in nonsense:" in m and "unknown model" in m for m in messages)
