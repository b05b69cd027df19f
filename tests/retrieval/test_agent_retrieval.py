"""Agents that retrieve their tools: only the top-K reach each step's prompt and schema."""

from __future__ import annotations

import json
from typing import Any

import pytest

import flowroute as fr
from flowroute.models.testing import TestModel
from flowroute.retrieval.embedder import default_embedder
from flowroute.retrieval.index import ToolIndex


def _make_tools() -> list[Any]:
    def weather(city: str) -> str:
        """Current weather conditions for a city."""
        return f"sunny in {city}"

    def convert_currency(amount: float, to: str) -> float:
        """Convert an amount of euros into another currency."""
        return amount * 2

    def send_email(to: str, body: str) -> str:
        """Send an email message to a recipient."""
        return "sent"

    def stock_price(ticker: str) -> float:
        """Latest trading price of a stock ticker."""
        return 10.0

    def set_timer(minutes: int) -> str:
        """Start a countdown timer."""
        return "started"

    def translate(text: str, language: str) -> str:
        """Translate text into another language."""
        return text

    return [
        fr.tool(f)
        for f in (weather, convert_currency, send_email, stock_price, set_timer, translate)
    ]


TOOLS = _make_tools()


def calls(name: str, **arguments: Any) -> str:
    return json.dumps({"calls": [{"name": name, "arguments": arguments}]})


def final(value: Any) -> str:
    return json.dumps({"final": value})


@pytest.fixture
def index() -> ToolIndex:
    return ToolIndex(default_embedder())


def build(model: fr.Model, **kw: Any) -> fr.Workflow[Any]:
    @fr.agent(model=model, tools=TOOLS, output=str, **kw)
    def assistant(request: str) -> str:
        "Request: {{ request }}"

    @fr.workflow
    def wf(request: str) -> Any:
        return assistant(request)

    return wf  # type: ignore[no-any-return]


def offered(request: fr.ModelRequest) -> set[str]:
    """Tool names the step's schema admits."""
    schema = request.constraint.schema if request.constraint else {}
    names: set[str] = set()
    for branch in json.dumps(schema).split('"const": ')[1:]:
        names.add(json.loads(branch.split(",")[0].split("}")[0]))
    return names


def test_only_the_top_k_tools_reach_the_prompt_and_schema(index: ToolIndex) -> None:
    model = TestModel([calls("weather", city="Oslo"), final("sunny")])
    wf = build(model, retrieve=2)
    result = wf.run(fr.RunOptions(tool_index=index), request="What is the weather in Oslo today?")
    assert result.output == "sunny"
    first = model.requests[0]
    prompt = first.as_prompt()
    assert "weather(city: string)" in prompt
    assert "send_email" not in prompt and "set_timer" not in prompt
    assert "weather" in offered(first) and len(offered(first)) == 2
    record = result.records["assistant"]
    [step1, step2] = record.retrievals
    assert step1["step"] == 1 and step1["hits"][0]["tool"] == "weather"
    assert {"tool", "score", "bm25_rank", "dense_rank"} <= set(step1["hits"][0])
    assert len(step1["hits"]) == 2
    # the second step's query includes the first step's result
    assert "sunny in Oslo" in step2["query"]
    assert record.to_dict()["retrievals"][0]["hits"][0]["tool"] == "weather"


def test_a_tool_outside_the_top_k_cannot_be_called(index: ToolIndex) -> None:
    model = TestModel([calls("set_timer", minutes=3)])
    result = build(model, retrieve=1).run(fr.RunOptions(tool_index=index), request="Weather?")
    assert result.records["assistant"].status == "failed"
    assert "does not match the schema" in (result.records["assistant"].error or "")


