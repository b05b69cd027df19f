"""The scheduler: every node whose inputs are ready starts at once, under anyio.

Each node is a task that waits for its producers, then runs, is skipped (a producer failed or
was skipped, or its condition does not hold) or is cancelled. Results are recorded as they
finish, so a failure or Ctrl-C never loses what was already computed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, TypeVar

import anyio

from flowroute.engine.context import NodeContext, RunState, execute_with_policy
from flowroute.engine.result import NodeRecord, RunResult
from flowroute.errors import FlowrouteError, OutputValidationError
from flowroute.graph.nodes import INPUTS, Binding, Const, Node, Ref
from flowroute.graph.workflow import Workflow

__all__ = ["InputError", "RunInterrupted", "RunOptions", "run_sync", "run_workflow"]

Out = TypeVar("Out")


class InputError(FlowrouteError):
    """The inputs given to a run are missing or invalid; the message names each input."""


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped a run; `result` holds every node that had finished."""

    def __init__(self, result: RunResult[Any]) -> None:
        self.result = result
        super().__init__("run interrupted")


@dataclass(frozen=True)
class RunOptions:
    """How to run: concurrency, failure policy and a progress callback."""

    max_concurrency: int = 16
    """Nodes running at once across the whole run (per-model limits apply too)."""
    on_failure: Literal["continue", "stop"] = "continue"
    """`continue`: skip a failed node's dependents, finish the rest. `stop`: cancel the rest."""
    on_update: Callable[[NodeRecord], None] | None = None
    """Called whenever a node's status changes (used by the CLI's live view)."""
    mcp_pool: Any = None
    """An open `MCPPool` to share MCP servers across runs; by default each run starts the
    workflow's servers on first use and stops them when it ends."""
    budget: Any = None
    """A `Budget` for the whole run: once spent, cascades stop escalating."""
    tool_index: Any = None
    """The `ToolIndex` that agents with `retrieve` search; by default a process-wide index
    kept in the cache directory, so tools are embedded once across runs and processes."""


class _Run:
    def __init__(self, wf: Workflow[Any], inputs: dict[str, Any], options: RunOptions) -> None:
        self.wf = wf
        self.options = options
        self.inputs = inputs
        self.result: RunResult[Any] = RunResult(
            workflow=wf.name,
            inputs=inputs,
            records={n: NodeRecord(name=n, kind=node.kind) for n, node in wf.nodes.items()},
        )
        self.state = RunState(
            declared_models=wf.models, index=options.tool_index, budget=options.budget
        )
        self.done = {n: anyio.Event() for n in wf.nodes}
        self.limiter = anyio.CapacityLimiter(max(1, options.max_concurrency))

    def _update(self, record: NodeRecord) -> None:
        if self.options.on_update is not None:
            self.options.on_update(record)

    def _value(self, ref: Ref) -> Any:
        if ref.node == INPUTS:
            return (
                Ref(INPUTS, ref.path[1:]).get(self.inputs[ref.path[0]]) if ref.path else self.inputs
            )
        return ref.get(self.result.records[ref.node].output)

    def _resolve(self, b: Binding) -> Any:
        return b.value if isinstance(b, Const) else self._value(b)

    def _skip_reason(self, node: Node) -> str | None:
        bad: list[str] = []
        ok_inputs = 0
        for _, ref in node.refs():
            if ref.node == INPUTS:
                ok_inputs += 1
                continue
            rec = self.result.records[ref.node]
            if rec.status == "succeeded":
                ok_inputs += 1
            else:
                bad.append(f"'{ref.node}' {rec.status}")
        for cond in node.when:
            cond_rec = self.result.records.get(cond.ref.node)
            if cond_rec is not None and cond_rec.status != "succeeded":
                return f"condition input {bad[0] if bad else cond.ref.node} did not succeed"
            if not cond.holds(self._value(cond.ref)):
                return f"condition {cond} not met (got {self._value(cond.ref)!r})"
        if bad and (not node.accepts_skipped or ok_inputs == 0):
            return "upstream " + ", ".join(dict.fromkeys(bad))
        return None

    async def node_task(self, name: str) -> None:
        node = self.wf.nodes[name]
        record = self.result.records[name]
        try:
            for dep in self.wf.graph.predecessors(name):
                await self.done[dep].wait()
            reason = self._skip_reason(node)
            if reason is not None:
                record.status, record.skip_reason = "skipped", reason
                self._update(record)
                return
            args: dict[str, Any] = {}
            for arg, binding in node.inputs.items():
                if (
                    isinstance(binding, Ref)
                    and binding.node != INPUTS
                    and self.result.records[binding.node].status != "succeeded"
                ):
                    continue  # only FirstOf gets here
                value = self._resolve(binding)
                expected = node.input_types.get(arg)
                if expected is not None:
                    value = expected.validate(value, f"input '{arg}' of node '{name}'")
                args[arg] = value
            async with self.limiter:
                record.status, record.started_at = "running", datetime.now()
                self._update(record)
                ctx = NodeContext(node=node, record=record, run=self.state)
                record.output = await execute_with_policy(node, args, ctx)
            record.status = "succeeded"
        except anyio.get_cancelled_exc_class():
            record.status = "cancelled"
            raise
        except Exception as exc:
            record.status = "failed"
            record.error = str(exc)
            record.error_type = type(exc).__name__
            if self.options.on_failure == "stop":
                self.scope.cancel()
        finally:
            if record.started_at is not None:
                record.ended_at = datetime.now()
            self.done[name].set()
            if record.status != "pending":
                self._update(record)

    async def execute(self) -> RunResult[Any]:
        result = self.result
        try:
            async with AsyncExitStack() as stack:
                pool = self.options.mcp_pool
                if pool is None and self.wf.mcp_servers:
                    from flowroute.tools.mcp import MCPPool

                    pool = await stack.enter_async_context(
                        MCPPool(list(self.wf.mcp_servers.values()))
                    )
                self.state.mcp_pool = pool
                try:
                    async with anyio.create_task_group() as tg:
                        self.scope = tg.cancel_scope
                        for name in self.wf.nodes:
                            tg.start_soon(self.node_task, name)
                finally:
                    self.state.close()
                    if pool is not None:
                        result.server_logs = _server_logs(pool, self.wf.mcp_servers)
        finally:
            result.ended_at = datetime.now()
            for rec in result.records.values():
                if rec.status in ("pending", "running"):
                    rec.status = "cancelled"
        self._finish()
        return result

    def _finish(self) -> None:
        result = self.result
        cancelled = [r.name for r in result.records.values() if r.status == "cancelled"]
        try:
            out = self.wf.output
            if isinstance(out, Ref | Const):
                value = self._output_value(out)
            else:
                value = {k: self._output_value(b) for k, b in out.items()}
            result._output = self.wf.output_type.validate(
                value, f"output of workflow '{self.wf.name}'"
            )
            result.status = "succeeded"
        except _Unavailable as exc:
            result.status = "cancelled" if cancelled and not result.failed else "failed"
            failed = [f"'{r.name}': {r.error}" for r in result.failed]
            result.error = f"output needs {exc}" + (
                f"; failed: {'; '.join(failed)}" if failed else ""
            )
        except OutputValidationError as exc:
            result.status, result.error = "failed", str(exc)

    def _output_value(self, b: Binding) -> Any:
        if isinstance(b, Ref) and b.node != INPUTS:
            rec = self.result.records[b.node]
            if rec.status != "succeeded":
                raise _Unavailable(f"node '{b.node}', which {rec.status}")
        return self._resolve(b)


