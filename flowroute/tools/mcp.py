"""MCP tool servers: their configs, a pool of live connections, and their tools as `ToolLike`s.

Describe each server with `MCPServer.stdio(...)` or `MCPServer.http(...)`, open them together in an
`MCPPool`, and take tools from it; an `MCPTool` validates its arguments, calls the server, and
maps the result to plain Python data.

Example:
    ```python
    import sys

    from flowroute.tools.mcp import MCPPool, MCPServer

    calc = MCPServer.stdio("calc", sys.executable, ["examples/servers/calculator.py"])
    async with MCPPool([calc]) as pool:
        add = await pool.tool("calc", "add")      # starts the server on first use
        await add.call({"a": 1, "b": 2})          # -> {"result": 3.0}
    ```

Lifetimes: every connection is owned by one background task in the pool's task group. That task
enters the SDK's transport and `mcp.Client` contexts (which hold anyio task groups and cancel
scopes) and is the only task that leaves them; other tasks just send requests through the client.
The task ends when the pool closes, or when the connection is lost (server crash, transport
failure), which also reaps the server process.

Needs the `mcp` package (the 2.x SDK).
"""

from __future__ import annotations

import inspect
import logging
import math
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from dataclasses import dataclass, field
from functools import cached_property
from types import TracebackType
from typing import Any, Self

import anyio
import anyio.abc
import jsonschema
from jsonschema.protocols import Validator

from flowroute.errors import FlowrouteError, MissingExtraError, OutputValidationError, ToolError
from flowroute.graph.types import ANY, TypeSpec

try:
    import httpx2
    import mcp.types as mcp_types
    from mcp import Client, MCPError, StdioServerParameters
    from mcp.client import IncomingMessage
    from mcp.client.stdio import stdio_client
    from mcp.client.streamable_http import streamable_http_client
    from mcp.client.subscriptions import ListenNotSupportedError
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise MissingExtraError("mcp", "mcp", "Using MCP tool servers") from exc

__all__ = ["MCPPool", "MCPServer", "MCPServerError", "MCPTool", "ToolsChangedCallback"]

logger = logging.getLogger(__name__)

_MAX_PAGES = 1000
"""tools/list pages followed before giving up on a server whose cursors never end."""

_STDERR_DRAIN_TIMEOUT = 1.0
"""After a stdio server stops, how long to wait for the rest of its stderr."""

_CRASH_SETTLE_TIMEOUT = 3.0
"""After a connection is lost mid-call, how long to wait for its teardown (and stderr)."""

_TAIL_LINES = 20


class MCPServerError(FlowrouteError):
    """An MCP server could not be started, listed or reached.

    `server` names it, `reason` says what went wrong, `stderr_tail` keeps the last lines the
    server wrote to stderr (stdio servers only).
    """

    def __init__(self, server: str, reason: str, stderr_tail: str = "") -> None:
        self.server = server
        self.reason = reason
        self.stderr_tail = stderr_tail
        super().__init__(f"MCP server '{server}': {reason}{_format_tail(stderr_tail)}")


def _format_tail(tail: str) -> str:
    if not tail.strip():
        return ""
    lines = "\n".join(f"    {line}" for line in tail.rstrip().splitlines())
    return f"\n  server stderr (last lines):\n{lines}"