def test_search_tools_adds_the_tools_it_finds(index: ToolIndex) -> None:
    model = TestModel(
        [
            calls("search_tools", query="start a countdown timer"),
            calls("set_timer", minutes=5),
            final("timer started"),
        ]
    )
    result = build(model, retrieve=1, search_tool=True).run(
        fr.RunOptions(tool_index=index), request="What is the weather in Oslo?"
    )
    assert result.output == "timer started", result.records["assistant"].error
    first, second = model.requests[0], model.requests[1]
    assert "set_timer" not in offered(first) and "search_tools" in offered(first)
    assert "set_timer" in offered(second)  # pinned once found
    record = result.records["assistant"]
    found = record.trace[0]["calls"][0]["result"]
    assert found[0]["name"] == "set_timer"
    assert any(r.get("search_tool") for r in record.retrievals)


def test_retrieval_options_are_checked() -> None:
    model = TestModel([final("x")])
    with pytest.raises(fr.WorkflowDefinitionError, match="search_tool needs retrieve"):
        build(model, search_tool=True).validate()
    with pytest.raises(fr.WorkflowDefinitionError, match="retrieve must be >= 1"):
        build(model, retrieve=0).validate()


def test_the_shared_index_persists_in_the_cache_dir(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flowroute.retrieval import index as index_module

    monkeypatch.setenv("FLOWROUTE_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(index_module, "_shared", None)
    model = TestModel([final("ok")])
    build(model, retrieve=2).run(request="weather in Oslo")
    saved = tmp_path / "tool-index" / "index.json"
    assert saved.exists() and "convert_currency" in saved.read_text()


YAML_TOOLS = '''
def weather(city: str) -> str:
    """Current weather conditions for a city."""
    return f"sunny in {city}"


def send_email(to: str, body: str) -> str:
    """Send an email message to a recipient."""
    return "sent"


def stock_price(ticker: str) -> float:
    """Latest trading price of a stock ticker."""
    return 10.0
'''


def test_yaml_agents_declare_retrieval(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, index: ToolIndex
) -> None:
    import dataclasses

    (tmp_path / "retr_yaml_tools.py").write_text(YAML_TOOLS)
    monkeypatch.syspath_prepend(str(tmp_path))
    source = """\
name: wf
inputs: {request: string}
tools:
  weather: retr_yaml_tools:weather
  send_email: retr_yaml_tools:send_email
  stock_price: retr_yaml_tools:stock_price
nodes:
  assistant:
    agent:
      model: scripted
      prompt: "Request: {{ inputs.request }}"
      tools: {retrieve: 1, search_tool: true}
output: assistant
"""
    wf = fr.loads(source)
    node = wf.nodes["assistant"]
    assert node.retrieve == 1 and node.search_tool  # type: ignore[attr-defined]
    assert sorted(t.name for t in node.tools) == ["send_email", "stock_price", "weather"]  # type: ignore[attr-defined]
    model = TestModel([calls("weather", city="Oslo"), final("sunny")])
    wf = dataclasses.replace(wf, models={"scripted": model})
    result = wf.run(fr.RunOptions(tool_index=index), request="Weather in Oslo?")
    assert result.output == "sunny"
    assert offered(model.requests[0]) == {"weather", "search_tools"}

    bad = source.replace("{retrieve: 1, search_tool: true}", "{from: [weather, nope], retrieve: 2}")
    with pytest.raises(fr.WorkflowDefinitionError) as err:
        fr.loads(bad, source="wf.yaml")
    assert "wf.yaml:12: error: node 'assistant', field 'tools': unknown tool 'nope'" in str(
        err.value
    )
    bad = source.replace("{retrieve: 1, search_tool: true}", "{retrieve: 0}")
    with pytest.raises(fr.WorkflowDefinitionError) as err:
        fr.loads(bad, source="wf.yaml")
    [problem] = err.value.problems
    assert problem.field == "agent.tools.retrieve" and problem.line == 12
    assert "greater than 0" in problem.message


def test_a_missing_retrieval_extra_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "bm25s" else real(name, *a)
    )
    with pytest.raises(fr.WorkflowDefinitionError, match=r"retrieve needs bm25s.*\[retrieval\]"):
        build(TestModel([final("x")]), retrieve=2).validate()
