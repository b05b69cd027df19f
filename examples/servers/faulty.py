"""A misbehaving MCP server for tests: it crashes, hangs, grows tools, and pages its tool list.

Tools:
    echo(text)           returns `text` as plain text content (no structured output)
    shout(text)          returns {"text": TEXT, "length": n} as structured content
    fail(message)        fails with `message` (an `isError` result)
    crash()              writes a line to stderr and kills the process (`os._exit(1)`)
    sleep(seconds)       sleeps, then returns "slept"
    add_tool(name)       registers a new tool `name` (returns "added <name>") and sends
                         `notifications/tools/list_changed` (2025 era) / a tools event on
                         `subscriptions/listen` streams (2026-07-28 era)
    remove_tool(name)    the reverse of add_tool
    pixel()              returns a one-pixel PNG image content block
    say_to_stderr(text)  writes `text` to the server's stderr and returns "ok"
    pid()                the server's process id
    call_count()         how many tools/call requests the server has received (this one included)
    list_count()         how many tools/list requests (pages) the server has answered
    header(name)         the value of HTTP request header `name` ("" when absent or on stdio)

Flags:
    --tools N            also register N generated tools gen_000 .. (each returns its index)
    --page-size N        answer tools/list N tools per page (with nextCursor), where the
                         SDK's MCPServer would otherwise send every tool in one page
    --http --port N      serve streamable HTTP on 127.0.0.1:N instead of stdio
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
from collections.abc import Callable
from typing import Any

import anyio
from mcp.server.context import CallNext, HandlerResult, ServerMiddleware, ServerRequestContext
from mcp.server.mcpserver import Context, Image, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

mcp = MCPServer("faulty", instructions="Test server: crashes, hangs and changes on request.")

# a 1x1 transparent PNG
_PIXEL = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)


@mcp.tool(structured_output=False)
def echo(text: str) -> str:
    """Return `text` unchanged, as text content."""
    return text


@mcp.tool()
def shout(text: str) -> dict[str, Any]:
    """Upper-case `text`; structured result with its length."""
    return {"text": text.upper(), "length": len(text)}


@mcp.tool()
def fail(message: str) -> str:
    """Fail with `message`."""
    raise ToolError(message)


@mcp.tool()
def crash() -> str:
    """Kill the server process mid-call."""
    print("faulty: crashing now", file=sys.stderr, flush=True)
    os._exit(1)


@mcp.tool()
async def sleep(seconds: float) -> str:
    """Sleep `seconds`, then answer."""
    await anyio.sleep(seconds)
    return "slept"


@mcp.tool(structured_output=False)
def pixel() -> Image:
    """A one-pixel PNG."""
    return Image(data=_PIXEL, format="png")


@mcp.tool(structured_output=False)
def say_to_stderr(text: str) -> str:
    """Write `text` to the server's stderr."""
    print(text, file=sys.stderr, flush=True)
    return "ok"


@mcp.tool()
def pid() -> int:
    """The server's process id."""
    return os.getpid()


_requests = {"tools/call": 0, "tools/list": 0}


async def _count_requests(
    ctx: ServerRequestContext[Any, Any], call_next: CallNext
) -> HandlerResult:
    if ctx.method in _requests:
        _requests[ctx.method] += 1
    return await call_next(ctx)


mcp.middleware.append(_count_requests)


@mcp.tool()
def call_count() -> int:
    """How many tools/call requests this server received, this one included."""
    return _requests["tools/call"]


@mcp.tool()
def list_count() -> int:
    """How many tools/list requests (pages) this server answered."""
    return _requests["tools/list"]


@mcp.tool(structured_output=False)
def header(name: str, ctx: Context) -> str:
    """The HTTP request header `name` ("" when absent, and always on stdio)."""
    return (ctx.headers or {}).get(name.lower(), "")


async def _announce_tools_changed(ctx: Context) -> None:
    # 2026-07-28 clients hear of changes on their subscriptions/listen stream (the bus);
    # 2025-era clients through the notification on the connection (dropped on modern ones).
    await ctx.notify_tools_changed()
    await ctx.session.send_tool_list_changed()


@mcp.tool(structured_output=False)
async def add_tool(name: str, ctx: Context) -> str:
    """Register a new tool `name` (it returns its own name) and announce the change."""

    def new_tool() -> str:
        return name

    mcp.add_tool(new_tool, name=name, description=f"Added at runtime: {name}.")
    await _announce_tools_changed(ctx)
    return f"added {name}"


@mcp.tool(structured_output=False)
async def remove_tool(name: str, ctx: Context) -> str:
    """Remove tool `name` and announce the change."""
    mcp.remove_tool(name)
    await _announce_tools_changed(ctx)
    return f"removed {name}"


def _generated(i: int) -> Callable[[], int]:
    def generated() -> int:
        return i

    return generated


def _register_generated(count: int) -> None:
    for i in range(count):
        mcp.add_tool(_generated(i), name=f"gen_{i:03d}", description=f"Generated tool number {i}.")


def _paginate(page_size: int) -> ServerMiddleware[Any]:
    """Middleware cutting the tools/list answer into pages; the cursor is the start index."""

    async def middleware(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        result = await call_next(ctx)
        if ctx.method != "tools/list" or not isinstance(result, dict):
            return result
        cursor = (ctx.params or {}).get("cursor")
        start = int(cursor) if cursor else 0
        tools = result["tools"]
        page = dict(result, tools=tools[start : start + page_size])
        if start + page_size < len(tools):
            page["nextCursor"] = str(start + page_size)
        return page

    return middleware


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A misbehaving MCP server for tests.")
    parser.add_argument("--tools", type=int, default=0)
    parser.add_argument("--page-size", type=int, default=0)
    parser.add_argument("--http", action="store_true")
    parser.add_argument("--port", type=int, default=8766)
    args = parser.parse_args(argv)
    _register_generated(args.tools)
    if args.page_size:
        mcp.middleware.append(_paginate(args.page_size))
    if args.http:
        mcp.run("streamable-http", host="127.0.0.1", port=args.port)
    else:
        mcp.run()


if __name__ == "__main__":
    main()
