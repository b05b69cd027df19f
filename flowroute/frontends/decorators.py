"""The Python front end: `@tool`, `@llm` and `@workflow`, which builds the graph by tracing.

Inside a `@workflow` function, calling a tool or LLM function adds a node and returns a
`Handle`; attribute access on a handle is a field reference; the return value is the output.
"""

from __future__ import annotations

import inspect
import sys
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import replace
from typing import Any, Generic, Literal, ParamSpec, TypeVar, overload

from flowroute.errors import FlowrouteError, Problem, WorkflowDefinitionError
from flowroute.graph.kinds import LLMNode, ToolNode
from flowroute.graph.nodes import (
    INPUTS,
    Binding,
    Condition,
    Const,
    FirstOf,
    Location,
    MapNode,
    Node,
    Ref,
)
from flowroute.graph.templates import render, template_paths
from flowroute.graph.types import ANY, TypeSpec
from flowroute.graph.workflow import Workflow
from flowroute.models.base import Settings
from flowroute.structured.constraint import OutputConstraint
from flowroute.tools.python import Tool

__all__ = [
    "AgentFunction",
    "Handle",
    "LLMFunction",
    "ToolFunction",
    "agent",
    "call_tool",
    "first_of",
    "llm",
    "map",
    "tool",
    "when",
    "workflow",
]

P = ParamSpec("P")
R = TypeVar("R")
Out = TypeVar("Out")


class _Tracer:
    def __init__(self) -> None:
        self.nodes: dict[str, Node] = {}
        self.conditions: list[Condition] = []
        self.problems: list[Problem] = []

    def unique(self, base: str) -> str:
        if base not in self.nodes and base != INPUTS:
            return base
        i = 2
        while f"{base}_{i}" in self.nodes:
            i += 1
        return f"{base}_{i}"

    def add(self, node: Node) -> Handle:
        self.nodes[node.name] = node
        return Handle(Ref(node.name), node.output_type)


_tracer: ContextVar[_Tracer | None] = ContextVar("flowroute_tracer", default=None)


def _active() -> _Tracer | None:
    return _tracer.get()


class Handle:
    """A traced value: a node's output or one field of it. Only meaningful inside `@workflow`."""

    __slots__ = ("_ref", "_type")

    def __init__(self, ref: Ref, type_: TypeSpec) -> None:
        self._ref = ref
        self._type = type_

    def __getattr__(self, name: str) -> Handle:
        if name.startswith("__"):
            raise AttributeError(name)
        sub = self._type.field(name)
        return Handle(Ref(self._ref.node, (*self._ref.path, name)), sub or ANY)

    def __eq__(self, other: object) -> bool:
        raise FlowrouteError(
            f"'{self._ref}' is only known when the workflow runs: compare it with "
            "`with flowroute.when(handle, value):` instead of `==`"
        )

    __hash__ = object.__hash__

    def __bool__(self) -> bool:
        raise FlowrouteError(
            f"'{self._ref}' is only known when the workflow runs: branch with "
            "`with flowroute.when(handle, value):` instead of `if`"
        )

    def __iter__(self) -> Iterator[Any]:
        raise FlowrouteError(
            f"'{self._ref}' is only known when the workflow runs: "
            "use flowroute.map(fn, handle) to fan out"
        )

    def __repr__(self) -> str:
        return f"<Handle {self._ref}: {self._type.name}>"


def _binding(value: Any) -> Binding:
    if isinstance(value, Handle):
        return value._ref
    if isinstance(value, list | tuple) and any(isinstance(v, Handle) for v in value):
        raise FlowrouteError(
            "lists of handles are not supported as arguments; pass one handle per argument"
        )
    return Const(value)


def _call_site() -> Location | None:
    frame = sys._getframe(1)
    here = __file__
    while frame is not None and frame.f_code.co_filename == here:
        frame = frame.f_back  # type: ignore[assignment]
    if frame is None:
        return None
    return Location(frame.f_code.co_filename, frame.f_lineno)


