"""What a running node can reach: its record, the run's models (with their limits), retries."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio

from flowroute.engine.result import ModelCall, NodeRecord
from flowroute.errors import ModelError, NodeError, ToolError

if TYPE_CHECKING:
    from flowroute.graph.nodes import Node
    from flowroute.models.base import Model, ModelRequest, ModelResponse
    from flowroute.tools.base import ToolLike

__all__ = ["NodeContext", "RunState", "execute_with_policy"]


@dataclass
class RunState:
    """Per-run shared state: resolved models and their concurrency limiters."""

    declared_models: Mapping[str, Any]
    mcp_pool: Any = None
    index: Any = None
    budget: Any = None
    """A run-wide `Budget` for cascades (`RunOptions.budget`)."""
    escalations: int = 0
    cost: float = 0.0
    """Known cost of every model call so far in the run (unknown prices count as 0)."""
    started: float = field(default_factory=time.perf_counter)
    _models: dict[str, Model] = field(default_factory=dict)
    _limiters: dict[str, anyio.CapacityLimiter] = field(default_factory=dict)
    _unwatch: Any = None

    def tool_index(self) -> Any:
        """The run's `ToolIndex` (the shared default unless one was given), following the
        run's MCP servers' tool-list changes for as long as the run lasts."""
        if self.index is None:
            from flowroute.retrieval.index import shared_index

            self.index = shared_index()
        if self._unwatch is None and self.mcp_pool is not None:
            self._unwatch = self.index.watch(self.mcp_pool)
        return self.index

    def budget_stop(self) -> str | None:
        """Why the run's budget allows no more escalation, or None."""
        if self.budget is None:
            return None
        why: str | None = self.budget.exceeded(
            self.cost, time.perf_counter() - self.started, self.escalations
        )
        return f"run budget: {why}" if why else None

    def close(self) -> None:
        if self._unwatch is not None:
            self._unwatch()
            self._unwatch = None

    def model(self, ref: Any) -> Model:
        from flowroute.models.registry import resolve_model

        key = ref if isinstance(ref, str) else f"obj:{id(ref)}"
        if key not in self._models:
            self._models[key] = resolve_model(ref, self.declared_models)
        return self._models[key]

    async def mcp_tools(self, ref: str, refresh: bool = False) -> list[ToolLike]:
        """MCP tools for `"server.tool"` or `"server.*"`."""
        if self.mcp_pool is None:
            raise ToolError(ref, "MCP tools need an MCP server declared for the workflow")
        return list(await self.mcp_pool.resolve(ref, refresh=refresh))

    def limiter(self, model: Model) -> anyio.CapacityLimiter | None:
        if not model.max_concurrency:
            return None
        key = f"{model.name}:{id(model)}"
        if key not in self._limiters:
            self._limiters[key] = anyio.CapacityLimiter(model.max_concurrency)
        return self._limiters[key]


@dataclass
class NodeContext:
    """Handed to `Node.execute`: call models through it so usage lands in the node's record."""

    node: Node
    record: NodeRecord
    run: RunState

    async def generate(self, model_ref: Any, request: ModelRequest) -> ModelResponse:
        """Call a model under its concurrency limit and record the call.

        A `Cascade` runs its models in turn (each call recorded) with its verifiers.
        """
        from flowroute.cascade.cascade import Cascade

        if isinstance(model_ref, Cascade):
            return await model_ref.generate(self, request)
        model = self.run.model(model_ref)
        self.record.model = model.name
        limiter = self.run.limiter(model)
        start = time.perf_counter()
        try:
            if limiter is None:
                response = await model.generate(request)
            else:
                queued = time.perf_counter()
                async with limiter:
                    self.record.wait_time += time.perf_counter() - queued
                    response = await model.generate(request)
        except ModelError as exc:
            if exc.node is None:
                exc.node = self.node.name
            self.record.calls.append(
                ModelCall(model.name, latency=time.perf_counter() - start, ok=False, error=str(exc))
            )
            raise
        self.run.cost += response.cost or 0.0
        self.record.calls.append(
            ModelCall(
                model=response.model,
                prompt_tokens=response.prompt_tokens,
                completion_tokens=response.completion_tokens,
                latency=response.latency or time.perf_counter() - start,
                cost=response.cost,
                constrained=response.constrained,
            )
        )
        return response

    async def resolve_tools(self, refs: Sequence[Any], refresh: bool = False) -> list[ToolLike]:
        """Tool objects for `refs`: tools as they are, `"server.tool"`/`"server.*"` from MCP
        (`refresh=True` asks the servers for their current lists)."""
        out: list[ToolLike] = []
        for ref in refs:
            if isinstance(ref, str):
                out.extend(await self.run.mcp_tools(ref, refresh))
            else:
                out.append(ref)
        names = [t.name for t in out]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise NodeError(self.node.name, f"several tools are named {', '.join(dupes)}")
        return out

    async def run_item(self, inner: Node, args: dict[str, Any]) -> Any:
        """Run `inner` for one item of a map, with its own retries and timeout."""
        return await execute_with_policy(inner, args, self)


async def execute_with_policy(node: Node, args: dict[str, Any], ctx: NodeContext) -> Any:
    """Execute with the node's timeout and retries (exponential backoff); validate the output."""
    attempt = 0
    while True:
        attempt += 1
        ctx.record.attempts += 1
        try:
            if node.timeout is not None:
                with anyio.fail_after(node.timeout):
                    value = await node.execute(dict(args), ctx)
            else:
                value = await node.execute(dict(args), ctx)
            return node.output_type.validate(value, f"output of node '{node.name}'")
        except TimeoutError as exc:
            error: Exception = NodeError(node.name, f"timed out after {node.timeout:g}s")
            error.__cause__ = exc
        except Exception as exc:
            error = exc
        if attempt > node.retries:
            raise error
        await anyio.sleep(node.retry_backoff * 2 ** (attempt - 1))
