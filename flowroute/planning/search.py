"""Plan search over tool calls: best-first (A*) expansion of a tree of call sequences.

As in ToolChain*, the space of tool-call sequences is a tree. Each expansion asks the model
for `k` candidate next steps (one call, or a final answer), decoded under the step grammar so
every candidate is a valid call; identical candidates merge. A node's priority is
f = g + h: g adds, per step, `step_cost` plus a plausibility cost (`-log` of the share of the
`k` samples that proposed it) plus the tool's `cost`; h is pluggable (zero: uniform-cost
search; an LLM estimate of the steps left; or the distance to a remembered successful plan).

Tools marked `pure` (side-effect free) run during the search, their results cached; other
tools are only simulated (`simulate=`), and run for real once a plan is chosen. A step whose
tool fails is pruned (or penalised). Budgets bound expansions, tool executions and time; when
one runs out, the best partial plan is returned with `status="budget_exhausted"`.
"""

from __future__ import annotations

import heapq
import json
import math
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import anyio

from flowroute.errors import FlowrouteError, ModelError, NodeError, Problem, ToolError
from flowroute.graph.kinds import LLMNode
from flowroute.models.base import ModelRequest, Settings
from flowroute.structured.constraint import OutputConstraint
from flowroute.tools.base import ToolLike
from flowroute.tools.calls import ToolCall, describe_tools, parse_step, step_schema

if TYPE_CHECKING:
    from flowroute.engine.context import NodeContext
    from flowroute.graph.workflow import Workflow

__all__ = ["PlanMemory", "PlanSearchNode", "SearchTree", "search_tree_mermaid"]

Heuristic = Literal["zero", "llm", "memory"] | Callable[[str, Sequence[ToolCall]], float]


@dataclass
class _State:
    id: int
    parent: int | None
    call: ToolCall | None
    result: Any = None
    error: str | None = None
    simulated: bool = False
    final: Any = None
    is_goal: bool = False
    g: float = 0.0
    h: float = 0.0
    depth: int = 0
    votes: int = 0
    expanded: bool = False
    sample_errors: list[str] = field(default_factory=list)

    @property
    def f(self) -> float:
        return self.g + self.h


@dataclass
class SearchTree:
    """The explored tree: every state, the chosen path, and how the search ended."""

    states: dict[int, _State] = field(default_factory=dict)
    chosen: list[int] = field(default_factory=list)
    status: Literal["solved", "budget_exhausted", "no_plan"] = "no_plan"
    expansions: int = 0
    tool_runs: int = 0
    reason: str = ""

    def path(self, state_id: int) -> list[_State]:
        out = []
        current: int | None = state_id
        while current is not None:
            out.append(self.states[current])
            current = self.states[current].parent
        return out[::-1]

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "reason": self.reason,
            "expansions": self.expansions,
            "tool_runs": self.tool_runs,
            "chosen": self.chosen,
            "states": [
                {
                    "id": s.id,
                    "parent": s.parent,
                    "call": None
                    if s.call is None
                    else {"name": s.call.name, "arguments": s.call.arguments},
                    "final": s.final,
                    "error": s.error,
                    "simulated": s.simulated,
                    "g": round(s.g, 4),
                    "h": round(s.h, 4),
                    "votes": s.votes,
                    "expanded": s.expanded,
                    "sample_errors": s.sample_errors,
                }
                for s in self.states.values()
            ],
        }

    def to_mermaid(self) -> str:
        return search_tree_mermaid(self.as_dict())


def search_tree_mermaid(tree: dict[str, Any]) -> str:
    """A search tree (as kept in a plan_search node's `record.trace`) as a Mermaid flowchart;
    the chosen path is highlighted."""
    lines = ["flowchart TD"]
    for s in tree["states"]:
        if s["call"] is not None:
            label = f"{s['call']['name']}({_short(s['call']['arguments'])})"
        elif s["parent"] is not None:
            label = f"final: {_short(s['final'])}"
        else:
            label = "start"
        label += f"<br/>g={s['g']:.2f} h={s['h']:.2f}"
        if s["error"]:
            label += "<br/>error"
        lines.append(f'  s{s["id"]}["{_escape(label)}"]')
        if s["parent"] is not None:
            lines.append(f"  s{s['parent']} --> s{s['id']}")
    if tree["chosen"]:
        lines.append("  classDef chosen stroke-width:3px,stroke:#2a7")
        lines.append("  class " + ",".join(f"s{i}" for i in tree["chosen"]) + " chosen")
    return "\n".join(lines) + "\n"


