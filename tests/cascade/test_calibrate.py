"""Calibration of a cascade's confidence threshold, and writing it back into the file."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest

import flowroute as fr
from flowroute.cascade.calibrate import Example, calibrate, load_examples, write_threshold
from flowroute.cli import main
from flowroute.errors import FlowrouteError
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
          - confidence: {min_mean: 0.5}   # calibrated
      prompt: "Ticket: {{ inputs.ticket }}\\nCategory:"
      output: [refund, question]
output: classify
"""

# ticket -> (the small model's answer, its confidence); the right answer is always "refund"
SMALL = {"a": ("refund", 0.9), "b": ("refund", 0.8), "c": ("question", 0.6), "d": ("question", 0.5)}


def small(request: fr.ModelRequest) -> tuple[str, list[float]]:
    ticket = request.as_prompt().split("Ticket: ")[1][0]
    answer, p = SMALL[ticket]
    return answer, [math.log(p)] * 2


def workflow() -> fr.Workflow[object]:
    wf = fr.loads(SOURCE, source="triage.yaml")
    models = {
        "small": FunctionModel(small, name="small", cost_per_call=0.0),
        "large": FunctionModel(lambda r: ("refund", [0.0]), name="large", cost_per_call=1.0),
    }
    return dataclasses.replace(wf, models=models)


EXAMPLES = [Example({"ticket": t}, "refund") for t in "abcd"]


async def test_the_cheapest_threshold_that_meets_the_target_wins() -> None:
    result = await calibrate(workflow(), "classify", EXAMPLES, target=1.0)
    assert result.threshold == pytest.approx(0.8)
    chosen = result.chosen
    assert chosen is not None and chosen.accuracy == 1.0 and chosen.fallback_rate == 0.5
    assert chosen.cost_per_task == pytest.approx(0.5)
    assert [o.correct for o in result.outcomes["small"]] == [True, True, False, False]

    cheap = await calibrate(workflow(), "classify", EXAMPLES, target=0.5)
    assert cheap.threshold == 0.0 and cheap.chosen and cheap.chosen.cost_per_task == 0.0

    priced = await calibrate(
        workflow(), "classify", EXAMPLES, target=1.0, prices={"small": 0.0, "large": 1e6}
    )
    large = priced.outcomes["large"]
    assert all(o.cost > 1 for o in large)  # one dollar per token, not the reported $1 a call
    assert priced.chosen and priced.chosen.threshold == pytest.approx(0.8)
    assert priced.chosen.cost_per_task == pytest.approx((large[2].cost + large[3].cost) / 4)

    impossible = await calibrate(
        workflow(), "classify", EXAMPLES, target=1.0, check=lambda out, ex: False
    )
    assert impossible.threshold is None


async def test_calibration_needs_a_confidence_cascade() -> None:
    wf = workflow()
    with pytest.raises(FlowrouteError, match="no node 'nope'"):
        await calibrate(wf, "nope", EXAMPLES, target=0.9)
    plain = fr.loads(SOURCE.replace("- confidence: {min_mean: 0.5}", "- executable_calls: {}"))
    with pytest.raises(FlowrouteError, match="has no confidence verifier"):
        await calibrate(plain, "classify", EXAMPLES, target=0.9)


def test_write_threshold_changes_only_that_value(tmp_path: Path) -> None:
    path = tmp_path / "triage.yaml"
    path.write_text(SOURCE)
    write_threshold(path, "classify", 0.8123)
    assert path.read_text() == SOURCE.replace("min_mean: 0.5}", "min_mean: 0.8123}")
    path.write_text(SOURCE.replace("{min_mean: 0.5}", "{}"))
    write_threshold(path, "classify", 0.7)
    assert "- confidence: {min_mean: 0.7}   # calibrated" in path.read_text()
    with pytest.raises(FlowrouteError, match="node 'other' has no cascade verifiers"):
        write_threshold(path, "other", 0.7)


def test_examples_file_errors_name_the_line(tmp_path: Path) -> None:
    data = tmp_path / "labels.jsonl"
    data.write_text('{"inputs": {"ticket": "a"}, "expected": "refund"}\n[1, 2]\n')
    with pytest.raises(FlowrouteError, match=r"labels.jsonl:2: expected"):
        load_examples(data)


@pytest.mark.integration
def test_cli_calibrates_on_the_local_model_and_writes_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Real token logprobs from the embedded model feed the confidence verifier."""
    path = tmp_path / "triage.yaml"
    path.write_text(SOURCE.replace("[small, large]", "[local, local]"))
    data = tmp_path / "labels.jsonl"
    rows = [
        ("I was charged twice, please refund me", "refund"),
        ("How do I change my password?", "question"),
        ("Refund my order, it never arrived", "refund"),
    ]
    data.write_text(
        "".join(json.dumps({"inputs": {"ticket": t}, "expected": e}) + "\n" for t, e in rows)
    )
    code = main(
        [
            "calibrate",
            str(path),
            "--node",
            "classify",
            "--data",
            str(data),
            "--target",
            "0",
            "--price",
            "local=1",
            "--write",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "chosen min_mean:" in out and "written to" in out
    chosen = float(out.split("chosen min_mean:")[1].split()[0])
    assert chosen == 0.0  # target 0: the cheapest threshold never escalates
    text = path.read_text()
    assert "{min_mean: 0}" in text and "# calibrated" in text
    # real logprobs: every answer had a confidence strictly between 0 and 1
    assert "local alone: accuracy" in out
