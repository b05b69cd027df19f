"""Cascades and verifiers, with scripted models that have set costs and answers."""

from __future__ import annotations

import json
import math
from typing import Any, Literal

import pytest

import flowroute as fr
from flowroute.models.testing import FunctionModel, TestModel


def scripted(name: str, answer: str, cost: float, logprob: float | None = None) -> FunctionModel:
    def reply(request: fr.ModelRequest) -> Any:
        if logprob is None:
            return answer
        return answer, [logprob] * 3

    return FunctionModel(reply, name=name, cost_per_call=cost)


def classify_wf(model: Any, output: Any = Literal["refund", "question"]) -> fr.Workflow[Any]:
    @fr.llm(model=model, output=output)
    def classify(ticket: str) -> str:
        "Ticket: {{ ticket }}\nCategory:"

    @fr.workflow
    def wf(ticket: str) -> Any:
        return classify(ticket)

    return wf  # type: ignore[no-any-return]


def test_no_escalation_when_the_small_model_passes() -> None:
    small = scripted("small", "refund", 0.001)
    large = scripted("large", "question", 0.1)
    wf = classify_wf(fr.cascade(small, large, verifiers=[fr.Predicate(lambda v: v == "refund")]))
    result = wf.run(ticket="charged twice")
    record = result.records["classify"]
    assert result.output == "refund"
    assert record.answered_by == "small" and record.escalations == 0
    assert [c.model for c in record.calls] == ["small"]
    assert large.requests == []
    assert record.cascade[0]["passed"] and record.cascade[0]["cost"] == 0.001
    assert [v["verifier"] for v in record.cascade[0]["verdicts"]] == ["schema", "predicate"]


def test_escalates_exactly_when_a_verifier_fails() -> None:
    small = scripted("small", "question", 0.001)
    large = scripted("large", "refund", 0.1)
    check = fr.Predicate(lambda v: (v == "refund", f"got {v}"), name="is_refund")
    result = classify_wf(fr.cascade(small, large, verifiers=[check])).run(ticket="x")
    record = result.records["classify"]
    assert result.output == "refund"
    assert record.answered_by == "large" and record.escalations == 1
    first, second = record.cascade
    assert not first["passed"] and first["model"] == "small"
    assert first["verdicts"][1] == {
        "verifier": "is_refund",
        "passed": False,
        "score": 0.0,
        "reason": "got question",
    }
    assert second["passed"] and second["model"] == "large"
    assert record.cost == pytest.approx(0.101)
    assert result.to_dict()["nodes"]["classify"]["escalations"] == 1