def _bind_call(
    sig: inspect.Signature, owner: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> dict[str, Binding]:
    try:
        bound = sig.bind_partial(*args, **kwargs)
    except TypeError as exc:
        raise FlowrouteError(f"{owner}: {exc}") from exc
    return {k: _binding(v) for k, v in bound.arguments.items()}


class _NodeFunction(Generic[P, R]):
    """Shared behaviour of decorated functions: node options and tracing."""

    def __init__(self, fn: Callable[..., Any], options: Mapping[str, Any]) -> None:
        self.fn = fn
        self.node_options = dict(options)
        self.__name__ = fn.__name__
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn

    def options(self, **options: Any) -> typing.Self:
        """A copy with node options changed: `name`, `retries`, `retry_backoff`, `timeout`."""
        unknown = set(options) - {"name", "retries", "retry_backoff", "timeout", "description"}
        if unknown:
            raise FlowrouteError(f"unknown node option(s): {', '.join(sorted(unknown))}")
        clone: typing.Self = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone.node_options = {**self.node_options, **options}
        return clone

    def _make_node(
        self,
        name: str,
        inputs: dict[str, Binding],
        when: tuple[Condition, ...],
        location: Location | None,
    ) -> Node:
        raise NotImplementedError

    def _trace(self, tracer: _Tracer, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Handle:
        inputs = _bind_call(inspect.signature(self.fn), self.__name__, args, kwargs)
        name = tracer.unique(self.node_options.get("name") or self.__name__)
        return tracer.add(self._make_node(name, inputs, tuple(tracer.conditions), _call_site()))

    def _common(self) -> dict[str, Any]:
        return {
            k: v
            for k, v in self.node_options.items()
            if k in ("retries", "retry_backoff", "timeout", "description")
        }


class ToolFunction(_NodeFunction[P, R]):
    """A `@tool` function. Called inside `@workflow` it adds a tool node; elsewhere it just runs."""

    def __init__(self, fn: Callable[P, R], options: Mapping[str, Any]) -> None:
        super().__init__(fn, options)
        self.tool = Tool.from_function(
            fn,
            timeout=options.get("tool_timeout"),
            examples=options.get("examples", ()),
            pure=options.get("pure", False),
        )

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        tracer = _active()
        if tracer is None:
            result: R = self.fn(*args, **kwargs)
            return result
        return typing.cast(R, self._trace(tracer, args, kwargs))

    def _make_node(
        self,
        name: str,
        inputs: dict[str, Binding],
        when: tuple[Condition, ...],
        location: Location | None,
    ) -> Node:
        return ToolNode(
            name=name,
            tool=self.tool,
            inputs=inputs,
            input_types=self.tool.parameters,
            output_type=self.tool.return_type,
            when=when,
            location=location,
            **self._common(),
        )


_TOOL_OPTIONS = {
    "name",
    "retries",
    "retry_backoff",
    "timeout",
    "tool_timeout",
    "description",
    "examples",
    "pure",
}
_LLM_OPTIONS = {
    "search",
    "retrieve",
    "search_tool",
    "model",
    "output",
    "system",
    "settings",
    "name",
    "retries",
    "retry_backoff",
    "timeout",
    "description",
    "tools",
    "max_steps",
    "max_calls_per_step",
    "on_tool_error",
    "tool_choice",
}


class LLMFunction(_NodeFunction[P, Any]):
    """An `@llm` function: its docstring (or its return value) is the prompt template."""

    def __init__(self, fn: Callable[..., Any], options: Mapping[str, Any]) -> None:
        unknown = set(options) - _LLM_OPTIONS
        if unknown:
            raise FlowrouteError(
                f"'{fn.__name__}': unknown option(s) {', '.join(sorted(unknown))} "
                f"(options: {', '.join(sorted(_LLM_OPTIONS))})"
            )
        super().__init__(fn, options)
        output = options.get("output", str)
        self.output_type = (
            TypeSpec.of(output) if not isinstance(output, dict) else TypeSpec.from_schema(output)
        )
        self.constraint = OutputConstraint.of(output)
        hints = typing.get_type_hints(fn)
        sig = inspect.signature(fn)
        self.input_types = {n: TypeSpec.of(hints.get(n, Any)) for n in sig.parameters}
        self.template = inspect.cleandoc(fn.__doc__ or "")

    def _prompt(self, **args: Any) -> str:
        returned = self.fn(**args)
        # A returned string is a template too: values are substituted by Jinja, so build it
        # with "{{ name }}" placeholders, never by formatting user data into it (an f-string
        # would let "{{ ... }}" inside that data be evaluated).
        template = returned if isinstance(returned, str) else self.template
        if not template:
            raise FlowrouteError(
                f"llm function '{self.__name__}' has no docstring and returned no prompt"
            )
        return render(template, args)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        tracer = _active()
        if tracer is None:
            raise FlowrouteError(
                f"'{self.__name__}' is an LLM node: call it inside a @flowroute.workflow function"
            )
        return self._trace(tracer, args, kwargs)

    def _make_node(
        self,
        name: str,
        inputs: dict[str, Binding],
        when: tuple[Condition, ...],
        location: Location | None,
    ) -> Node:
        return LLMNode(**self._llm_fields(name, inputs, when, location, Settings()))

    def _llm_fields(
        self,
        name: str,
        inputs: dict[str, Binding],
        when: tuple[Condition, ...],
        location: Location | None,
        defaults: Settings,
    ) -> dict[str, Any]:
        settings = replace(defaults, **self.node_options.get("settings", {}))
        return dict(
            name=name,
            model=self.node_options.get("model", "local"),
            prompt=self.template,
            prompt_fn=self._prompt,
            constraint=self.constraint,
            output_type=self.output_type,
            system=self.node_options.get("system"),
            settings=settings,
            inputs=inputs,
            input_types=self.input_types,
            when=when,
            location=location,
            **self._common(),
        )

    def template_problems(self) -> list[str]:
        if not self.template:
            return []
        params = set(inspect.signature(self.fn).parameters)
        return [
            f"prompt template uses '{'.'.join(p)}', which is not a parameter"
            for p in template_paths(self.template)
            if p[0] not in params
        ]


class AgentFunction(LLMFunction[P]):
    """An `@agent` function: an LLM node that may call `tools` before answering."""

    def _make_node(
        self,
        name: str,
        inputs: dict[str, Binding],
        when: tuple[Condition, ...],
        location: Location | None,
    ) -> Node:
        from flowroute.tools.agent import AgentNode

        return AgentNode(
            **self._llm_fields(name, inputs, when, location, Settings(max_tokens=256)),
            tools=_tool_objects(self.node_options),
            max_steps=self.node_options.get("max_steps", 6),
            max_calls_per_step=self.node_options.get("max_calls_per_step", 4),
            on_tool_error=self.node_options.get("on_tool_error", "feed_back"),
            tool_choice=self.node_options.get("tool_choice"),
            retrieve=self.node_options.get("retrieve"),
            search_tool=self.node_options.get("search_tool", False),
        )


class PlanSearchFunction(LLMFunction[P]):
    """A `@plan_search` function: an LLM node that searches for a plan of tool calls."""

    def _make_node(
        self,
        name: str,
        inputs: dict[str, Binding],
        when: tuple[Condition, ...],
        location: Location | None,
    ) -> Node:
        from flowroute.planning.search import PlanSearchNode

        return PlanSearchNode(
            **self._llm_fields(name, inputs, when, location, Settings(max_tokens=256)),
            tools=_tool_objects(self.node_options),
            **self.node_options.get("search", {}),
        )


def _tool_objects(options: Mapping[str, Any]) -> tuple[Any, ...]:
    """`tools=` of an agent or plan search: `@tool` functions become their `Tool`."""
    return tuple(t.tool if isinstance(t, ToolFunction) else t for t in options.get("tools", ()))


def plan_search(
    *,
    tools: Sequence[Any],
    model: Any = "local",
    output: Any = str,
    settings: Mapping[str, Any] | None = None,
    **search: Any,
) -> Callable[[Callable[..., Any]], PlanSearchFunction[...]]:
    """Make a function a plan-search node: A* over sequences of calls to `tools`.

    Search options (`k`, `heuristic`, `max_expansions`, `max_tool_runs`, `max_time`,
    `max_depth`, `pure`, `simulate`, `memory`, `step_cost`, `error_penalty`, ...) are those of
    `PlanSearchNode`; node options (`name`, `retries`, `timeout`) work as for any node.

    Example:
        ```python
        @flowroute.plan_search(tools=[lookup, book], heuristic="zero", max_expansions=30)
        def trip(goal: str) -> str:
            "{{ goal }}"
        ```
    """
    node_keys = {"name", "retries", "retry_backoff", "timeout", "description", "system"}
    opts: dict[str, Any] = {
        "model": model,
        "output": output,
        "tools": tuple(tools),
        "settings": dict(settings or {}),
        **{k: v for k, v in search.items() if k in node_keys},
        "search": {k: v for k, v in search.items() if k not in node_keys},
    }
    return lambda fn: PlanSearchFunction(fn, opts)


@overload
def tool(fn: Callable[P, R], /) -> ToolFunction[P, R]: ...
@overload
def tool(
    *,
    name: str | None = None,
    retries: int = 0,
    retry_backoff: float = 0.5,
    timeout: float | None = None,
    tool_timeout: float | None = None,
    description: str = "",
    examples: Sequence[str] = (),
    pure: bool = False,
) -> Callable[[Callable[P, R]], ToolFunction[P, R]]: ...
def tool(fn: Any = None, /, **options: Any) -> Any:
    """Make a typed function (sync or async) a tool; its JSON Schema comes from hints and docstring.

    Example:
        ```python
        @flowroute.tool
        def lookup_order(order_id: str) -> Order:
            "Find an order by id."
        ```
    """
    unknown = set(options) - _TOOL_OPTIONS
    if unknown:
        raise FlowrouteError(
            f"@tool: unknown option(s) {', '.join(sorted(unknown))} "
            f"(options: {', '.join(sorted(_TOOL_OPTIONS))})"
        )
    if fn is not None:
        return ToolFunction(fn, options)
    return lambda f: ToolFunction(f, options)


def llm(
    *,
    model: Any = "local",
    output: Any = str,
    system: str | None = None,
    settings: Mapping[str, Any] | None = None,
    **options: Any,
) -> Callable[[Callable[..., Any]], LLMFunction[...]]:
    """Make a function an LLM node. Its docstring (a Jinja2 template over its parameters), or
    the string it returns, is the prompt; `output` is the type the model must produce.

    Example:
        ```python
        @flowroute.llm(model="local", output=Literal["refund", "question"])
        def classify(ticket: str) -> str:
            "Ticket: {{ ticket }}\\nCategory:"
        ```
    """
    opts = {
        "model": model,
        "output": output,
        "system": system,
        "settings": dict(settings or {}),
        **options,
    }
    return lambda fn: LLMFunction(fn, opts)


def agent(
    *,
    tools: Sequence[Any],
    model: Any = "local",
    output: Any = str,
    max_steps: int = 6,
    max_calls_per_step: int = 4,
    on_tool_error: Literal["feed_back", "fail"] = "feed_back",
    retrieve: int | None = None,
    search_tool: bool = False,
    settings: Mapping[str, Any] | None = None,
    **options: Any,
) -> Callable[[Callable[..., Any]], AgentFunction[...]]:
    """Make a function an agent node: the model calls `tools` until it gives a final `output`.

    `tools` holds `@tool` functions, tool objects, or `"server.tool"` / `"server.*"` MCP
    references. Tool errors are shown to the model (`on_tool_error="feed_back"`) or fail the
    node (`"fail"`). `retrieve=K` offers each step only the K tools that best match the task
    and the last results (the `retrieval` extra); `search_tool=True` lets the model ask for
    more through a `search_tools` tool.

    Example:
        ```python
        @flowroute.agent(tools=[add, multiply], output=int)
        def solve(question: str) -> str:
            "Question: {{ question }}"
        ```
    """
    opts = {
        "model": model,
        "output": output,
        "tools": tuple(tools),
        "max_steps": max_steps,
        "max_calls_per_step": max_calls_per_step,
        "on_tool_error": on_tool_error,
        "retrieve": retrieve,
        "search_tool": search_tool,
        "settings": dict(settings or {}),
        **options,
    }
    return lambda fn: AgentFunction(fn, opts)


@contextmanager
def when(value: Handle, *values: Any) -> Iterator[None]:
    """Nodes created inside run only when `value` equals one of `values`; else they are skipped."""
    tracer = _active()
    if tracer is None or not isinstance(value, Handle):
        raise FlowrouteError(
            "flowroute.when(handle, value) is only valid inside a @workflow function"
        )
    if not values:
        raise FlowrouteError("flowroute.when needs at least one value to compare with")
    tracer.conditions.append(Condition(value._ref, tuple(getattr(v, "value", v) for v in values)))
    try:
        yield
    finally:
        tracer.conditions.pop()


def call_tool(ref: str, /, *, name: str | None = None, **arguments: Any) -> Any:
    """Add a node that calls the MCP tool `ref` (`"server.tool"`) with `arguments`.

    The server must be listed in `@workflow(mcp_servers=[...])`.

    Example:
        ```python
        total = flowroute.call_tool("calc.add", a=x, b=3)
        ```
    """
    from flowroute.graph.kinds import MCPToolNode

    tracer = _active()
    if tracer is None:
        raise FlowrouteError("flowroute.call_tool is only valid inside a @workflow function")
    server, _, tool_name = ref.partition(".")
    return tracer.add(
        MCPToolNode(
            name=tracer.unique(name or tool_name or ref),
            server=server,
            tool=tool_name,
            inputs={k: _binding(v) for k, v in arguments.items()},
            when=tuple(tracer.conditions),
            location=_call_site(),
        )
    )


def route(
    text: Any,
    /,
    routes: Mapping[str, Any],
    *,
    name: str = "route",
    reject: str = "reject",
    threshold: float | None = None,
    reject_examples: Sequence[str] = (),
    method: Literal["knn", "centroid"] = "knn",
    fallback: Any = None,
    margin: float = 0.03,
) -> Any:
    """Add a router node: the name of the route `text` belongs to, or `reject`.

    `routes` maps each name to example utterances (or `{"examples": [...], "description":
    ...}`). Branch on the result with `flowroute.when(result, "name")`; only the chosen
    branch runs. Embeddings come from the `retrieval` extra's packaged model.

    Example:
        ```python
        r = flowroute.route(ticket, {"billing": ["I was charged twice"],
                                     "tech": ["the app crashes"]})
        with flowroute.when(r, "billing"):
            refund(ticket)
        ```
    """
    from flowroute.routing.router import RouterNode, routes_from

    tracer = _active()
    if tracer is None:
        raise FlowrouteError("flowroute.route is only valid inside a @workflow function")
    return tracer.add(
        RouterNode(
            name=tracer.unique(name),
            inputs={"text": _binding(text)},
            routes=routes_from(routes),
            reject=reject,
            threshold=threshold,
            reject_examples=tuple(reject_examples),
            method=method,
            fallback=fallback,
            margin=margin,
            when=tuple(tracer.conditions),
            location=_call_site(),
        )
    )


def first_of(*handles: Handle, name: str = "first_of") -> Any:
    """Fan-in after a branch: the value of the first of `handles` whose node ran."""
    tracer = _active()
    if tracer is None:
        raise FlowrouteError("flowroute.first_of is only valid inside a @workflow function")
    inputs = {str(i): _binding(h) for i, h in enumerate(handles)}
    types = [h._type for h in handles if isinstance(h, Handle)]
    out_type = types[0] if types and all(t.schema == types[0].schema for t in types) else ANY
    return tracer.add(
        FirstOf(
            name=tracer.unique(name),
            inputs=inputs,
            output_type=out_type,
            when=tuple(tracer.conditions),
            location=_call_site(),
        )
    )


_OVER = "__items__"
"""The map node's input holding the list (not a name any function parameter can clash with)."""


def map(
    fn: _NodeFunction[..., Any], items: Handle, /, *, concurrency: int = 4, **kwargs: Any
) -> Any:
    """Run `fn` once per item of `items` (at most `concurrency` at a time); the result is a list.

    The item is passed as `fn`'s first parameter not given in `kwargs`.
    """
    tracer = _active()
    if tracer is None:
        raise FlowrouteError("flowroute.map is only valid inside a @workflow function")
    params = [p for p in inspect.signature(fn.fn).parameters if p not in kwargs]
    if not params:
        raise FlowrouteError(
            f"flowroute.map: '{fn.__name__}' has no parameter left to receive the item"
        )
    item_arg = params[0]
    inner_inputs = _bind_call(inspect.signature(fn.fn), fn.__name__, (), kwargs)
    name = tracer.unique(fn.node_options.get("name") or f"map_{fn.__name__}")
    location = _call_site()
    inner = fn._make_node(name, inner_inputs, (), location)
    item_type = inner.input_types.get(item_arg, ANY)
    node = MapNode(
        name=name,
        inner=inner,
        over=_OVER,
        item_arg=item_arg,
        concurrency=concurrency,
        inputs={**inner_inputs, _OVER: _binding(items)},
        input_types={
            **{k: v for k, v in inner.input_types.items() if k != item_arg},
            _OVER: TypeSpec(schema={"type": "array", "items": item_type.schema}),
        },
        output_type=TypeSpec(schema={"type": "array", "items": inner.output_type.schema}),
        when=tuple(tracer.conditions),
        location=location,
    )
    return tracer.add(node)


def workflow(
    fn: Callable[..., Out] | None = None,
    /,
    *,
    name: str | None = None,
    models: Mapping[str, Any] | None = None,
    mcp_servers: Sequence[Any] = (),
) -> Any:
    """Build a `Workflow` by tracing `fn`. Its parameters are the workflow's inputs.

    Example:
        ```python
        @flowroute.workflow
        def triage(ticket: str) -> Triage:
            kind = classify(ticket)
            return make_triage(kind=kind, ticket=ticket)
        ```
    """

    def build(f: Callable[..., Out]) -> Workflow[Out]:
        hints = typing.get_type_hints(f)
        sig = inspect.signature(f)
        inputs = {p: TypeSpec.of(hints.get(p, Any)) for p in sig.parameters}
        defaults = {p: v.default for p, v in sig.parameters.items() if v.default is not v.empty}
        tracer = _Tracer()
        token = _tracer.set(tracer)
        try:
            ret = f(**{p: Handle(Ref(INPUTS, (p,)), t) for p, t in inputs.items()})
        finally:
            _tracer.reset(token)
        output: Any
        if isinstance(ret, Mapping):
            output = {str(k): _binding(v) for k, v in ret.items()}
        else:
            output = _binding(ret)
        problems = [
            Problem(
                "error",
                why,
                node=n.name,
                file=n.location.file if n.location else None,
                line=n.location.line if n.location else None,
            )
            for n in tracer.nodes.values()
            if isinstance(n, LLMNode) and n.prompt_fn is not None
            for why in _template_problems(n)
        ]
        if problems:
            raise WorkflowDefinitionError(problems, f.__qualname__)
        out_hint = hints.get("return", Any)
        return Workflow(
            name=name or f.__name__,
            nodes=dict(tracer.nodes),
            output=output,
            inputs=inputs,
            input_defaults=defaults,
            output_type=TypeSpec.of(out_hint),
            models=dict(models or {}),
            mcp_servers={s.name: s for s in mcp_servers},
            description=inspect.cleandoc(f.__doc__ or ""),
        )

    if fn is not None:
        return build(fn)
    return build


def _template_problems(node: LLMNode) -> list[str]:
    owner = getattr(node.prompt_fn, "__self__", None)
    return owner.template_problems() if isinstance(owner, LLMFunction) else []