@dataclass(frozen=True)
class MCPServer:
    """How to reach one MCP server: a command run over stdio, or a streamable HTTP URL.

    Build one with `MCPServer.stdio(...)` or `MCPServer.http(...)`.

    `start_timeout` bounds starting the server, the MCP handshake and the first tool listing;
    `call_timeout` bounds each tool call. With `restart_on_crash`, the first use after the
    server crashed (or its connection dropped) starts it again, once per crash. `mode` is the
    SDK's protocol negotiation: `"auto"` (probe `server/discover`, fall back to the `initialize`
    handshake) or `"legacy"` (the 2025 `initialize` handshake only).

    A stdio server runs with the SDK's safe default environment (`PATH`, `HOME`, ...) plus `env`.

    Example:
        ```python
        MCPServer.stdio("notes", "python", ["examples/servers/notes.py"], {"NOTES_FILE": "n.json"})
        MCPServer.http("search", "http://127.0.0.1:8000/mcp", headers={"Authorization": "Bearer t"})
        ```
    """

    name: str
    command: str | None = None
    args: tuple[str, ...] = ()
    env: Mapping[str, str] | None = field(default=None, hash=False)
    cwd: str | None = None
    url: str | None = None
    headers: Mapping[str, str] | None = field(default=None, hash=False)
    start_timeout: float = 30.0
    call_timeout: float = 60.0
    restart_on_crash: bool = False
    mode: str = "auto"

    def __post_init__(self) -> None:
        if not self.name:
            raise MCPServerError("?", "a server needs a non-empty name")
        if (self.command is None) == (self.url is None):
            raise MCPServerError(
                self.name, "give either a command (stdio) or a url (streamable HTTP), not both"
            )
        if self.start_timeout <= 0 or self.call_timeout <= 0:
            raise MCPServerError(self.name, "start_timeout and call_timeout must be positive")

    @classmethod
    def stdio(
        cls,
        name: str,
        command: str,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        *,
        start_timeout: float = 30.0,
        call_timeout: float = 60.0,
        restart_on_crash: bool = False,
        mode: str = "auto",
    ) -> MCPServer:
        """A server started as `command *args`, speaking MCP over its stdin/stdout."""
        return cls(
            name=name,
            command=command,
            args=tuple(args),
            env=dict(env) if env is not None else None,
            cwd=os.fspath(cwd) if cwd is not None else None,
            start_timeout=start_timeout,
            call_timeout=call_timeout,
            restart_on_crash=restart_on_crash,
            mode=mode,
        )

    @classmethod
    def http(
        cls,
        name: str,
        url: str,
        headers: Mapping[str, str] | None = None,
        *,
        start_timeout: float = 30.0,
        call_timeout: float = 60.0,
        restart_on_crash: bool = False,
        mode: str = "auto",
    ) -> MCPServer:
        """A server already listening at `url` (its streamable HTTP endpoint, usually `.../mcp`)."""
        return cls(
            name=name,
            url=url,
            headers=dict(headers) if headers is not None else None,
            start_timeout=start_timeout,
            call_timeout=call_timeout,
            restart_on_crash=restart_on_crash,
            mode=mode,
        )

    @property
    def transport(self) -> str:
        """`"stdio"` or `"http"`."""
        return "stdio" if self.command is not None else "http"


