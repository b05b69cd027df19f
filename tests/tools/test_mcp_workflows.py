"""MCP tools inside workflows: tool nodes, agents, both front ends, real servers (stdio, HTTP)."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import pytest

import flowroute as fr
from flowroute.models.testing import FunctionModel, TestModel

pytestmark = pytest.mark.integration

SERVERS = Path(__file__).resolve().parents[2] / "examples" / "servers"


def calls(*pairs: tuple[str, dict[str, Any]]) -> str:
    return json.dumps({"calls": [{"name": n, "arguments": a} for n, a in pairs]})


def final(value: Any) -> str:
    return json.dumps({"final": value})


def yaml_workflow(tmp_path: Path, body: str) -> fr.Workflow[Any]:
    (tmp_path / "wf.yaml").write_text(body)
    return fr.load(tmp_path / "wf.yaml")


STDIO_SERVERS = f"""
mcp_servers:
  calc:
    command: python
    args: ["{SERVERS / "calculator.py"}"]
  faulty:
    command: python
    args: ["{SERVERS / "faulty.py"}"]
    call_timeout: 1
"""


def test_yaml_mcp_tool_nodes_feed_each_other(tmp_path: Path) -> None:
    wf = yaml_workflow(
        tmp_path,
        "name: t\ninputs: {miles: number}\n"
        + STDIO_SERVERS
        + """
nodes:
  km:
    tool: calc.convert_units
    args: {value: "{{ inputs.miles }}", from_unit: mi, to_unit: km}
  doubled:
    tool: calc.multiply
    args: {a: "{{ km }}", b: 2}
output: {km: km, doubled: doubled}
""",
    )
    result = wf.run(miles=10)
    assert result.output["km"] == pytest.approx(16.09344)
    assert result.output["doubled"] == pytest.approx(32.18688)
    assert result.records["km"].kind == "mcp_tool"


def test_server_crash_fails_the_node_and_keeps_the_rest(tmp_path: Path) -> None:
    wf = yaml_workflow(
        tmp_path,
        "name: t\ninputs: {}\n"
        + STDIO_SERVERS
        + """
nodes:
  boom:
    tool: faulty.crash
  slow:
    tool: faulty.sleep
    args: {seconds: 5}
  sum:
    tool: calc.add
    args: {a: 1, b: 2}
output: {boom: boom, slow: slow, sum: sum}
""",
    )
    result = wf.run()
    assert not result.ok
    boom = result.records["boom"]
    assert boom.status == "failed" and "tool 'crash'" in (boom.error or "")
    assert "MCP server 'faulty'" in (boom.error or "")
    slow = result.records["slow"]
    assert slow.status == "failed" and "faulty" in (slow.error or "")
    assert result.records["sum"].status == "succeeded" and result.records["sum"].output == 3.0
    assert "crashing now" in result.server_logs["faulty"]  # its stderr is in the run log


def test_call_timeout_names_tool_and_server(tmp_path: Path) -> None:
    wf = yaml_workflow(
        tmp_path,
        "name: t\ninputs: {}\n"
        + STDIO_SERVERS
        + """
nodes:
  slow:
    tool: faulty.sleep
    args: {seconds: 10}
output: slow
""",
    )
    result = wf.run()
    error = result.records["slow"].error or ""
    assert "tool 'sleep'" in error and "MCP server 'faulty'" in error
    assert "call_timeout=1s" in error


def test_unknown_mcp_server_is_reported_with_its_line(tmp_path: Path) -> None:
    with pytest.raises(fr.WorkflowDefinitionError) as info:
        yaml_workflow(
            tmp_path,
            "name: t\ninputs: {}\n"
            + STDIO_SERVERS
            + """
nodes:
  a:
    agent:
      model: local
      prompt: hi
      tools: [calc.add, nowhere.add]
output: a
""",
        )
    (problem,) = info.value.problems
    assert problem.message == (
        "unknown MCP server 'nowhere' in 'nowhere.add' (mcp_servers: calc, faulty)"
    )
    assert (problem.node, problem.field, problem.line) == ("a", "tools", 18)


def test_agent_uses_mcp_tools_over_http(tmp_path: Path, http_servers: dict[str, str]) -> None:
    wf = yaml_workflow(
        tmp_path,
        f"""
name: t
inputs: {{question: string}}
mcp_servers:
  calc: {{url: "{http_servers["calculator"]}"}}
nodes:
  solve:
    agent:
      model: m
      prompt: "{{{{ inputs.question }}}}"
      tools: [calc.*]
      output: number
output: solve
""",
    )
    model = TestModel([calls(("multiply", {"a": 6, "b": 7})), final(42)])
    result = dataclasses.replace(wf, models={"m": model}).run(question="6*7?")
    assert result.output == 42
    step = result.records["solve"].trace[0]["calls"][0]
    assert step["name"] == "multiply" and step["result"] == 42.0
    # the prompt listed every tool of the server
    assert "convert_units(" in model.requests[0].as_prompt()


def test_agent_sees_tools_added_mid_run() -> None:
    server = fr.MCPServer.stdio("faulty", sys.executable, (str(SERVERS / "faulty.py"),))
    step = 0

    def reply(request: fr.ModelRequest) -> str:
        nonlocal step
        step += 1
        if step == 1:
            return calls(("add_tool", {"name": "fresh_tool"}))
        if step == 2:
            return calls(("fresh_tool", {}))  # only valid if the new tool reached the schema
        return final("done")

    @fr.agent(model=FunctionModel(reply), tools=["faulty.*"], max_steps=4)
    def run_agent(task: str) -> str:
        "{{ task }}"

    @fr.workflow(mcp_servers=[server])
    def wf(task: str) -> str:
        return run_agent(task)

    result = wf.run(task="grow")
    assert result.output == "done", result.records["run_agent"].error
    trace = result.records["run_agent"].trace
    assert any("fresh_tool" in entry.get("tools_changed", []) for entry in trace)
    assert trace[-2]["calls"][0]["name"] == "fresh_tool"


def test_python_call_tool_and_a_pool_shared_across_runs() -> None:
    server = fr.MCPServer.stdio("faulty", sys.executable, (str(SERVERS / "faulty.py"),))

    @fr.workflow(mcp_servers=[server])
    def wf() -> int:
        return fr.call_tool("faulty.pid")  # type: ignore[no-any-return]

    separate = {wf.run().output, wf.run().output}
    assert len(separate) == 2, "without a shared pool each run starts its own server"

    async def shared() -> set[int]:
        async with fr.MCPPool([server]) as pool:
            options = fr.RunOptions(mcp_pool=pool)
            first = await wf.arun(options)
            second = await wf.arun(options)
            return {first.output, second.output}

    import anyio

    assert len(anyio.run(shared)) == 1