def _short(value: Any, limit: int = 40) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _escape(text: str) -> str:
    return text.replace('"', "'")


class PlanMemory:
    """Successful plans by goal, kept in a JSON file across runs (or in memory)."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self.plans: list[dict[str, Any]] = []
        if self.path is not None and self.path.exists():
            try:
                self.plans = json.loads(self.path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise FlowrouteError(f"cannot read the plan memory {self.path}: {exc}") from exc

    def remember(self, goal: str, calls: Sequence[ToolCall]) -> None:
        entry = {"goal": goal, "calls": [[c.name, c.arguments] for c in calls]}
        self.plans = [p for p in self.plans if p["goal"] != goal] + [entry]
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps(self.plans), encoding="utf-8")

    def recall(self, goal: str, min_similarity: float = 0.6) -> list[tuple[str, Any]] | None:
        """The calls of the remembered plan whose goal is most similar to `goal`."""
        words = set(re.findall(r"\w+", goal.lower()))
        best, score = None, 0.0
        for plan in self.plans:
            other = set(re.findall(r"\w+", plan["goal"].lower()))
            sim = len(words & other) / max(len(words | other), 1)
            if sim > score:
                best, score = plan, sim
        if best is None or score < min_similarity:
            return None
        return [(name, args) for name, args in best["calls"]]


_PROTOCOL = (
    'Reply with JSON: {"calls": [{"name": "<tool>", "arguments": {...}}]} for the next tool '
    'call, or {"final": <answer>} when the results so far answer the goal.'
)


@dataclass(frozen=True, kw_only=True)
class PlanSearchNode(LLMNode):
    """Search for a sequence of tool calls whose results answer the goal (the rendered prompt).

    `k` candidates per expansion, sampled at `temperature`; `heuristic` is `"zero"`,
    `"llm"`, `"memory"` or a function `(goal, calls) -> float`. `pure` names tools that may
    run during the search (Python tools with `pure=True` count too); others are simulated by
    `simulate(call) -> result` (default: a placeholder) and run only in the chosen plan.
    """

    kind: ClassVar[str] = "plan_search"

    tools: tuple[Any, ...] = ()
    k: int = 3
    temperature: float = 0.8
    heuristic: Any = "zero"
    step_cost: float = 1.0
    plausibility_weight: float = 1.0
    error_penalty: float = math.inf
    max_expansions: int = 20
    max_tool_runs: int = 50
    max_time: float | None = None
    max_depth: int = 6
    pure: tuple[str, ...] = ()
    simulate: Callable[[ToolCall], Any] | None = None
    memory: PlanMemory | None = None
    settings: Settings = field(default_factory=lambda: Settings(max_tokens=256))

    def check(self, workflow: Workflow[Any]) -> list[Problem]:
        out = super().check(workflow)
        for name, value, low in (
            ("k", self.k, 1),
            ("max_expansions", self.max_expansions, 1),
            ("max_depth", self.max_depth, 1),
        ):
            if value < low:
                out.append(Problem("error", f"{name} must be >= {low}", node=self.name, field=name))
        if self.heuristic == "memory" and self.memory is None:
            out.append(
                Problem(
                    "error", "heuristic 'memory' needs a memory", node=self.name, field="memory"
                )
            )
        for t in self.tools:
            if not isinstance(t, (str, ToolLike)):
                out.append(Problem("error", f"not a tool: {t!r}", node=self.name, field="tools"))
        return out

    def _is_pure(self, tool: ToolLike) -> bool:
        return tool.name in self.pure or bool(getattr(tool, "pure", False))

    async def execute(self, args: dict[str, Any], ctx: NodeContext) -> Any:
        goal = self.render(args)
        tools = await ctx.resolve_tools(self.tools)
        by_name = {t.name: t for t in tools}
        final_schema = self.output_type.schema or {"type": "string"}
        any_step = OutputConstraint.json_schema(step_schema(tools, final_schema, max_calls=1))
        final_only = OutputConstraint.json_schema(step_schema([], final_schema))
        header = f"Goal: {goal}\n\nTools:\n{describe_tools(tools)}\n\n{_PROTOCOL}\n"
        tree = SearchTree()
        tree.states[0] = _State(0, None, None)
        cache: dict[str, tuple[Any, str | None, bool]] = {}
        remembered = self.memory.recall(goal) if self.memory is not None else None
        start = time.perf_counter()
        frontier: list[tuple[float, int, int]] = [(0.0, 0, 0)]
        counter = 1
        best_partial = 0
        while frontier:
            _, _, sid = heapq.heappop(frontier)
            state = tree.states[sid]
            if state.is_goal:
                tree.status = "solved"
                tree.chosen = [s.id for s in tree.path(sid)]
                break
            if tree.expansions >= self.max_expansions:
                tree.status, tree.reason = "budget_exhausted", "max_expansions"
                break
            if self.max_time is not None and time.perf_counter() - start > self.max_time:
                tree.status, tree.reason = "budget_exhausted", "max_time"
                break
            if state.depth >= self.max_depth:
                continue
            tree.expansions += 1
            state.expanded = True
            path = tree.path(sid)
            transcript = "".join(
                f"Step {i}: {s.call.name}({json.dumps(s.call.arguments)}) -> "
                f"{'error: ' + s.error if s.error else _short(s.result, 400)}\n"
                for i, s in enumerate(path[1:], 1)
                if s.call is not None
            )
            prompt = header + transcript + f"Step {state.depth + 1}:"
            proposals: Counter[str] = Counter()
            parsed: dict[str, Any] = {}
            for i in range(self.k):
                settings = replace(
                    self.settings,
                    temperature=0.0 if i == 0 else self.temperature,
                    seed=(self.settings.seed or 0) + i,
                )
                # at the depth limit only an answer is admitted, as on an agent's last step
                last = state.depth + 1 >= self.max_depth
                request = ModelRequest(
                    prompt=prompt, constraint=final_only if last else any_step, settings=settings
                )
                try:
                    response = await ctx.generate(self.model, request)
                except ModelError as exc:  # one bad sample (cut off, say) drops only itself
                    state.sample_errors.append(str(exc).splitlines()[0])
                    continue
                key = json.dumps(response.value, sort_keys=True)
                proposals[key] += 1
                parsed[key] = response.value
            for key, votes in proposals.items():
                step = parse_step(parsed[key])
                plausibility = -math.log(votes / self.k) * self.plausibility_weight
                child = _State(counter, sid, None, depth=state.depth + 1, votes=votes)
                if step.is_final:
                    child.final, child.is_goal = step.final, True
                    child.g = state.g + plausibility
                else:
                    call = step.calls[0]
                    child.call = call
                    tool = by_name[call.name]
                    child.g = (
                        state.g
                        + self.step_cost
                        + plausibility
                        + float(getattr(tool, "cost", 0.0) or 0.0)
                    )
                    await self._run(tool, call, child, cache, tree)
                    if child.error is not None:
                        child.g += self.error_penalty
                tree.states[counter] = child
                if not child.is_goal and math.isfinite(child.g):
                    child.h = await self._h(goal, tree, child, ctx, remembered)
                if math.isfinite(child.f):
                    heapq.heappush(frontier, (child.f, counter, counter))
                    if child.depth > tree.states[best_partial].depth:
                        best_partial = counter
                counter += 1
        else:
            tree.reason = tree.reason or "every branch failed or reached max_depth"
        if tree.status != "solved":
            tree.chosen = [s.id for s in tree.path(best_partial)]
            ctx.record.trace.append(tree.as_dict())
            raise NodeError(
                self.name,
                f"plan search {tree.status.replace('_', ' ')} ({tree.reason}) after "
                f"{tree.expansions} expansions; the best partial plan is in record.trace",
            )
        try:
            return await self._commit(goal, tree, by_name, header, ctx)
        finally:
            ctx.record.trace.append(tree.as_dict())

    async def _run(
        self,
        tool: ToolLike,
        call: ToolCall,
        state: _State,
        cache: dict[str, tuple[Any, str | None, bool]],
        tree: SearchTree,
    ) -> None:
        key = call.key()
        if key in cache:
            state.result, state.error, state.simulated = cache[key]
            return
        if not self._is_pure(tool):
            state.simulated = True
            state.result = (
                self.simulate(call)
                if self.simulate is not None
                else f"(simulated: {call.name} runs once the plan is chosen)"
            )
        elif tree.tool_runs >= self.max_tool_runs:
            state.error = "max_tool_runs reached: not run"
        else:
            tree.tool_runs += 1
            try:
                state.result = await tool.call(call.arguments)
            except ToolError as exc:
                state.error = str(exc)
        cache[key] = (state.result, state.error, state.simulated)

    async def _h(
        self,
        goal: str,
        tree: SearchTree,
        state: _State,
        ctx: NodeContext,
        remembered: list[tuple[str, Any]] | None,
    ) -> float:
        calls = [s.call for s in tree.path(state.id)[1:] if s.call is not None]
        h = self.heuristic
        if callable(h):
            return float(h(goal, calls))
        if h == "memory":
            if remembered is None:
                return 0.0
            prefix = [(c.name, c.arguments) for c in calls]
            if prefix == remembered[: len(prefix)]:
                return 0.0
            return self.step_cost * 2  # off the remembered path
        if h == "llm":
            request = ModelRequest(
                prompt=(
                    f"Goal: {goal}\nCalls so far: "
                    + "; ".join(f"{c.name}({json.dumps(c.arguments)})" for c in calls)
                    + "\nHow many more tool calls are needed? Answer 0-5:"
                ),
                constraint=OutputConstraint.json_schema(
                    {"type": "integer", "enum": [0, 1, 2, 3, 4, 5]}
                ),
                settings=Settings(max_tokens=4),
            )
            response = await ctx.generate(self.model, request)
            return float(response.value) * self.step_cost
        return 0.0

    async def _commit(
        self,
        goal: str,
        tree: SearchTree,
        by_name: dict[str, ToolLike],
        header: str,
        ctx: NodeContext,
    ) -> Any:
        """Run the chosen plan's simulated calls for real; ask again for the final answer
        when anything was simulated."""
        path = tree.path(tree.chosen[-1])
        steps = [s for s in path if s.call is not None]
        simulated = [s for s in steps if s.simulated]
        # calls that do not use an earlier simulated result run together
        batches: list[list[_State]] = []
        for s in simulated:
            assert s.call is not None
            args = json.dumps(s.call.arguments, default=str)
            uses = bool(batches) and any(
                str(prev.result) and str(prev.result) in args for prev in batches[-1]
            )
            if not batches or uses:
                batches.append([s])
            else:
                batches[-1].append(s)

        failures: list[NodeError] = []

        async def run(s: _State) -> None:
            assert s.call is not None
            try:
                s.result = await by_name[s.call.name].call(s.call.arguments)
            except ToolError as exc:
                failures.append(
                    NodeError(self.name, f"the chosen plan failed at {s.call.name}: {exc}")
                )
                return
            s.simulated = False
            tree.tool_runs += 1

        for batch in batches:
            async with anyio.create_task_group() as tg:
                for s in batch:
                    tg.start_soon(run, s)
            if failures:  # later steps may rely on this one: stop here
                raise failures[0]
        if self.memory is not None:
            self.memory.remember(goal, [s.call for s in steps if s.call is not None])
        final = path[-1].final
        if simulated:
            transcript = "".join(
                f"Step {i}: {s.call.name}({json.dumps(s.call.arguments)}) -> "
                f"{_short(s.result, 400)}\n"
                for i, s in enumerate(steps, 1)
                if s.call is not None
            )
            schema = self.output_type.schema or {"type": "string"}
            request = ModelRequest(
                prompt=header + transcript + f"Step {len(steps) + 1}:",
                constraint=OutputConstraint.json_schema(step_schema([], schema)),
                settings=self.settings,
            )
            response = await ctx.generate(self.model, request)
            final = parse_step(response.value).final
            path[-1].final = final
        return final

    def label(self) -> str:
        from flowroute.models.registry import describe_ref

        names = ", ".join(t if isinstance(t, str) else t.name for t in self.tools)
        return f"plan_search: {self.name} ({describe_ref(self.model)}; tools: {names})"
