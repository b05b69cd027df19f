"""MCP tool servers, for real: the example servers run as subprocesses over stdio and HTTP."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from flowroute.errors import ToolError
from flowroute.graph.types import ANY
from flowroute.tools.base import ToolLike
from flowroute.tools.mcp import MCPPool, MCPServer, MCPServerError, MCPTool

# marked anyio here (not only by tests/conftest.py) so parametrized async tests keep their params
pytestmark = [pytest.mark.integration, pytest.mark.anyio]

SERVERS = Path(__file__).resolve().parents[2] / "examples" / "servers"
PAGED_EXTRA_TOOLS = 150
PAGE_SIZE = 40


def stdio(name: str, script: str, *args: str, **opts: Any) -> MCPServer:
    return MCPServer.stdio(name, sys.executable, [str(SERVERS / script), *args], **opts)


async def call(pool: MCPPool, server: str, tool: str, **args: Any) -> Any:
    return await (await pool.tool(server, tool)).call(args)


async def count(pool: MCPPool, server: str, tool: str) -> int:
    """Call a faulty.py tool returning an int (the server's {"result": n} wrapper is removed)."""
    result = await call(pool, server, tool)
    return int(result)


def process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"  # module scope, so the shared pool below lives across tests


@pytest.fixture(scope="module")
def notes_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("notes") / "notes.json"


@pytest.fixture(scope="module")
async def pool(notes_file: Path) -> AsyncIterator[MCPPool]:
    """One pool for the tests that leave servers running; each server starts on first use."""
    servers = [
        stdio("calc", "calculator.py"),
        stdio("faulty", "faulty.py", call_timeout=1.0),
        stdio("faulty_legacy", "faulty.py", mode="legacy"),
        stdio("paged", "faulty.py", "--tools", str(PAGED_EXTRA_TOOLS), "--page-size", "40"),
        stdio("notes", "notes.py", env={"NOTES_FILE": str(notes_file)}),
    ]
    async with MCPPool(servers) as shared:
        yield shared


# -- stdio: listing and calling ---------------------------------------------------------------


async def test_calculator_tools_are_listed_with_schemas(pool: MCPPool) -> None:
    tools = {t.name: t for t in await pool.tools("calc")}
    assert set(tools) == {"add", "multiply", "divide", "convert_units"}
    add = tools["add"]
    assert isinstance(add, ToolLike)
    assert add.server == "calc"
    assert add.description == "Add two numbers."
    assert add.json_schema["required"] == ["a", "b"]
    assert add.wrapped  # the SDK wraps primitive returns; flowroute unwraps them
    assert add.return_type.schema["type"] == "number"


async def test_structured_results_come_back_as_dicts(pool: MCPPool) -> None:
    assert await call(pool, "calc", "add", a=2, b=3) == 5.0
    assert await call(pool, "calc", "multiply", a=4, b=2.5) == 10.0
    boiling = await call(pool, "calc", "convert_units", value=100, from_unit="C", to_unit="F")
    assert boiling == pytest.approx(212.0)
    mile = await call(pool, "calc", "convert_units", value=1, from_unit="mi", to_unit="km")
    assert mile == pytest.approx(1.609344)
    assert await call(pool, "faulty", "shout", text="hi") == {"text": "HI", "length": 2}


async def test_text_and_image_results(pool: MCPPool) -> None:
    echo = await pool.tool("faulty", "echo")
    assert echo.return_type is ANY  # no outputSchema: text content
    assert await echo.call({"text": "plain words"}) == "plain words"
    [image] = await call(pool, "faulty", "pixel")
    assert image["type"] == "image"
    assert image["mimeType"] == "image/png"
    assert image["data"]


async def test_tool_that_raises_gives_tool_error_naming_tool_and_server(pool: MCPPool) -> None:
    with pytest.raises(ToolError, match="cannot divide by zero") as err:
        await call(pool, "calc", "divide", a=1, b=0)
    assert err.value.tool == "divide"
    assert "MCP server 'calc'" in str(err.value)
    with pytest.raises(ToolError, match=r"tool 'fail': on MCP server 'faulty': .*out of cheese"):
        await call(pool, "faulty", "fail", message="out of cheese")
    with pytest.raises(ToolError, match="different things"):
        await call(pool, "calc", "convert_units", value=1, from_unit="kg", to_unit="m")


async def test_invalid_arguments_fail_before_any_call(pool: MCPPool) -> None:
    shout = await pool.tool("faulty", "shout")
    before = await count(pool, "faulty", "call_count")
    with pytest.raises(ToolError, match="invalid arguments") as err:
        await shout.call({"text": 5, "extra": True})
    assert "text: 5 is not of type 'string'" in str(err.value)
    assert "MCP server 'faulty'" in str(err.value)
    with pytest.raises(ToolError, match="'text' is a required property"):
        await shout.call({})
    assert await count(pool, "faulty", "call_count") == before + 1  # only this count call


async def test_unknown_tool_error_lists_the_known_tools(pool: MCPPool) -> None:
    with pytest.raises(ToolError, match="MCP server 'calc' has no such tool") as err:
        await pool.tool("calc", "sqrt")
    assert "add, convert_units, divide, multiply" in str(err.value)
    with pytest.raises(MCPServerError, match="no such server in the pool; configured: calc"):
        await pool.tools("nowhere")


async def test_references_resolve_one_tool_or_all(pool: MCPPool) -> None:
    assert [t.name for t in await pool.resolve("calc.add")] == ["add"]
    assert len(await pool.resolve("calc.*")) == 4


async def test_pagination_returns_every_tool(pool: MCPPool) -> None:
    tools = await pool.tools("paged")
    names = {t.name for t in tools}
    assert {f"gen_{i:03d}" for i in range(PAGED_EXTRA_TOOLS)} <= names
    assert {"echo", "crash", "add_tool"} <= names
    assert len(tools) == len(names) > 150
    pages_before = await count(pool, "paged", "list_count")
    await pool.tools("paged", refresh=True)
    pages = -(-len(tools) // PAGE_SIZE)
    assert await count(pool, "paged", "list_count") == pages_before + pages
    assert await call(pool, "paged", "gen_149") == 149


async def test_call_timeout_gives_tool_error_and_server_keeps_working(pool: MCPPool) -> None:
    start = time.monotonic()
    with pytest.raises(ToolError, match="tool 'sleep': on MCP server 'faulty': no answer within"):
        await call(pool, "faulty", "sleep", seconds=30)
    assert time.monotonic() - start < 5
    assert await call(pool, "faulty", "echo", text="still here") == "still here"


async def test_stderr_is_captured_not_leaked(
    pool: MCPPool, capfd: pytest.CaptureFixture[str]
) -> None:
    marker = "stderr-marker-7f3a"
    assert await call(pool, "faulty", "say_to_stderr", text=marker) == "ok"
    with anyio.fail_after(5):
        while marker not in pool.stderr("faulty"):
            await anyio.sleep(0.05)
    assert marker not in capfd.readouterr().err


@pytest.mark.parametrize("server", ["faulty", "faulty_legacy"])
async def test_list_changed_refreshes_tools_and_notifies(pool: MCPPool, server: str) -> None:
    """2026-07-28 connections hear of it on a listen stream, 2025 ones by notification."""
    new_name = f"fresh_{server}"
    heard: list[tuple[str, list[str], list[str], list[str]]] = []
    changed = anyio.Event()

    def on_change(srv: str, added: Any, removed: Any, altered: Any) -> None:
        heard.append((srv, [t.name for t in added], [t.name for t in removed], list(altered)))
        if srv == server:
            changed.set()

    unsubscribe = pool.on_tools_changed(on_change)
    try:
        assert new_name not in {t.name for t in await pool.tools(server)}
        assert await call(pool, server, "add_tool", name=new_name) == f"added {new_name}"
        with anyio.fail_after(5):
            await changed.wait()
    finally:
        unsubscribe()
    assert (server, [new_name], [], []) in heard
    assert new_name in {t.name for t in await pool.tools(server)}
    assert await call(pool, server, new_name) == new_name


async def test_notes_server_stores_notes_in_its_file(pool: MCPPool, notes_file: Path) -> None:
    note = await call(pool, "notes", "add_note", title="groceries", body="eggs, flour")
    assert note["title"] == "groceries"
    assert note["body"] == "eggs, flour"
    await call(pool, "notes", "add_note", title="todo", body="write tests")
    assert await call(pool, "notes", "list_notes") == ["groceries", "todo"]
    assert (await call(pool, "notes", "get_note", title="todo"))["body"] == "write tests"
    assert "groceries" in notes_file.read_text()
    with pytest.raises(ToolError, match="already exists"):
        await call(pool, "notes", "add_note", title="todo", body="again")
    await call(pool, "notes", "delete_note", title="groceries")
    with pytest.raises(ToolError, match="no note titled 'groceries'"):
        await call(pool, "notes", "get_note", title="groceries")


# -- streamable HTTP ----------------------------------------------------------------------------


async def test_http_server_lists_calls_and_refreshes(http_servers: dict[str, str]) -> None:
    remote = MCPServer.http("remote", http_servers["faulty"], headers={"X-Flowroute-Test": "yes"})
    calc = MCPServer.http("calc_http", http_servers["calculator"])
    changed = anyio.Event()
    async with MCPPool([remote, calc]) as pool:
        pool.on_tools_changed(lambda server, added, removed, altered: changed.set())
        assert "echo" in {t.name for t in await pool.tools("remote")}
        assert await call(pool, "remote", "echo", text="over http") == "over http"
        assert await call(pool, "remote", "shout", text="ok") == {"text": "OK", "length": 2}
        assert await call(pool, "remote", "header", name="X-Flowroute-Test") == "yes"
        assert await call(pool, "calc_http", "add", a=1, b=1) == 2.0
        with pytest.raises(ToolError, match=r"MCP server 'calc_http'.*cannot divide by zero"):
            await call(pool, "calc_http", "divide", a=1, b=0)
        await call(pool, "remote", "add_tool", name="over_http")
        with anyio.fail_after(5):
            await changed.wait()
        assert "over_http" in {t.name for t in await pool.tools("remote")}


async def test_unreachable_http_server_names_the_server(port: int) -> None:
    gone = MCPServer.http("gone", f"http://127.0.0.1:{port}/mcp", start_timeout=5)
    async with MCPPool([gone]) as pool:
        with pytest.raises(MCPServerError, match="MCP server 'gone': failed to start") as err:
            await pool.start("gone")
    assert err.value.server == "gone"


# -- failures -----------------------------------------------------------------------------------


def python_script(name: str, code: str, **opts: Any) -> MCPServer:
    return MCPServer.stdio(name, sys.executable, ["-c", code], **opts)


@pytest.mark.parametrize(
    ("server", "reason", "stderr"),
    [
        (
            MCPServer.stdio("broken", "/nonexistent/flowroute-mcp-server"),
            "could not run '/nonexistent/flowroute-mcp-server': no such file or command",
            "",
        ),
        (
            python_script(
                "quitter", "import sys; sys.exit('quitter: refusing to start, no config')"
            ),
            "exited or closed the connection during startup",
            "quitter: refusing to start, no config",
        ),
        (
            python_script(  # reads requests, answers none, leaves when stdin closes
                "sleeper",
                "import sys; print('sleeper: thinking', file=sys.stderr, flush=True); "
                "sys.stdin.read()",
                start_timeout=1.0,
            ),
            "did not finish starting .* within start_timeout=1s",
            "sleeper: thinking",
        ),
    ],
    ids=["bad-command", "exits-at-start", "never-answers"],
)
async def test_server_that_fails_to_start_is_named_with_reason_and_stderr(
    server: MCPServer, reason: str, stderr: str
) -> None:
    async with MCPPool([server]) as pool:
        with pytest.raises(MCPServerError, match=reason) as err:
            await pool.start(server.name)
        assert err.value.server == server.name
        assert str(err.value).startswith(f"MCP server '{server.name}': ")
        assert stderr in err.value.stderr_tail
        assert stderr in str(err.value)
        with pytest.raises(MCPServerError, match=reason):  # remembered, not retried
            await pool.tools(server.name)


async def test_crash_mid_call_names_tool_and_server_and_server_stays_down() -> None:
    async with MCPPool([stdio("fragile", "faulty.py")]) as pool:
        crash = await pool.tool("fragile", "crash")
        echo = await pool.tool("fragile", "echo")
        pid = await count(pool, "fragile", "pid")
        with pytest.raises(ToolError, match="crashed or disconnected during the call") as err:
            await crash.call({})
        message = str(err.value)
        assert "tool 'crash': on MCP server 'fragile'" in message
        assert "faulty: crashing now" in message  # the stderr tail
        assert "restart_on_crash is off" in message
        with pytest.raises(ToolError, match="tool 'echo': on MCP server 'fragile': it crashed"):
            await echo.call({"text": "anyone?"})
        with pytest.raises(MCPServerError, match="MCP server 'fragile': it crashed earlier"):
            await pool.tools("fragile")
        assert process_gone(pid)
        assert "faulty: crashing now" in pool.stderr("fragile")


async def test_restart_on_crash_restarts_the_server_on_the_next_call() -> None:
    async with MCPPool([stdio("phoenix", "faulty.py", restart_on_crash=True)]) as pool:
        first_pid = await count(pool, "phoenix", "pid")
        with pytest.raises(ToolError, match=r"MCP server 'phoenix'.*the next call restarts it"):
            await call(pool, "phoenix", "crash")
        second_pid = await count(pool, "phoenix", "pid")
        assert second_pid != first_pid
        assert await call(pool, "phoenix", "echo", text="back") == "back"
        assert process_gone(first_pid)
    assert process_gone(second_pid)


async def test_clean_shutdown_from_concurrent_use_leaves_no_process(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    pids: list[int] = []
    async with MCPPool([stdio("busy", "faulty.py")]) as pool:

        async def user(i: int) -> None:  # the first call starts the server, from a child task
            assert await call(pool, "busy", "echo", text=str(i)) == str(i)
            pids.append(await count(pool, "busy", "pid"))

        async with anyio.create_task_group() as tg:
            for i in range(6):
                tg.start_soon(user, i)
        slow: MCPTool = await pool.tool("busy", "sleep")
        async with anyio.create_task_group() as tg:
            tg.start_soon(slow.call, {"seconds": 0.2})
    assert len(set(pids)) == 1
    assert process_gone(pids[0])
    problems = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert not problems, [r.getMessage() for r in problems]
    with pytest.raises(MCPServerError, match="the pool is closed"):
        await pool.start("busy")