@dataclass(frozen=True, eq=False)
class MCPTool:
    """A tool of an MCP server, callable through the pool that listed it.

    `call` validates the arguments against the tool's input schema (no call is made when they
    are invalid), calls it within the server's `call_timeout`, and maps the result:

    - `isError` -> `ToolError` carrying the tool's text;
    - structured content -> that dict (checked against the output schema when one is declared;
      SDK servers wrap a plain return value as `{"result": value}`);
    - only text content -> the texts joined by newlines, as one string;
    - any other content (images, audio, resources) -> a list of content dicts (`{"type": ...}`);
    - no content at all -> `None`.

    Every failure is a `ToolError` whose message names the tool and the server.
    """

    server: str
    spec: mcp_types.Tool
    pool: MCPPool = field(repr=False)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def description(self) -> str:
        return self.spec.description or self.spec.title or ""

    @property
    def json_schema(self) -> dict[str, Any]:
        """JSON Schema of the arguments object (the tool's `inputSchema`)."""
        return dict(self.spec.input_schema)

    @property
    def output_schema(self) -> dict[str, Any] | None:
        """The tool's declared `outputSchema`, if any."""
        return self.spec.output_schema

    @cached_property
    def wrapped(self) -> bool:
        """Whether the server wraps a plain return value as `{"result": value}`.

        The SDK's server does this for tools returning a primitive or a list (output schema
        titled `<tool>Output` with the single required property `result`); such results are
        unwrapped, so `add` returns `5.0`, not `{"result": 5.0}`.
        """
        schema = self.spec.output_schema or {}
        return (
            set(schema.get("properties", {})) == {"result"}
            and schema.get("required") == ["result"]
            and str(schema.get("title", "")).endswith("Output")
        )

    @cached_property
    def return_type(self) -> TypeSpec:
        """The output schema as a `TypeSpec`; `ANY` when the tool declares none (or a bad one)."""
        if self.spec.output_schema is None:
            return ANY
        try:
            if self.wrapped:
                return TypeSpec.from_schema(self.spec.output_schema["properties"]["result"])
            return TypeSpec.from_schema(self.spec.output_schema)
        except jsonschema.SchemaError as exc:
            logger.warning(
                "MCP server '%s', tool '%s': ignoring invalid outputSchema: %s",
                self.server,
                self.name,
                exc.message,
            )
            return ANY

    @cached_property
    def _arg_validator(self) -> Validator:
        schema = self.spec.input_schema
        cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
        return cls(schema)

    def _where(self) -> str:
        return f"on MCP server '{self.server}'"

    def validate_args(self, args: Mapping[str, Any]) -> dict[str, Any]:
        """`args` as a dict, or `ToolError` listing every way it breaks the input schema."""
        try:
            found = sorted(self._arg_validator.iter_errors(dict(args)), key=lambda e: list(e.path))
        except jsonschema.SchemaError as exc:
            raise ToolError(
                self.name, f"{self._where()}: the tool's input schema is invalid: {exc.message}"
            ) from exc
        if found:
            errors = [f"{'.'.join(map(str, e.path)) or '<root>'}: {e.message}" for e in found]
            raise ToolError(
                self.name,
                f"{self._where()}: invalid arguments:\n" + "\n".join(f"  - {e}" for e in errors),
            )
        return dict(args)

    async def call(self, args: dict[str, Any]) -> Any:
        """Validate `args`, call the tool on its server, and return the mapped result."""
        arguments = self.validate_args(args)
        result = await self.pool._call_tool(self, arguments)
        return self._convert(result)

    def _convert(self, result: mcp_types.CallToolResult) -> Any:
        texts = [b.text for b in result.content if isinstance(b, mcp_types.TextContent)]
        if result.is_error:
            message = "\n".join(texts).strip() or "the tool reported an error without a message"
            raise ToolError(self.name, f"{self._where()}: {message}")
        if result.structured_content is not None:
            value = result.structured_content
            if self.wrapped and isinstance(value, dict) and set(value) == {"result"}:
                value = value["result"]
            if self.spec.output_schema is not None:
                try:
                    return self.return_type.validate(value, "structured result")
                except OutputValidationError as exc:
                    raise ToolError(self.name, f"{self._where()}: {exc}") from exc
            return value
        if not result.content:
            return None
        if len(texts) == len(result.content):
            return "\n".join(texts)
        return [b.model_dump(by_alias=True, mode="json", exclude_none=True) for b in result.content]


ToolsChangedCallback = Callable[
    [str, tuple[MCPTool, ...], tuple[MCPTool, ...], tuple[MCPTool, ...]], Awaitable[None] | None
]
"""`callback(server, added, removed, changed)`: a server's tool list changed.

`removed` holds the tools as they were; `added` and `changed` as they are now. Sync or async.
"""