def test_a_model_error_counts_as_a_failed_attempt() -> None:
    broken = TestModel(["not json"], name="broken")
    good = scripted("good", '{"n": 3}', 0.01)
    wf = classify_wf(
        fr.cascade(broken, good),
        output={"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]},
    )
    result = wf.run(ticket="x")
    assert result.output == {"n": 3}
    first = result.records["classify"].cascade[0]
    assert first["model"] == "broken" and not first["passed"]
    assert "does not match the schema" in first["verdicts"][0]["reason"]


def test_confidence_uses_token_logprobs() -> None:
    unsure = scripted("small", "refund", 0.001, logprob=math.log(0.5))
    sure = scripted("large", "question", 0.1, logprob=math.log(0.95))
    wf = classify_wf(fr.cascade(unsure, sure, verifiers=[fr.Confidence(min_mean=0.8)]))
    result = wf.run(ticket="x")
    record = result.records["classify"]
    assert result.output == "question" and record.escalations == 1
    reason = record.cascade[0]["verdicts"][1]["reason"]
    assert reason == "mean token probability 0.500 < 0.8"
    assert unsure.requests[0].settings.logprobs  # the cascade asked for logprobs

    no_logprobs = scripted("plain", "refund", 0.0)
    wf = classify_wf(fr.cascade(no_logprobs, verifiers=[fr.Confidence()], on_exhausted="error"))
    result = wf.run(ticket="x")
    assert result.records["classify"].status == "failed"
    assert "returned no token logprobs" in (result.records["classify"].error or "")


def test_budgets_stop_escalation() -> None:
    def chain(**budget: Any) -> fr.Cascade:
        return fr.cascade(
            scripted("a", "question", 0.05),
            scripted("b", "question", 0.05),
            scripted("c", "refund", 0.05),
            verifiers=[fr.Predicate(lambda v: v == "refund")],
            **budget,
        )

    result = classify_wf(chain(max_cost=0.06)).run(ticket="x")
    record = result.records["classify"]
    assert [c.model for c in record.calls] == ["a", "b"]
    assert "max_cost" in record.cascade[-2]["stopped"]
    assert record.cascade[-1]["exhausted"] and result.output == "question"

    result = classify_wf(chain(max_escalations=1)).run(ticket="x")
    assert [c.model for c in result.records["classify"].calls] == ["a", "b"]

    strict = fr.cascade(
        scripted("a", "question", 0.05),
        scripted("b", "refund", 0.05),
        verifiers=[fr.Predicate(lambda v: v == "refund")],
    )
    result = classify_wf(strict).run(fr.RunOptions(budget=fr.Budget(max_cost=0.01)), ticket="x")
    record = result.records["classify"]
    assert [c.model for c in record.calls] == ["a"]
    assert record.cascade[1]["stopped"].startswith("run budget: cost")


def test_exhausted_with_error_policy_names_every_failure() -> None:
    c = fr.cascade(
        scripted("a", "question", 0.0),
        scripted("b", "question", 0.0),
        verifiers=[fr.Predicate(lambda v: (False, "never good"))],
        on_exhausted="error",
    )
    result = classify_wf(c).run(ticket="x")
    error = result.records["classify"].error or ""
    assert "no answer passed the verifiers" in error
    assert "a: predicate: never good" in error and "b: predicate: never good" in error


def test_self_consistency_samples_and_compares() -> None:
    answers = iter(["refund", "refund", "refund", "question", "question", "question"])
    consistent = FunctionModel(lambda r: next(answers), name="small")
    large = scripted("large", "question", 0.0)
    c = fr.cascade(consistent, large, verifiers=[fr.SelfConsistency(k=3)])
    result = classify_wf(c).run(ticket="x")
    record = result.records["classify"]
    assert result.output == "refund" and record.escalations == 0
    assert [r.settings.temperature for r in consistent.requests] == [0.0, 0.7, 0.7]
    assert len({r.settings.seed for r in consistent.requests}) == 3

    flip = iter(["refund", "question", "question"])
    shaky = FunctionModel(lambda r: next(flip), name="shaky")
    c = fr.cascade(shaky, large, verifiers=[fr.SelfConsistency(k=3)])
    result = classify_wf(c).run(ticket="x")
    record = result.records["classify"]
    assert result.output == "question" and record.answered_by == "large"
    assert "1/3 samples agree" in record.cascade[0]["verdicts"][1]["reason"]


def test_llm_judge_is_asked_a_constrained_question() -> None:
    seen: list[fr.ModelRequest] = []

    def judge_reply(request: fr.ModelRequest) -> str:
        seen.append(request)
        return "no" if "Answer:\nquestion" in request.as_prompt() else "yes"

    judge = FunctionModel(judge_reply, name="judge")
    c = fr.cascade(
        scripted("small", "question", 0.0),
        scripted("large", "refund", 0.0),
        verifiers=[fr.Judge(judge, question="Is the category right for the ticket?")],
    )
    result = classify_wf(c).run(ticket="I was charged twice")
    record = result.records["classify"]
    assert result.output == "refund" and record.escalations == 1
    assert record.cascade[0]["verdicts"][1]["reason"] == "the judge said no"
    assert seen[0].constraint is not None and seen[0].constraint.choices == ("yes", "no")
    assert "I was charged twice" in seen[0].prompt  # type: ignore[operator]
    assert [c.model for c in record.calls] == ["small", "judge", "large", "judge"]


def test_agent_steps_cascade_and_calls_must_be_executable() -> None:
    @fr.tool
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    step = json.dumps({"calls": [{"name": "add", "arguments": {"a": 1, "b": 2}}]})
    small = TestModel([step, json.dumps({"final": 3})], name="small", cost_per_call=0.0)
    large = TestModel([], name="large")
    model = fr.cascade(small, large, verifiers=[fr.ExecutableCalls()])

    @fr.agent(model=model, tools=[add], output=int)
    def solve(q: str) -> str:
        "Question: {{ q }}"

    @fr.workflow
    def wf(q: str) -> Any:
        return solve(q)

    result = wf.run(q="1+2?")
    record = result.records["solve"]
    assert result.output == 3 and record.escalations == 0
    assert record.cascade[0]["verdicts"][1]["reason"] == "1 call(s) executable"


def test_cascade_problems_are_reported_before_running() -> None:
    wf = classify_wf(fr.cascade("nonsense-model", "local"))
    problems = [p.message for p in wf.check() if p.severity == "error"]
    assert any("in nonsense-model: " in m and "unknown model" in m for m in problems)
    with pytest.raises(fr.WorkflowDefinitionError, match="at least one model"):
        classify_wf(fr.cascade()).validate()


def test_run_metrics_by_model_and_fallbacks() -> None:
    small = scripted("small", "question", 0.001)
    large = scripted("large", "refund", 0.1)
    c = fr.cascade(small, large, verifiers=[fr.Predicate(lambda v: v == "refund")])
    result = classify_wf(c).run(ticket="x")
    metrics = result.metrics()
    assert metrics["escalations"] == 1
    assert metrics["answered_by"] == {"classify": "large"}
    assert metrics["fallback_nodes"] == ["classify"]
    assert metrics["models"]["small"]["calls"] == 1
    assert metrics["models"]["large"]["cost"] == pytest.approx(0.1)
    assert result.to_dict()["metrics"]["escalations"] == 1


@pytest.mark.integration
def test_confidence_from_the_local_models_real_logprobs() -> None:
    def summarise(model: Any) -> fr.Workflow[Any]:
        @fr.llm(model=model, output=str, settings={"max_tokens": 8})
        def summary(ticket: str) -> str:
            "Ticket: {{ ticket }}\nOne-line summary:"

        @fr.workflow
        def wf(ticket: str) -> Any:
            return summary(ticket)

        return wf  # type: ignore[no-any-return]

    large = scripted("large", "Customer wants a refund.", 0.1, logprob=math.log(0.99))
    ticket = "I was charged twice for my March invoice, please refund the extra payment."
    result = summarise(fr.cascade("local", large, verifiers=[fr.Confidence(min_mean=0.0)])).run(
        ticket=ticket
    )
    record = result.records["summary"]
    assert record.answered_by == "local" and record.escalations == 0
    confidence = record.cascade[0]["verdicts"][1]["score"]
    assert 0.0 < confidence < 1.0  # free text over the whole vocabulary: never certain

    strict = fr.Confidence(min_mean=min(1.0, confidence + 0.01))
    result = summarise(fr.cascade("local", large, verifiers=[strict])).run(ticket=ticket)
    record = result.records["summary"]
    assert record.answered_by == "large" and record.escalations == 1
    assert result.output == "Customer wants a refund."
    assert record.cascade[0]["verdicts"][1]["reason"].startswith("mean token probability")
