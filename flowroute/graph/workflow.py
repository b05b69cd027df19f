"""`Workflow`: the validated graph both front ends produce, and what the engine runs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

import networkx as nx

from flowroute.errors import Problem, WorkflowDefinitionError
from flowroute.graph.nodes import INPUTS, Binding, Const, Node, Ref
from flowroute.graph.types import ANY, TypeSpec, schema_compatible

if TYPE_CHECKING:
    from flowroute.engine.result import RunResult
    from flowroute.engine.scheduler import RunOptions

__all__ = ["OutputSpec", "Workflow"]

Out = TypeVar("Out")

OutputSpec = Binding | Mapping[str, Binding]


@dataclass(frozen=True, eq=False)
class Workflow(Generic[Out]):
    """A typed graph of nodes. Build one with `@flowroute.workflow` or `flowroute.load(path)`.

    Example:
        ```python
        result = wf.run(ticket="My invoice is wrong")
        print(result.output, result.records["classify"].status)
        ```
    """

    name: str
    nodes: Mapping[str, Node]
    output: OutputSpec
    inputs: Mapping[str, TypeSpec] = field(default_factory=dict)
    input_defaults: Mapping[str, Any] = field(default_factory=dict)
    output_type: TypeSpec = ANY
    models: Mapping[str, Any] = field(default_factory=dict)
    """Named models declared by the workflow (name -> `Model`)."""
    mcp_servers: Mapping[str, Any] = field(default_factory=dict)
    """MCP servers the workflow's tools come from (name -> `MCPServer`)."""
    source: str | None = None
    lines: Mapping[str, int] = field(default_factory=dict)
    """Line numbers of top-level entries (`inputs.x`, `output`, `output.k`), for YAML messages."""
    description: str = ""

    # -- structure ---------------------------------------------------------------------------

    @cached_property
    def graph(self) -> nx.DiGraph[str]:
        """The dependency graph: an edge `a -> b` when `b` reads `a`'s output."""
        g: nx.DiGraph[str] = nx.DiGraph()
        for name, node in self.nodes.items():
            g.add_node(name, kind=node.kind)
        for name, node in self.nodes.items():
            for _, ref in node.refs():
                if ref.node != INPUTS and ref.node in self.nodes:
                    g.add_edge(ref.node, name)
        return g

    def output_refs(self) -> list[tuple[str, Ref]]:
        if isinstance(self.output, Ref):
            return [("output", self.output)]
        if isinstance(self.output, Const):
            return []
        return [(f"output.{k}", b) for k, b in self.output.items() if isinstance(b, Ref)]

    # -- validation --------------------------------------------------------------------------

    def check(self) -> list[Problem]:
        """Every problem in the workflow (errors and warnings), without raising."""
        problems: list[Problem] = []
        for name, node in self.nodes.items():
            problems += self._check_node(name, node)
            problems += [self._locate(p, node) for p in node.check(self)]
        for label, ref in self.output_refs():
            _, why = self._ref_type(ref)
            if why:
                line_key = label if label in self.lines else "output"
                problems.append(self._problem("error", why, field=label, line_key=line_key))
        try:
            cycle = nx.find_cycle(self.graph)
        except nx.NetworkXNoCycle:
            cycle = None
        if cycle:
            path = " -> ".join([a for a, _ in cycle] + [cycle[0][0]])
            first = self.nodes[cycle[0][0]]
            problems.append(
                self._locate(Problem("error", f"cycle: {path}", node=first.name), first)
            )
        problems += self._warnings()
        return problems

    def validate(self) -> list[Problem]:
        """Raise `WorkflowDefinitionError` listing every error; return the warnings."""
        problems = self.check()
        if any(p.severity == "error" for p in problems):
            raise WorkflowDefinitionError(problems, self.source)
        return problems

    def _ref_type(self, ref: Ref) -> tuple[TypeSpec, str | None]:
        """The type a reference yields, or why it is invalid."""
        if ref.node == INPUTS:
            if not ref.path:
                return ANY, None
            if ref.path[0] not in self.inputs:
                known = ", ".join(sorted(self.inputs)) or "none"
                return ANY, f"unknown workflow input '{ref.path[0]}' (inputs: {known})"
            spec, rest, shown = self.inputs[ref.path[0]], ref.path[1:], f"inputs.{ref.path[0]}"
        else:
            if ref.node not in self.nodes:
                known = ", ".join(sorted(self.nodes)) or "none"
                return ANY, f"reference to unknown node '{ref.node}' (nodes: {known})"
            spec, rest, shown = self.nodes[ref.node].output_type, ref.path, ref.node
        for part in rest:
            sub = spec.field(part)
            if sub is None:
                return ANY, f"'{shown}' ({spec.name}) has no field '{part}'"
            spec, shown = sub, f"{shown}.{part}"
        return spec, None

    def _check_node(self, name: str, node: Node) -> list[Problem]:
        out: list[Problem] = []
        if name == INPUTS:
            out.append(
                self._locate(
                    Problem("error", f"'{INPUTS}' is reserved and cannot name a node", node=name),
                    node,
                )
            )
        for arg, ref in node.refs():
            produced, why = self._ref_type(ref)
            if why:
                out.append(self._locate(Problem("error", why, node=name, field=arg), node))
                continue
            expected = node.input_types.get(arg)
            if expected is not None:
                mismatch = schema_compatible(produced, expected)
                if mismatch:
                    out.append(
                        self._locate(
                            Problem(
                                "error", f"type mismatch: '{ref}' {mismatch}", node=name, field=arg
                            ),
                            node,
                        )
                    )
        return out

    def _warnings(self) -> list[Problem]:
        out: list[Problem] = []
        used: set[str] = set()
        readers = [r for n in self.nodes.values() for _, r in n.refs()]
        for ref in readers + [r for _, r in self.output_refs()]:
            if ref.node == INPUTS:
                used.add(ref.path[0] if ref.path else "*")
        if "*" not in used:
            for name in self.inputs:
                if name not in used:
                    out.append(
                        self._problem(
                            "warning",
                            "workflow input is never used",
                            field=f"inputs.{name}",
                            line_key=f"inputs.{name}",
                        )
                    )
        sinks = {r.node for _, r in self.output_refs() if r.node in self.nodes}
        contributing: set[str] = set(sinks)
        for s in sinks:
            contributing |= nx.ancestors(self.graph, s)
        for name, node in self.nodes.items():
            if name not in contributing:
                out.append(
                    self._locate(
                        Problem(
                            "warning",
                            "unreachable: its output never reaches the workflow output",
                            node=name,
                        ),
                        node,
                    )
                )
        return out

    def _locate(self, p: Problem, node: Node) -> Problem:
        if p.file is not None or node.location is None:
            return p
        line = (
            node.field_lines.get(p.field or "", node.location.line)
            if p.field
            else node.location.line
        )
        return Problem(p.severity, p.message, p.node, p.field, node.location.file, line)

    def _problem(
        self, severity: Literal["error", "warning"], message: str, *, field: str, line_key: str
    ) -> Problem:
        return Problem(severity, message, None, field, self.source, self.lines.get(line_key))

    # -- running -----------------------------------------------------------------------------

    async def arun(self, options: RunOptions | None = None, /, **inputs: Any) -> RunResult[Out]:
        """Run the workflow on the current event loop (works inside notebooks)."""
        from flowroute.engine.scheduler import run_workflow

        return await run_workflow(self, inputs, options)

    def run(self, options: RunOptions | None = None, /, **inputs: Any) -> RunResult[Out]:
        """Run the workflow and wait for it; safe to call from inside a running event loop."""
        from flowroute.engine.scheduler import run_sync

        return run_sync(self, inputs, options)

    def to_mermaid(self) -> str:
        """A Mermaid flowchart of the graph."""
        from flowroute.graph.mermaid import to_mermaid

        return to_mermaid(self)