class _StderrBuffer:
    """The last `limit` bytes a stdio server wrote to stderr (across restarts)."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._data = bytearray()

    def feed(self, chunk: bytes) -> None:
        self._data += chunk
        if len(self._data) > self._limit:
            del self._data[: len(self._data) - self._limit]

    def text(self) -> str:
        return self._data.decode("utf-8", errors="replace")

    def tail(self, lines: int = _TAIL_LINES) -> str:
        return "\n".join(self.text().rstrip().splitlines()[-lines:])

    async def drain(self, fd: int, eof: anyio.Event) -> None:
        """Copy the pipe `fd` into the buffer until end of file."""
        try:
            while True:
                await anyio.wait_readable(fd)
                try:
                    chunk = os.read(fd, 65536)
                except BlockingIOError:
                    continue
                if not chunk:
                    return
                self.feed(chunk)
        finally:
            eof.set()


class _WatchedReadStream:
    """A transport read stream that reports when it ends (the server went away)."""

    def __init__(self, inner: Any, on_end: Callable[[str], None]) -> None:
        self._inner = inner
        self._on_end = on_end

    @property
    def last_context(self) -> Any:
        return getattr(self._inner, "last_context", None)

    async def receive(self) -> Any:
        try:
            return await self._inner.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._on_end("the server closed the connection")
            raise

    async def aclose(self) -> None:
        await self._inner.aclose()

    def __aiter__(self) -> _WatchedReadStream:
        return self

    async def __anext__(self) -> Any:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


@asynccontextmanager
async def _stdio_transport(config: MCPServer, stderr: _StderrBuffer) -> AsyncIterator[Any]:
    """The SDK's stdio transport, with the server's stderr piped into `stderr`."""
    assert config.command is not None
    params = StdioServerParameters(
        command=config.command,
        args=list(config.args),
        env=dict(config.env) if config.env is not None else None,
        cwd=config.cwd,
    )
    if sys.platform == "win32":  # pragma: no cover - no pipe polling there; stderr is not captured
        async with stdio_client(params) as streams:
            yield streams
        return
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    errlog = os.fdopen(write_fd, "w")
    eof = anyio.Event()
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(stderr.drain, read_fd, eof)
            try:
                async with stdio_client(params, errlog=errlog) as streams:
                    errlog.close()  # the server process holds its own copy
                    yield streams
            finally:
                errlog.close()
                with anyio.move_on_after(_STDERR_DRAIN_TIMEOUT, shield=True):
                    await eof.wait()
                tg.cancel_scope.cancel()
    finally:
        os.close(read_fd)


@asynccontextmanager
async def _http_transport(config: MCPServer) -> AsyncIterator[Any]:
    assert config.url is not None
    timeout = httpx2.Timeout(30.0, read=300.0)  # reads wait on long-lived SSE streams
    async with (
        httpx2.AsyncClient(headers=dict(config.headers or {}), timeout=timeout) as http,
        streamable_http_client(config.url, http_client=http) as streams,
    ):
        yield streams


@asynccontextmanager
async def _watched_transport(
    config: MCPServer, stderr: _StderrBuffer, on_end: Callable[[str], None]
) -> AsyncIterator[Any]:
    opened = _stdio_transport(config, stderr) if config.command else _http_transport(config)
    async with opened as (read_stream, write_stream):
        yield _WatchedReadStream(read_stream, on_end), write_stream


def _leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups, or `[exc]`."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _describe(exc: BaseException) -> str:
    """A one-line account of `exc`, looking inside exception groups."""
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(dict.fromkeys(_describe(e) for e in exc.exceptions))
    if isinstance(exc, MCPError):
        return f"{exc.message} (MCP error {exc.code})"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _client_info() -> mcp_types.Implementation:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return mcp_types.Implementation(name="flowroute", version=version("flowroute"))
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return mcp_types.Implementation(name="flowroute", version="0")


class _Session:
    """One live connection to a server (a restart makes a new one)."""

    def __init__(self) -> None:
        self.client: Client | None = None
        self.started = False
        self.stopping = False
        self.lost_reason: str | None = None
        self.wake = anyio.Event()
        self.done = anyio.Event()
        self.start_scope = anyio.CancelScope()
        self.refresh_send, self.refresh_receive = anyio.create_memory_object_stream[None](1)

    @property
    def alive(self) -> bool:
        return (
            self.started
            and self.client is not None
            and self.lost_reason is None
            and not self.stopping
        )

    def mark_lost(self, reason: str) -> None:
        if not self.stopping and self.lost_reason is None:
            self.lost_reason = reason
        self.wake.set()

    def stop(self) -> None:
        self.stopping = True
        self.wake.set()
        if not self.started:
            self.start_scope.cancel()

    def request_refresh(self) -> None:
        # WouldBlock: a refresh is already pending; closed: the session is over
        with suppress(anyio.WouldBlock, anyio.ClosedResourceError, anyio.BrokenResourceError):
            self.refresh_send.send_nowait(None)

    async def on_message(self, message: IncomingMessage) -> None:
        if isinstance(message, mcp_types.ToolListChangedNotification):
            self.request_refresh()
        elif isinstance(message, Exception):
            logger.debug("MCP transport reported: %s", _describe(message))


@dataclass(eq=False)
class _ServerState:
    config: MCPServer
    stderr: _StderrBuffer
    lock: anyio.Lock = field(default_factory=anyio.Lock)
    list_lock: anyio.Lock = field(default_factory=anyio.Lock)
    session: _Session | None = None
    failure: MCPServerError | None = None
    tools: dict[str, MCPTool] = field(default_factory=dict)
    listed: bool = False


class MCPPool:
    """Live connections to MCP servers, started on first use and closed with the pool.

    Use it as an async context manager. Servers start lazily (or eagerly with `start`), each
    within its `start_timeout`; a server that fails to start raises `MCPServerError` (naming
    it, with the reason and the tail of its stderr), and keeps raising it for the rest of the
    pool's life. A stdio server's stderr is kept in a bounded buffer (`stderr(name)`) instead of
    reaching the terminal. Tool lists follow pagination and are refreshed when the server sends
    `notifications/tools/list_changed` (on 2026-07-28 connections, through a
    `subscriptions/listen` stream the pool keeps open); `on_tools_changed` callbacks hear of
    each change. Leaving the `async with` block stops every server (stdio processes are
    terminated and reaped).

    Example:
        ```python
        async with MCPPool([calc, notes]) as pool:
            await pool.start("notes")                  # optional: fail early
            tools = await pool.tools("calc")           # every page of tools/list
            result = await (await pool.tool("calc", "divide")).call({"a": 1, "b": 4})
        ```
    """

    def __init__(self, servers: Iterable[MCPServer], *, stderr_limit: int = 64 * 1024) -> None:
        configs = list(servers)
        names = [s.name for s in configs]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise MCPServerError(dupes[0], "several servers in the pool have this name")
        self._configs = {s.name: s for s in configs}
        self._stderr_limit = stderr_limit
        self._states: dict[str, _ServerState] = {}
        self._callbacks: list[ToolsChangedCallback] = []
        self._tg: anyio.abc.TaskGroup | None = None
        self._starting: set[_Session] = set()
        self._closed = False

    # -- lifetime ------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._tg is not None or self._closed:
            raise FlowrouteError("an MCPPool can be entered only once")
        self._states = {
            name: _ServerState(config, _StderrBuffer(self._stderr_limit))
            for name, config in self._configs.items()
        }
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        self._closed = True
        for state in self._states.values():
            if state.session is not None:
                state.session.stop()
        for session in self._starting:
            session.stop()
        assert self._tg is not None
        try:
            return await self._tg.__aexit__(exc_type, exc, tb)
        except BaseExceptionGroup as group:
            if exc is not None and _leaves(group) == [exc]:
                return None  # the block's own error: let it propagate as it was raised
            raise
        finally:
            self._tg = None

    # -- public API ----------------------------------------------------------------------------

    @property
    def servers(self) -> tuple[MCPServer, ...]:
        """The configured servers, in the order given."""
        return tuple(self._configs.values())

    async def start(self, server: str) -> None:
        """Start `server` now (if it is not running), rather than on first use."""
        await self._ensure(self._state(server))

    async def tools(self, server: str, *, refresh: bool = False) -> list[MCPTool]:
        """Every tool of `server` (all pages of tools/list), starting it if needed.

        The list is kept up to date by `notifications/tools/list_changed`; `refresh=True`
        lists the tools again now.
        """
        state = self._state(server)
        session = await self._ensure(state)
        if refresh:
            await self._relist(state, session)
        return list(state.tools.values())

    async def tool(self, server: str, name: str) -> MCPTool:
        """The tool `name` of `server`; `ToolError` (listing the known tools) if it has none."""
        state = self._state(server)
        session = await self._ensure(state)
        if name not in state.tools:
            await self._relist(state, session)  # it may have appeared without a notification
        found = state.tools.get(name)
        if found is None:
            known = sorted(state.tools)
            shown = ", ".join(known[:50]) + (
                f", ... ({len(known)} in all)" if len(known) > 50 else ""
            )
            raise ToolError(
                name, f"MCP server '{server}' has no such tool; its tools: {shown or '(none)'}"
            )
        return found

    async def resolve(self, ref: str, *, refresh: bool = False) -> list[MCPTool]:
        """Tools for a reference `"server.tool"` (one tool) or `"server.*"` (all of them).

        `refresh=True` lists the server's tools again first (used by agents between steps,
        so a tool added by a call is usable at the next step whatever the notification timing).
        """
        server, sep, name = ref.partition(".")
        if not sep or not name:
            raise ToolError(ref, "an MCP tool reference reads 'server.tool' or 'server.*'")
        if name == "*":
            return await self.tools(server, refresh=refresh)
        return [await self.tool(server, name)]

    def on_tools_changed(self, callback: ToolsChangedCallback) -> Callable[[], None]:
        """Call `callback(server, added, removed, changed)` whenever a server's tools change.

        Fires after the pool's copy of the list is updated (so `tools()` already shows the
        change), for changes announced by the server, found by `tools(refresh=True)`, or seen
        after a restart; not for a server's first listing. Returns a function that unsubscribes.
        A callback that raises is logged and does not stop the others.
        """
        self._callbacks.append(callback)

        def unsubscribe() -> None:
            if callback in self._callbacks:
                self._callbacks.remove(callback)

        return unsubscribe

    def stderr(self, server: str) -> str:
        """What `server` wrote to stderr (the last `stderr_limit` bytes; stdio servers only)."""
        return self._state(server).stderr.text()

    # -- connections ---------------------------------------------------------------------------

    def _state(self, server: str) -> _ServerState:
        if self._tg is None and not self._closed:
            raise MCPServerError(server, "the pool is not open; use `async with MCPPool(...)`")
        state = self._states.get(server)
        if state is None:
            known = ", ".join(self._configs) or "(none)"
            raise MCPServerError(server, f"no such server in the pool; configured: {known}")
        return state

    async def _ensure(self, state: _ServerState) -> _Session:
        """The live session of a server: started now, or restarted after a crash if allowed."""
        config = state.config
        session = state.session
        if session is not None and session.alive:
            return session
        async with state.lock:
            if self._closed or self._tg is None:
                raise MCPServerError(config.name, "the pool is closed")
            session = state.session
            if session is not None and session.alive:
                return session
            if state.failure is not None:
                raise state.failure
            if session is not None:
                if not config.restart_on_crash:
                    raise MCPServerError(
                        config.name,
                        f"it crashed earlier ({session.lost_reason}); "
                        "restart_on_crash is off, so it stays down",
                        state.stderr.tail(),
                    )
                await session.done.wait()
                logger.info("restarting MCP server '%s' after a crash", config.name)
            fresh = _Session()
            self._starting.add(fresh)
            try:
                await self._tg.start(self._serve, state, fresh)
            except MCPServerError as exc:
                state.failure = exc
                raise
            finally:
                self._starting.discard(fresh)
            state.session = fresh
            return fresh

    async def _serve(
        self,
        state: _ServerState,
        session: _Session,
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Own one connection: open it, keep its tools fresh, close it; one task start to end."""
        config = state.config
        session.start_scope.deadline = anyio.current_time() + config.start_timeout
        try:
            with session.start_scope:
                async with AsyncExitStack() as stack:
                    transport = _watched_transport(config, state.stderr, session.mark_lost)
                    client = Client(
                        transport,
                        mode=config.mode,
                        cache=None,
                        message_handler=session.on_message,
                        client_info=_client_info(),
                    )
                    await stack.enter_async_context(client)
                    session.client = client
                    await self._relist(state, session)
                    session.start_scope.deadline = math.inf
                    tg = await stack.enter_async_context(anyio.create_task_group())
                    tg.start_soon(self._refresh_loop, state, session)
                    tg.start_soon(self._listen, state, session)
                    session.started = True
                    task_status.started()
                    await session.wake.wait()
                    tg.cancel_scope.cancel()
        except Exception as exc:
            if not session.started:
                raise self._start_error(state, exc) from exc
            session.mark_lost(_describe(exc))
        finally:
            session.client = None
            session.refresh_send.close()
            session.refresh_receive.close()
            session.done.set()
        if not session.started:
            if session.stopping:
                raise MCPServerError(config.name, "the pool closed while the server was starting")
            raise MCPServerError(
                config.name,
                f"did not finish starting (MCP handshake and tool listing) within "
                f"start_timeout={config.start_timeout:g}s",
                state.stderr.tail(),
            )
        if session.lost_reason is not None:
            logger.warning("MCP server '%s' went away: %s", config.name, session.lost_reason)

    def _start_error(self, state: _ServerState, exc: Exception) -> MCPServerError:
        config = state.config
        leaves = _leaves(exc)
        if len(leaves) == 1 and isinstance(leaves[0], MCPServerError):
            return leaves[0]
        if any(isinstance(e, FileNotFoundError) for e in leaves) and config.command is not None:
            reason = f"could not run {config.command!r}: no such file or command"
        elif any(isinstance(e, MCPError) and e.code == mcp_types.CONNECTION_CLOSED for e in leaves):
            reason = "the server exited or closed the connection during startup"
        else:
            reason = f"failed to start: {_describe(exc)}"
        if config.url is not None:
            reason += f" (url {config.url})"
        return MCPServerError(config.name, reason, state.stderr.tail())

    async def _refresh_loop(self, state: _ServerState, session: _Session) -> None:
        async for _ in session.refresh_receive:
            try:
                await self._relist(state, session)
            except Exception as exc:  # a bad listing must not take the connection down
                logger.warning(
                    "MCP server '%s': refreshing the tool list failed: %s",
                    state.config.name,
                    _describe(exc),
                )

    async def _listen(self, state: _ServerState, session: _Session) -> None:
        """On 2026-07-28 connections, change events come only on a subscriptions/listen stream.

        The SDK also hands each event to the message handler, which requests the refresh.
        """
        client = session.client
        assert client is not None
        try:
            async with client.listen(tools_list_changed=True) as subscription:
                async for _event in subscription:
                    session.request_refresh()
        except ListenNotSupportedError:
            pass  # a 2025-era connection: notifications arrive on their own
        except Exception as exc:
            logger.debug("MCP server '%s': listen stream ended: %s", state.config.name, exc)

    async def _relist(self, state: _ServerState, session: _Session) -> None:
        """List every page of tools and record what changed since the last listing."""
        client = session.client
        name = state.config.name
        if client is None:
            raise MCPServerError(name, "the connection is closed", state.stderr.tail())
        async with state.list_lock:
            specs: list[mcp_types.Tool] = []
            cursor: str | None = None
            seen: set[str] = set()
            try:
                for _ in range(_MAX_PAGES):
                    page = await client.list_tools(cursor=cursor)
                    specs.extend(page.tools)
                    cursor = page.next_cursor
                    if cursor is None:
                        break
                    if cursor in seen:
                        raise MCPServerError(name, f"tools/list repeated the cursor {cursor!r}")
                    seen.add(cursor)
                else:
                    raise MCPServerError(name, f"tools/list did not end after {_MAX_PAGES} pages")
            except MCPError as exc:
                raise MCPServerError(
                    name, f"tools/list failed: {_describe(exc)}", state.stderr.tail()
                ) from exc
            old = state.tools
            new: dict[str, MCPTool] = {}
            for spec in specs:
                kept = old.get(spec.name)
                same = kept is not None and _same_spec(kept.spec, spec)
                new[spec.name] = kept if kept is not None and same else MCPTool(name, spec, self)
            added = tuple(t for n, t in new.items() if n not in old)
            removed = tuple(t for n, t in old.items() if n not in new)
            changed = tuple(t for n, t in new.items() if n in old and t is not old[n])
            state.tools = new
            first = not state.listed
            state.listed = True
        if not first and (added or removed or changed):
            await self._tools_changed(name, added, removed, changed)

    async def _tools_changed(
        self,
        server: str,
        added: tuple[MCPTool, ...],
        removed: tuple[MCPTool, ...],
        changed: tuple[MCPTool, ...],
    ) -> None:
        for callback in list(self._callbacks):
            try:
                outcome = callback(server, added, removed, changed)
                if inspect.isawaitable(outcome):
                    await outcome
            except Exception:
                logger.exception("on_tools_changed callback for MCP server '%s' raised", server)

    # -- calls ---------------------------------------------------------------------------------

    async def _call_tool(
        self, tool: MCPTool, arguments: dict[str, Any]
    ) -> mcp_types.CallToolResult:
        where = f"on MCP server '{tool.server}'"
        try:
            state = self._state(tool.server)
            session = await self._ensure(state)
        except MCPServerError as exc:
            raise ToolError(
                tool.name, f"{where}: {exc.reason}{_format_tail(exc.stderr_tail)}"
            ) from exc
        client = session.client
        config = state.config
        if client is None:  # lost between the check and here
            raise ToolError(tool.name, f"{where}: the connection closed before the call")
        try:
            with anyio.fail_after(config.call_timeout):
                return await client.call_tool(tool.name, arguments)
        except TimeoutError as exc:
            raise ToolError(
                tool.name, f"{where}: no answer within call_timeout={config.call_timeout:g}s"
            ) from exc
        except MCPError as exc:
            if exc.code != mcp_types.CONNECTION_CLOSED:
                raise ToolError(tool.name, f"{where}: {_describe(exc)}") from exc
            session.mark_lost(exc.message)
            with anyio.move_on_after(_CRASH_SETTLE_TIMEOUT):
                await session.done.wait()  # the teardown also collects the server's last stderr
            if session.stopping:
                raise ToolError(tool.name, f"{where}: the pool closed during the call") from exc
            after = (
                "the next call restarts it"
                if config.restart_on_crash
                else "restart_on_crash is off, so later calls fail too"
            )
            raise ToolError(
                tool.name,
                f"{where}: the server crashed or disconnected during the call "
                f"({session.lost_reason or exc.message}); {after}"
                f"{_format_tail(state.stderr.tail())}",
            ) from exc
        except Exception as exc:  # the SDK's own result checks (output schema, result shape)
            raise ToolError(tool.name, f"{where}: bad result: {_describe(exc)}") from exc


def _same_spec(a: mcp_types.Tool, b: mcp_types.Tool) -> bool:
    def dump(tool: mcp_types.Tool) -> dict[str, Any]:
        return tool.model_dump(mode="json", exclude_none=True, by_alias=True)

    return dump(a) == dump(b)