def _server_logs(pool: Any, servers: Mapping[str, Any]) -> dict[str, str]:
    logs: dict[str, str] = {}
    for name in servers:
        try:
            text = pool.stderr(name)
        except FlowrouteError:
            continue  # a shared pool without this server
        if text:
            logs[name] = text
    return logs


class _Unavailable(Exception):
    pass


def _prepare_inputs(wf: Workflow[Any], inputs: dict[str, Any]) -> dict[str, Any]:
    problems: list[str] = []
    out: dict[str, Any] = {}
    for name in inputs:
        if name not in wf.inputs:
            problems.append(f"unknown input '{name}' (inputs: {', '.join(wf.inputs) or 'none'})")
    for name, spec in wf.inputs.items():
        if name not in inputs:
            if name in wf.input_defaults:
                out[name] = wf.input_defaults[name]
                continue
            problems.append(f"missing input '{name}' ({spec.name})")
            continue
        try:
            out[name] = spec.validate(inputs[name], f"input '{name}'")
        except OutputValidationError as exc:
            problems.append(str(exc))
    if problems:
        where = f"{wf.source}: " if wf.source else ""
        raise InputError(f"{where}workflow '{wf.name}': " + "; ".join(problems))
    return out


async def run_workflow(
    wf: Workflow[Out], inputs: dict[str, Any], options: RunOptions | None = None
) -> RunResult[Out]:
    """Validate `wf` and its inputs, run it, and return the `RunResult`."""
    wf.validate()
    run = _Run(wf, _prepare_inputs(wf, inputs), options or RunOptions())
    return await run.execute()


def run_sync(
    wf: Workflow[Out], inputs: dict[str, Any], options: RunOptions | None = None
) -> RunResult[Out]:
    """Blocking `run_workflow`. Inside a running event loop (a notebook) it runs in a thread."""
    wf.validate()
    run = _Run.__new__(_Run)
    prepared = _prepare_inputs(wf, inputs)

    async def main() -> RunResult[Any]:
        _Run.__init__(run, wf, prepared, options or RunOptions())
        return await run.execute()

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        try:
            return anyio.run(main)
        except KeyboardInterrupt:
            result = getattr(run, "result", None)
            if result is None:
                raise
            result.status = "cancelled"
            raise RunInterrupted(result) from None
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(anyio.run, main).result()
