"""Agent nodes: the tool-calling loop, with scripted models and real Python tools."""

from __future__ import annotations

import json
import time
from typing import Any

import anyio
import pytest
from pydantic import BaseModel

import flowroute as fr
from flowroute.models.testing import FunctionModel, TestModel


@fr.tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@fr.tool
def divide(a: float, b: float) -> float:
    """Divide a by b."""
    return a / b


def calls(*pairs: tuple[str, dict[str, Any]]) -> str:
    return json.dumps({"calls": [{"name": n, "arguments": a} for n, a in pairs]})


def final(value: Any) -> str:
    return json.dumps({"final": value})


def build(model: fr.Model, tools: list[Any], output: Any = int, **kw: Any) -> fr.Workflow[Any]:
    @fr.agent(model=model, tools=tools, output=output, **kw)
    def solve(question: str) -> str:
        "Question: {{ question }}"

    @fr.workflow
    def wf(question: str) -> Any:
        return solve(question)

    return wf  # type: ignore[no-any-return]


def test_calls_tools_then_answers_and_keeps_the_trajectory() -> None:
    model = TestModel([calls(("add", {"a": 2, "b": 3})), final(5)])
    result = build(model, [add]).run(question="2+3?")
    assert result.output == 5
    trace = result.records["solve"].trace
    assert trace[0]["calls"][0] == {
        "name": "add",
        "arguments": {"a": 2, "b": 3},
        "result": 5,
        "duration": trace[0]["calls"][0]["duration"],
    }
    assert trace[1] == {"step": 2, "final": 5, "forced": False}
    # the second prompt shows the model the first step's result
    second_prompt = model.requests[1].as_prompt()
    assert "Result 1.1: add -> 5" in second_prompt
    assert "- add(a: integer, b: integer): Add two integers." in second_prompt
    assert len(result.records["solve"].calls) == 2


def test_calls_from_one_step_run_in_parallel() -> None:
    @fr.tool
    async def slow(x: int) -> int:
        """Slow identity."""
        await anyio.sleep(0.3)
        return x

    model = TestModel([calls(("slow", {"x": 1}), ("slow", {"x": 2}), ("slow", {"x": 3})), final(6)])
    start = time.perf_counter()
    result = build(model, [slow]).run(question="?")
    assert result.output == 6
    assert time.perf_counter() - start < 0.8
    assert [c["result"] for c in result.records["solve"].trace[0]["calls"]] == [1, 2, 3]


def test_identical_calls_in_one_step_run_once() -> None:
    ran: list[int] = []

    @fr.tool
    def record(x: int) -> int:
        """Record x."""
        ran.append(x)
        return x

    model = TestModel([calls(("record", {"x": 1}), ("record", {"x": 1})), final(1)])
    build(model, [record]).run(question="?")
    assert ran == [1]


def test_tool_error_is_shown_to_the_model_which_may_retry() -> None:
    model = TestModel(
        [calls(("divide", {"a": 1, "b": 0})), calls(("divide", {"a": 1, "b": 4})), final(0.25)]
    )
    result = build(model, [divide], output=float).run(question="1/0 then 1/4")
    assert result.output == 0.25
    first = result.records["solve"].trace[0]["calls"][0]
    assert "tool 'divide': raised ZeroDivisionError" in first["error"]
    assert "Result 1.1: divide -> error: tool 'divide'" in model.requests[1].as_prompt()


def test_tool_error_fails_the_node_when_asked() -> None:
    model = TestModel([calls(("divide", {"a": 1, "b": 0}))])
    result = build(model, [divide], output=float, on_tool_error="fail").run(question="?")
    record = result.records["solve"]
    assert record.status == "failed"
    assert "tool 'divide'" in (record.error or "")


def test_the_last_step_admits_only_a_final_answer() -> None:
    seen: list[dict[str, Any]] = []

    def reply(request: fr.ModelRequest) -> str:
        assert request.constraint is not None
        seen.append(request.constraint.schema)
        if len(seen) < 2:
            return calls(("add", {"a": 1, "b": 1}))
        return final(2)

    result = build(FunctionModel(reply), [add], max_steps=2).run(question="?")
    assert result.output == 2
    assert "anyOf" in seen[0]  # calls or final
    assert seen[1]["required"] == ["final"]  # final only
    assert result.records["solve"].trace[-1]["forced"] is True


def test_a_call_to_an_unknown_tool_or_with_bad_arguments_is_not_admitted() -> None:
    # the step schema rejects it: with a local model it could never be decoded
    for bad in (
        calls(("rm_rf", {})),
        calls(("add", {"a": "two", "b": 1})),
        calls(("add", {"a": 1, "b": 2, "c": 3})),
    ):
        result = build(TestModel([bad]), [add]).run(question="?")
        record = result.records["solve"]
        assert record.status == "failed" and record.error_type == "ModelError", bad


class Answer(BaseModel):
    value: int
    explanation: str


def test_structured_final_answer_is_validated() -> None:
    model = TestModel([final({"value": 4, "explanation": "2+2"})])
    result = build(model, [add], output=Answer).run(question="2+2")
    assert result.output == Answer(value=4, explanation="2+2")


@pytest.mark.integration
def test_local_model_agent_proposes_only_executable_calls() -> None:
    result = build("local", [add, divide], max_steps=2, settings={"max_tokens": 120}).run(
        question="What is 17 + 25?"
    )
    record = result.records["solve"]
    assert record.status == "succeeded", record.error
    assert isinstance(result.output, int)
    assert all(c.constrained for c in record.calls)
    for step in record.trace:
        for call in step.get("calls", []):
            assert call["name"] in ("add", "divide")
            assert "error" not in call or "ZeroDivisionError" in call["error"]


def test_yaml_agent_node(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    (tmp_path / "fr_agent_yaml_tools.py").write_text(
        'def add(a: int, b: int) -> int:\n    """Add two integers."""\n    return a + b\n'
    )
    (tmp_path / "wf.yaml").write_text(
        "name: agent-demo\n"
        "inputs: {question: string}\n"
        "tools: {add: 'fr_agent_yaml_tools:add'}\n"
        "nodes:\n"
        "  solve:\n"
        "    agent:\n"
        "      model: m\n"
        "      prompt: 'Question: {{ inputs.question }}'\n"
        "      tools: [add]\n"
        "      output: integer\n"
        "      max_steps: 3\n"
        "output: solve\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    wf = fr.load(tmp_path / "wf.yaml")
    model = TestModel([calls(("add", {"a": 20, "b": 22})), final(42)])
    wf = dataclasses.replace(wf, models={"m": model})
    result = wf.run(question="20 + 22?")
    assert result.output == 42
    assert result.records["solve"].kind == "agent"
    assert result.records["solve"].trace[0]["calls"][0]["result"] == 42


def test_system_text_leads_the_agent_prompt() -> None:
    model = TestModel([final(1)])

    @fr.agent(model=model, tools=[add], output=int, system="You are a careful calculator.")
    def solve(question: str) -> str:
        "Question: {{ question }}"

    @fr.workflow
    def wf(question: str) -> int:
        return solve(question)

    assert wf.run(question="?").output == 1
    assert model.requests[0].as_prompt().startswith("You are a careful calculator.\n\nQuestion: ?")


def test_unknown_tool_option_is_rejected() -> None:
    with pytest.raises(fr.FlowrouteError, match="unknown option"):
        fr.tool(tool_timout=1)
