"""The workflow IR: data references, node specs and the small interface the engine runs them by."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, TypeAlias

from flowroute.errors import NodeError
from flowroute.graph.types import ANY, TypeSpec

if TYPE_CHECKING:
    from flowroute.engine.context import NodeContext
    from flowroute.errors import Problem
    from flowroute.graph.workflow import Workflow

__all__ = [
    "INPUTS",
    "Binding",
    "Condition",
    "Const",
    "FirstOf",
    "Location",
    "MapNode",
    "Node",
    "Ref",
]

INPUTS = "inputs"
"""The pseudo-node name under which a workflow's own inputs are referenced."""


@dataclass(frozen=True)
class Location:
    """Where something was defined: a YAML file and line, or a Python source line."""

    file: str
    line: int | None = None


@dataclass(frozen=True)
class Ref:
    """A data reference: a node's whole output (`path == ()`) or one field of it."""

    node: str
    path: tuple[str, ...] = ()

    def __str__(self) -> str:
        return ".".join((self.node, *self.path))

    def get(self, value: Any) -> Any:
        """Extract the referenced field from the producer's output."""
        for part in self.path:
            value = value[part] if isinstance(value, Mapping) else getattr(value, part)
        return value


@dataclass(frozen=True)
class Const:
    """A literal argument."""

    value: Any


Binding: TypeAlias = Ref | Const


@dataclass(frozen=True)
class Condition:
    """Run a node only when `ref`'s value is one of `values`; otherwise it is skipped."""

    ref: Ref
    values: tuple[Any, ...]

    def holds(self, value: Any) -> bool:
        value = getattr(value, "value", value)  # enums compare by value
        return value in self.values

    def __str__(self) -> str:
        shown = " | ".join(repr(v) for v in self.values)
        return f"{self.ref} == {shown}"


@dataclass(frozen=True, kw_only=True)
class Node(ABC):
    """A node of a workflow graph.

    The engine knows nodes only through this interface: the bindings that feed it, its
    declared types, and `execute`.
    """

    kind: ClassVar[str] = "node"
    accepts_skipped: ClassVar[bool] = False
    """Whether the node still runs when some (not all) of its inputs were skipped."""

    name: str
    inputs: Mapping[str, Binding] = field(default_factory=dict)
    input_types: Mapping[str, TypeSpec] = field(default_factory=dict)
    output_type: TypeSpec = ANY
    when: tuple[Condition, ...] = ()
    retries: int = 0
    retry_backoff: float = 0.5
    timeout: float | None = None
    location: Location | None = None
    field_lines: Mapping[str, int] = field(default_factory=dict)
    """Line per input/field name, for YAML error messages."""
    description: str = ""

    @abstractmethod
    async def execute(self, args: dict[str, Any], ctx: NodeContext) -> Any:
        """Compute the node's output from its resolved arguments."""

    @property
    def model_ref(self) -> Any:
        """The model this node calls (a name or a model object), or None."""
        return None

    def check(self, workflow: Workflow[Any]) -> list[Problem]:
        """Kind-specific problems (unknown model, bad tool), reported by `Workflow.validate`."""
        return []

    def refs(self) -> list[tuple[str, Ref]]:
        """Every data reference the node depends on, with the input name it feeds."""
        out = [(name, b) for name, b in self.inputs.items() if isinstance(b, Ref)]
        out += [("when", c.ref) for c in self.when]
        return out

    def label(self) -> str:
        return f"{self.kind}: {self.name}"


@dataclass(frozen=True, kw_only=True)
class FirstOf(Node):
    """Fan-in after a branch: the value of the first of its inputs that ran."""

    kind: ClassVar[str] = "first_of"
    accepts_skipped: ClassVar[bool] = True

    async def execute(self, args: dict[str, Any], ctx: NodeContext) -> Any:
        for key in self.inputs:
            if key in args:
                return args[key]
        raise AssertionError("first_of ran with no available input")  # engine prevents this


@dataclass(frozen=True, kw_only=True)
class MapNode(Node):
    """Fan-out of `inner` over the items of input `over`, fan-in of results as a list.

    `inner` receives each item as its `item_arg` input; its other inputs are shared.
    """

    kind: ClassVar[str] = "map"

    inner: Node
    over: str = "items"
    item_arg: str = "item"
    concurrency: int = 4

    @property
    def model_ref(self) -> Any:
        return self.inner.model_ref

    def check(self, workflow: Workflow[Any]) -> list[Problem]:
        # the item argument is bound per item, not by the inner node's own inputs
        return [p for p in self.inner.check(workflow) if p.field != self.item_arg]

    async def execute(self, args: dict[str, Any], ctx: NodeContext) -> Any:
        import anyio

        items = list(args.pop(self.over))
        results: list[Any] = [None] * len(items)
        limiter = anyio.CapacityLimiter(max(1, self.concurrency))

        errors: dict[int, BaseException] = {}

        async def one(i: int, item: Any) -> None:
            async with limiter:
                try:
                    results[i] = await ctx.run_item(self.inner, {**args, self.item_arg: item})
                except Exception as exc:  # every item finishes; failures are reported together
                    errors[i] = exc

        async with anyio.create_task_group() as tg:
            for i, item in enumerate(items):
                tg.start_soon(one, i, item)
        if errors:
            ctx.record.partial_output = results
            detail = "; ".join(f"item {i}: {errors[i]}" for i in sorted(errors)[:5])
            raise NodeError(
                self.name, f"{len(errors)} of {len(items)} item(s) failed ({detail})"
            ) from errors[min(errors)]
        return results

    def label(self) -> str:
        return f"map {self.inner.kind}: {self.name}"
