"""The YAML front end: workflow files -> `Workflow`, with file:line in every problem.

The file format is defined once, by the pydantic models below; `file_schema()` derives the
JSON Schema editors use from them (`docs/workflow.schema.json`).
"""

from __future__ import annotations

import importlib
import math
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

import jsonschema
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from flowroute.errors import FlowrouteError, Problem, WorkflowDefinitionError
from flowroute.graph.kinds import LLMNode, MCPToolNode, ToolNode
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
from flowroute.graph.templates import TemplateError, template_paths
from flowroute.graph.types import ANY, TypeSpec
from flowroute.graph.workflow import Workflow
from flowroute.models.base import Model, Settings
from flowroute.structured.constraint import OutputConstraint
from flowroute.tools.agent import AgentNode
from flowroute.tools.python import Tool

if TYPE_CHECKING:
    from flowroute.engine.context import NodeContext

__all__ = ["WorkflowFile", "file_schema", "load", "loads"]

# -- the file format -------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


TypeDecl = Annotated[
    str | list[str] | dict[str, Any],
    Field(
        description="A JSON Schema, a type name (string, integer, number, boolean, object, "
        "array), or a list of strings (one of them)."
    ),
]


class ConfidenceSpec(_Strict):
    """Mean (and optionally lowest) token probability of the answer."""

    min_mean: float = Field(0.7, ge=0, le=1)
    min_token: float | None = Field(None, ge=0, le=1)


class SelfConsistencySpec(_Strict):
    """`k` samples must agree (at least `min_agreement` of them)."""

    k: int = Field(3, ge=2)
    temperature: float = Field(0.7, gt=0)
    min_agreement: float = Field(1.0, gt=0, le=1)


class JudgeSpec(_Strict):
    """Ask a model a yes/no question about the answer."""

    model: str
    question: str = "Is the answer correct and complete for the request?"


class VerifierSpec(_Strict):
    """One verifier: exactly one key."""

    confidence: ConfidenceSpec | None = None
    self_consistency: SelfConsistencySpec | None = None
    judge: JudgeSpec | None = None
    predicate: str | None = Field(None, description="'module:function' returning a bool.")
    schema_: dict[str, Any] | None = Field(
        None, alias="schema", description="A JSON Schema the answer must also satisfy."
    )
    executable_calls: dict[str, Any] | None = Field(
        None, description="{}: every proposed tool call must be valid for its tool."
    )


class CascadeSpec(_Strict):
    """Models tried cheapest first; an answer is used when it passes every verifier."""

    cascade: list[str] = Field(min_length=1, description="Model references, cheapest first.")
    verifiers: list[VerifierSpec] = Field(default_factory=list)
    on_exhausted: Literal["best", "error"] = "best"
    max_cost: float | None = Field(None, ge=0, description="USD spent by the node.")
    max_latency: float | None = Field(None, gt=0, description="Seconds spent by the node.")
    max_escalations: int | None = Field(None, ge=0)


class LLMSpec(_Strict):
    """An LLM call: a Jinja2 prompt over `inputs.*` and other nodes' outputs."""

    model: str | CascadeSpec = Field(
        "local",
        description="A name from `models`, `local`, `local:/path.gguf` or a litellm string; "
        "or {cascade: [small, large], verifiers: [...]}.",
    )
    prompt: str = Field(description="Jinja2 template, e.g. 'Ticket: {{ inputs.ticket }}'.")
    system: str | None = None
    output: TypeDecl = Field("string", description="The type the model must produce (constrained).")
    max_tokens: int = Field(256, gt=0)
    temperature: float = Field(0.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    seed: int | None = 0
    stop: list[str] = Field(default_factory=list)
    logprobs: bool = False


class ToolSelection(_Strict):
    """Tools found by retrieval: each step offers the `retrieve` best matches."""

    from_: list[str] | None = Field(
        None,
        alias="from",
        description="Names from `tools` and MCP references to choose from; default: every "
        "declared tool and every tool of every MCP server.",
    )
    retrieve: int = Field(gt=0, description="How many tools each step offers.")
    search_tool: bool = Field(
        False, description="Also offer `search_tools(query)`, which adds the tools it finds."
    )


class AgentSpec(LLMSpec):
    """An agent: an LLM that calls `tools` in a loop until it gives a final `output`."""

    tools: list[str] | ToolSelection = Field(
        description="Names from `tools`, or MCP references 'server.tool' / 'server.*'; or "
        "{retrieve: K, from: [...]} to offer each step only the K best-matching tools."
    )
    max_steps: int = Field(6, gt=0)
    max_calls_per_step: int = Field(4, gt=0)
    on_tool_error: Literal["feed_back", "fail"] = "feed_back"
    tool_choice: str | dict[str, Any] | None = Field(
        None, description="For models with native tool calling: 'auto' or a forced choice."
    )


class PlanSearchSpec(LLMSpec):
    """A* search for a sequence of tool calls whose results answer the goal (the prompt)."""

    tools: list[str] = Field(
        description="Names from `tools`, or MCP references 'server.tool' / 'server.*'."
    )
    k: int = Field(3, ge=1, description="Candidate next steps sampled per expansion.")
    heuristic: Literal["zero", "llm", "memory"] = "zero"
    memory: str | None = Field(None, description="A JSON file of remembered plans.")
    pure: list[str] = Field(
        default_factory=list, description="Tools free of side effects (run during search)."
    )
    max_expansions: int = Field(20, ge=1)
    max_tool_runs: int = Field(50, ge=0)
    max_time: float | None = Field(None, gt=0)
    max_depth: int = Field(6, ge=1)
    step_cost: float = Field(1.0, ge=0)
    error_penalty: float | None = Field(
        None, ge=0, description="Cost added for a failed tool call (default: prune the branch)."
    )


class WhenSpec(_Strict):
    """Run the node only when `ref` equals `equals` (or is one of `in`)."""

    ref: str
    equals: Any = None
    in_: list[Any] | None = Field(None, alias="in")

    @model_validator(mode="after")
    def _one(self) -> WhenSpec:
        if self.in_ is None and self.equals is None:
            raise ValueError("give 'equals' or 'in'")
        return self


class MapSpec(_Strict):
    """Run the node once per item of `over`; the item is `{{ <as> }}` in the node."""

    over: str = Field(description="Reference to a list, e.g. 'inputs.tickets' or 'split.parts'.")
    as_: str = Field("item", alias="as")
    concurrency: int = Field(4, gt=0)


class RouteSpec(_Strict):
    examples: list[str] = Field(min_length=1)
    description: str = ""


class RouterSpec(_Strict):
    """Route `input` to one of `routes` by name, or to `reject` when it belongs to none."""

    input: str = Field(description="A reference to the text to route, e.g. inputs.message.")
    routes: dict[str, list[str] | RouteSpec] = Field(
        description="name -> example utterances (or {examples, description})."
    )
    reject: str = "reject"
    reject_examples: list[str] = Field(
        default_factory=list, description="Off-domain examples, to calibrate the threshold."
    )
    threshold: float | None = Field(None, description="Default: calibrated from the examples.")
    method: Literal["knn", "centroid"] = "knn"
    k: int = Field(3, ge=1)
    fallback: str | None = Field(None, description="A model for low-margin inputs.")
    margin: float = Field(0.03, ge=0)


class NodeSpec(_Strict):
    """One node: exactly one of `llm`, `agent`, `tool`, `router` or `first_of`, plus options."""

    llm: LLMSpec | None = None
    agent: AgentSpec | None = None
    plan_search: PlanSearchSpec | None = None
    router: RouterSpec | None = None
    tool: str | None = Field(None, description="A name from `tools`.")
    args: dict[str, Any] = Field(
        default_factory=dict, description="Tool arguments: literals or '{{ ref }}'."
    )
    first_of: list[str] | None = Field(
        None, description="Fan-in: the first of these references whose node ran."
    )
    output: TypeDecl | None = Field(None, description="For first_of: the output type.")
    map: MapSpec | None = None
    when: WhenSpec | None = None
    retries: int = Field(0, ge=0)
    retry_backoff: float = Field(0.5, ge=0)
    timeout: float | None = Field(None, gt=0)
    description: str = ""

    @model_validator(mode="after")
    def _one_kind(self) -> NodeSpec:
        kinds = [
            k
            for k in ("llm", "agent", "plan_search", "tool", "router", "first_of")
            if getattr(self, k) is not None
        ]
        if len(kinds) != 1:
            raise ValueError(
                "a node needs exactly one of llm, agent, plan_search, tool, router, first_of "
                f"(got {kinds or 'none'})"
            )
        return self


class MCPServerDecl(_Strict):
    """An MCP server: `command` (+ `args`, `env`, `cwd`) over stdio, or `url` over HTTP.

    `command: python` runs the interpreter flowroute runs on; `cwd` defaults to the folder of
    the workflow file, so relative paths in `args` are relative to it.
    """

    command: str | None = None
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] | None = None
    cwd: str | None = None
    url: str | None = None
    headers: dict[str, str] | None = None
    start_timeout: float = Field(30.0, gt=0)
    call_timeout: float = Field(60.0, gt=0)
    restart_on_crash: bool = False

    @model_validator(mode="after")
    def _one_transport(self) -> MCPServerDecl:
        if (self.command is None) == (self.url is None):
            raise ValueError("an MCP server needs exactly one of 'command' (stdio) or 'url' (HTTP)")
        return self


class ModelDecl(_Strict):
    """A named model: `local:` (a GGUF path, or `default` for the embedded model) or `litellm:`."""

    local: str | None = None
    litellm: str | None = None
    api_base: str | None = None
    api_key_env: str | None = None
    n_ctx: int | None = None
    n_threads: int | None = None
    repair_retries: int | None = None
    native_tools: bool | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> ModelDecl:
        if (self.local is None) == (self.litellm is None):
            raise ValueError("a model needs exactly one of 'local' or 'litellm'")
        return self


class WorkflowFile(_Strict):
    """A flowroute workflow file."""

    name: str
    description: str = ""
    inputs: dict[str, TypeDecl] = Field(default_factory=dict)
    models: dict[str, str | ModelDecl] = Field(default_factory=dict)
    mcp_servers: dict[str, MCPServerDecl] = Field(default_factory=dict)
    tools: dict[str, str] = Field(default_factory=dict, description="name -> 'module:function'.")
    nodes: dict[str, NodeSpec]
    output: str | dict[str, str] = Field(
        description="A reference, or a mapping of name -> reference."
    )


def file_schema() -> dict[str, Any]:
    """JSON Schema of the workflow file format (for editors)."""
    schema = WorkflowFile.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "flowroute workflow"
    return schema


# -- YAML with line numbers ------------------------------------------------------------------


def _scalar(node: yaml.Node) -> Any:
    # an empty value (`key:` with nothing after it) is null; re-parsing its serialisation fails
    return yaml.SafeLoader("").construct_object(node, deep=True)


class _Lines:
    def __init__(self) -> None:
        self.lines: dict[tuple[str, ...], int] = {}
        self.duplicates: list[tuple[tuple[str, ...], int]] = []

    def walk(self, node: yaml.Node, path: tuple[str, ...]) -> Any:
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            out: dict[str, Any] = {}
            for k, v in node.value:
                key = str(_scalar(k))  # scalar keys as plain strings
                if key in out:
                    self.duplicates.append(((*path, key), k.start_mark.line + 1))
                self.lines[(*path, key)] = k.start_mark.line + 1
                out[key] = self.walk(v, (*path, key))
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.walk(v, (*path, str(i))) for i, v in enumerate(node.value)]
        return _scalar(node)

    def line(self, *path: str) -> int | None:
        p = tuple(path)
        while p and p not in self.lines:
            p = p[:-1]
        return self.lines.get(p)


_REF = re.compile(r"^\s*\{\{\s*([A-Za-z_][\w]*(?:\.[A-Za-z_]\w*)*)\s*\}\}\s*$")
_BARE = re.compile(r"^[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*$")


def _parse_ref(text: str, *, bare: bool) -> tuple[str, ...] | None:
    m = _REF.match(text)
    if m:
        return tuple(m.group(1).split("."))
    if bare and _BARE.match(text.strip()):
        return tuple(text.strip().split("."))
    return None


def _to_ref(path: tuple[str, ...]) -> Ref:
    return Ref(path[0], path[1:]) if path[0] != INPUTS else Ref(INPUTS, path[1:])


_TYPE_NAMES = ("string", "integer", "number", "boolean", "object", "array", "null", "any")


def _type_decl(decl: Any) -> TypeSpec:
    """The type a declaration names; `ValueError` with a one-line reason when it is invalid."""
    if isinstance(decl, list):
        return TypeSpec.from_schema({"type": "string", "enum": decl})
    if isinstance(decl, str):
        if decl == "any":
            return ANY
        if decl not in _TYPE_NAMES:
            raise ValueError(f"unknown type '{decl}' (use one of {', '.join(_TYPE_NAMES)})")
        return TypeSpec.from_schema({"type": decl})
    schema = {k: v for k, v in decl.items() if k != "default"}
    try:
        return TypeSpec.from_schema(schema)
    except jsonschema.SchemaError as exc:
        at = "".join(f"[{p!r}]" for p in exc.path)
        where = f" at {at}" if at else ""
        raise ValueError(f"not a valid JSON Schema: {exc.message}{where}") from exc


@contextmanager
def _importable_from(directory: Path) -> Iterator[None]:
    added = str(directory) not in sys.path
    if added:
        sys.path.insert(0, str(directory))
    try:
        yield
    finally:
        if added:
            sys.path.remove(str(directory))


@dataclass(frozen=True, kw_only=True)
class _Unbuilt(Node):
    """Stands in for a node whose definition has errors (`loads` never returns one)."""

    kind: ClassVar[str] = "invalid"

    async def execute(self, args: dict[str, Any], ctx: NodeContext) -> Any:
        raise AssertionError(f"node '{self.name}' has definition errors")


class _Builder:
    def __init__(self, spec: WorkflowFile, lines: _Lines, source: str, base_dir: Path) -> None:
        self.spec, self.lines, self.source, self.base_dir = spec, lines, source, base_dir
        self.problems: list[Problem] = []

    def problem(
        self, message: str, *path: str, node: str | None = None, field: str | None = None
    ) -> None:
        self.problems.append(
            Problem("error", message, node, field, self.source, self.lines.line(*path))
        )

    def build(self) -> Workflow[Any]:
        spec = self.spec
        inputs: dict[str, TypeSpec] = {}
        defaults: dict[str, Any] = {}
        for name, decl in spec.inputs.items():
            try:
                inputs[name] = _type_decl(decl)
            except Exception as exc:
                self.problem(f"invalid type: {exc}", "inputs", name, field=f"inputs.{name}")
                inputs[name] = ANY  # reported; references to it are not errors too
            if isinstance(decl, dict) and "default" in decl:
                defaults[name] = decl["default"]
        models = {n: self.model(n, d) for n, d in spec.models.items()}
        tools = {n: t for n, ref in spec.tools.items() if (t := self.tool(n, ref)) is not None}
        nodes: dict[str, Node] = {}
        for name, nspec in spec.nodes.items():
            node = self.node(name, nspec, tools)
            # a node with errors is kept as a stand-in, so references to it are not reported again
            nodes[name] = (
                node
                if node is not None
                else _Unbuilt(
                    name=name, location=Location(self.source, self.lines.line("nodes", name))
                )
            )
        output: Any
        if isinstance(spec.output, str):
            output = self.ref(spec.output, "output", bare=True)
        else:
            output = {k: self.ref(v, "output", k, bare=True) for k, v in spec.output.items()}
        top_lines = {f"inputs.{n}": self.lines.line("inputs", n) or 0 for n in spec.inputs}
        top_lines["output"] = self.lines.line("output") or 0
        if isinstance(spec.output, dict):
            top_lines.update(
                {f"output.{k}": self.lines.line("output", k) or 0 for k in spec.output}
            )
        return Workflow(
            name=spec.name,
            nodes=nodes,
            output=output,
            inputs=inputs,
            input_defaults=defaults,
            models={k: v for k, v in models.items() if v is not None},
            mcp_servers=self.mcp_servers(),
            source=self.source,
            lines=top_lines,
            description=spec.description,
        )

    def mcp_servers(self) -> dict[str, Any]:
        if not self.spec.mcp_servers:
            return {}
        from flowroute.tools.mcp import MCPServer

        out: dict[str, Any] = {}
        for name, d in self.spec.mcp_servers.items():
            if d.command is not None:
                command = sys.executable if d.command in ("python", "python3") else d.command
                out[name] = MCPServer.stdio(
                    name,
                    command,
                    tuple(d.args),
                    d.env,
                    str(self.base_dir / d.cwd) if d.cwd else str(self.base_dir),
                    start_timeout=d.start_timeout,
                    call_timeout=d.call_timeout,
                    restart_on_crash=d.restart_on_crash,
                )
            else:
                out[name] = MCPServer.http(
                    name,
                    str(d.url),
                    d.headers,
                    start_timeout=d.start_timeout,
                    call_timeout=d.call_timeout,
                    restart_on_crash=d.restart_on_crash,
                )
        return out

    def model(self, name: str, decl: str | ModelDecl) -> Any:
        if isinstance(decl, str):
            return decl
        opts = {
            k: v
            for k, v in decl.model_dump(exclude_none=True).items()
            if k not in ("local", "litellm")
        }
        try:
            model: Model
            if decl.local is not None:
                path = None if decl.local in ("", "default") else decl.local
                if path is not None and not Path(path).is_absolute():
                    path = str(self.base_dir / path)
                from flowroute.models.llamacpp import LocalModel

                model = LocalModel(path, name=name, **opts)
            else:
                from flowroute.models.litellm_model import LiteLLMModel

                model = LiteLLMModel(str(decl.litellm), **opts)
            return model
        except Exception as exc:
            self.problem(
                f"invalid model declaration: {exc}", "models", name, field=f"models.{name}"
            )
            return None

    def load_target(
        self, label: str, target: str, *path: str, node: str | None = None, field: str
    ) -> Any | None:
        """The object `module:attribute` names, or None (with a problem) if it cannot be had."""
        module, _, attr = target.partition(":")
        if not module or not attr:
            self.problem(
                f"{label}: expected 'module:function', got {target!r}",
                *path,
                node=node,
                field=field,
            )
            return None
        try:
            with _importable_from(self.base_dir):
                obj: Any = importlib.import_module(module)
            for part in attr.split("."):
                obj = getattr(obj, part)
        except Exception as exc:
            self.problem(
                f"{label}: cannot import {target!r}: {type(exc).__name__}: {exc}",
                *path,
                node=node,
                field=field,
            )
            return None
        return obj

    def node_model(self, spec: str | CascadeSpec, *at: str, node: str) -> Any:
        """A model reference, or a `Cascade` built from a cascade mapping."""
        if isinstance(spec, str):
            return spec
        from flowroute.cascade import verifiers as v
        from flowroute.cascade.cascade import cascade

        built: list[Any] = []
        for i, vs in enumerate(spec.verifiers):
            where = (*at, "model", "verifiers", str(i))
            given = [k for k in VerifierSpec.model_fields if getattr(vs, k) is not None]
            if len(given) != 1:
                self.problem(
                    "a verifier has exactly one of confidence, self_consistency, judge, "
                    "predicate, schema, executable_calls",
                    *where,
                    node=node,
                    field=f"model.verifiers.{i}",
                )
                continue
            if vs.confidence is not None:
                built.append(v.Confidence(vs.confidence.min_mean, vs.confidence.min_token))
            elif vs.self_consistency is not None:
                sc = vs.self_consistency
                built.append(v.SelfConsistency(sc.k, sc.temperature, sc.min_agreement))
            elif vs.judge is not None:
                built.append(v.Judge(vs.judge.model, vs.judge.question))
            elif vs.schema_ is not None:
                built.append(v.SchemaCheck(vs.schema_))
            elif vs.executable_calls is not None:
                built.append(v.ExecutableCalls())
            elif vs.predicate is not None:
                fn = self.load_target(
                    "predicate",
                    vs.predicate,
                    *where,
                    "predicate",
                    node=node,
                    field=f"model.verifiers.{i}.predicate",
                )
                if fn is not None:
                    built.append(v.Predicate(fn, name=vs.predicate.partition(":")[2]))
        return cascade(
            *spec.cascade,
            verifiers=built,
            on_exhausted=spec.on_exhausted,
            max_cost=spec.max_cost,
            max_latency=spec.max_latency,
            max_escalations=spec.max_escalations,
        )

    def tool_arg(self, value: Any, *path: str, node: str, field: str) -> tuple[str, ...] | None:
        """The reference a tool argument holds, or None for a literal; an argument that looks
        like a template but is not exactly one reference is reported."""
        parsed = _parse_ref(value, bare=False) if isinstance(value, str) else None
        if isinstance(value, str) and parsed is None and "{{" in value:
            self.problem(
                "a tool argument is either a literal or exactly one '{{ reference }}'",
                *path,
                node=node,
                field=field,
            )
        return parsed

    def tool_refs(
        self, refs: list[str], tools: dict[str, Tool], where: tuple[str, ...], *, node: str
    ) -> list[Any]:
        """Tools named by `refs`: declared tools, or MCP references kept as strings."""
        out: list[Any] = []
        for i, t in enumerate(refs):
            if t in tools:
                out.append(tools[t])
            elif t.partition(".")[0] in self.spec.mcp_servers:
                out.append(t)  # an MCP reference, resolved when the node runs
            else:
                known = ", ".join(sorted(tools)) or "none"
                servers = ", ".join(sorted(self.spec.mcp_servers)) or "none"
                why = (
                    f"unknown MCP server '{t.partition('.')[0]}' in '{t}' (mcp_servers: {servers})"
                    if "." in t
                    else f"unknown tool '{t}' (tools: {known}; MCP tools are 'server.tool')"
                )
                self.problem(why, *where, str(i), node=node, field="tools")
        return out

    def tool(self, name: str, target: str) -> Tool | None:
        obj = self.load_target(f"tool '{name}'", target, "tools", name, field=f"tools.{name}")
        if obj is None:
            return None
        found = getattr(obj, "tool", None)
        if isinstance(found, Tool):
            return replace(found, name=name)  # the file's name is the one nodes and agents see
        if not callable(obj):
            self.problem(
                f"tool '{name}': {target!r} is not callable", "tools", name, field=f"tools.{name}"
            )
            return None
        return Tool.from_function(obj, name=name)

    def ref(self, text: str, *path: str, bare: bool, node: str | None = None) -> Ref:
        parsed = _parse_ref(text, bare=bare)
        if parsed is None:
            self.problem(
                f"expected a reference like 'node.field' or '{{{{ node.field }}}}', got {text!r}",
                *path,
                node=node,
                field=path[-1] if path else None,
            )
            return Ref(INPUTS)
        return _to_ref(parsed)

    def node(self, name: str, ns: NodeSpec, tools: dict[str, Tool]) -> Node | None:
        at = ("nodes", name)
        loc = Location(self.source, self.lines.line(*at))
        item = ns.map.as_ if ns.map else None
        common: dict[str, Any] = dict(
            name=name,
            retries=ns.retries,
            retry_backoff=ns.retry_backoff,
            timeout=ns.timeout,
            location=loc,
            description=ns.description,
        )
        when: tuple[Condition, ...] = ()
        if ns.when is not None:
            values = tuple(ns.when.in_) if ns.when.in_ is not None else (ns.when.equals,)
            when = (
                Condition(self.ref(ns.when.ref, *at, "when", "ref", bare=True, node=name), values),
            )
        field_lines: dict[str, int] = {}
        if ns.when is not None:
            field_lines["when"] = self.lines.line(*at, "when", "ref") or 0
        inner: Node
        item_arg = item or "item"
        if ns.llm is not None or ns.agent is not None or ns.plan_search is not None:
            llm: LLMSpec = ns.llm or ns.agent or ns.plan_search  # type: ignore[assignment]
            kind = (
                "llm" if ns.llm is not None else "agent" if ns.agent is not None else "plan_search"
            )
            try:
                paths = template_paths(llm.prompt) + (
                    template_paths(llm.system) if llm.system else []
                )
            except TemplateError as exc:
                self.problem(str(exc), *at, kind, "prompt", node=name, field="prompt")
                return None
            inputs: dict[str, Binding] = {}
            for p in paths:
                if item is not None and p[0] == item:
                    continue
                if p[0] not in self.spec.nodes and p[0] != INPUTS:
                    hint = f"; inside a map the item is '{{{{ {item} }}}}'" if item else ""
                    self.problem(
                        f"prompt refers to '{'.'.join(p)}': "
                        f"'{p[0]}' is neither 'inputs' nor a node{hint}",
                        *at,
                        kind,
                        "prompt",
                        node=name,
                        field="prompt",
                    )
                    continue
                key = ".".join(p)
                inputs[key] = _to_ref(p)
                field_lines[key] = self.lines.line(*at, kind, "prompt") or 0
            try:
                out_type = _type_decl(llm.output)
            except Exception as exc:
                self.problem(
                    f"invalid output type: {exc}", *at, kind, "output", node=name, field="output"
                )
                return None
            constraint = (
                None
                if out_type.schema in ({}, {"type": "string"})
                else OutputConstraint.json_schema(out_type.schema)
            )
            field_lines["model"] = self.lines.line(*at, kind, "model") or loc.line or 0
            settings = Settings(
                max_tokens=llm.max_tokens,
                temperature=llm.temperature,
                top_p=llm.top_p,
                seed=llm.seed,
                stop=tuple(llm.stop),
                logprobs=llm.logprobs,
            )
            llm_fields: dict[str, Any] = {
                "model": self.node_model(llm.model, *at, kind, node=name),
                "prompt": llm.prompt,
                "system": llm.system,
                "settings": settings,
                "output_type": out_type,
                "inputs": inputs,
                "field_lines": field_lines,
                **common,
                "when": () if item else when,
            }
            if ns.agent is not None:
                agent_tools: list[Any] = []
                selection = ns.agent.tools
                tool_refs: list[str]
                where: tuple[str, ...] = ("agent", "tools")
                if isinstance(selection, ToolSelection):
                    where = ("agent", "tools", "from")
                    tool_refs = (
                        selection.from_
                        if selection.from_ is not None
                        else [*self.spec.tools, *(f"{s}.*" for s in self.spec.mcp_servers)]
                    )
                else:
                    tool_refs = selection
                agent_tools = self.tool_refs(tool_refs, tools, (*at, *where), node=name)
                inner = AgentNode(
                    **llm_fields,
                    tools=tuple(agent_tools),
                    max_steps=ns.agent.max_steps,
                    max_calls_per_step=ns.agent.max_calls_per_step,
                    on_tool_error=ns.agent.on_tool_error,
                    tool_choice=ns.agent.tool_choice,
                    retrieve=selection.retrieve if isinstance(selection, ToolSelection) else None,
                    search_tool=isinstance(selection, ToolSelection) and selection.search_tool,
                )
            elif ns.plan_search is not None:
                from flowroute.planning.search import PlanMemory, PlanSearchNode

                ps = ns.plan_search
                memory = None
                if ps.memory is not None:
                    memory = PlanMemory(self.base_dir / ps.memory)
                inner = PlanSearchNode(
                    **llm_fields,
                    tools=tuple(
                        self.tool_refs(ps.tools, tools, (*at, "plan_search", "tools"), node=name)
                    ),
                    k=ps.k,
                    heuristic=ps.heuristic,
                    memory=memory,
                    pure=tuple(ps.pure),
                    max_expansions=ps.max_expansions,
                    max_tool_runs=ps.max_tool_runs,
                    max_time=ps.max_time,
                    max_depth=ps.max_depth,
                    step_cost=ps.step_cost,
                    error_penalty=math.inf if ps.error_penalty is None else ps.error_penalty,
                )
            else:
                inner = LLMNode(**llm_fields, constraint=constraint)
        elif ns.tool is not None and ns.tool.partition(".")[0] in self.spec.mcp_servers:
            server, _, tool_name = ns.tool.partition(".")
            if item is not None:
                self.problem(
                    "map over an MCP tool is not supported; map over a Python tool or an agent",
                    *at,
                    "map",
                    node=name,
                    field="map",
                )
                return None
            mcp_args: dict[str, Binding] = {}
            for arg, value in ns.args.items():
                field_lines[arg] = self.lines.line(*at, "args", arg) or 0
                parsed = self.tool_arg(value, *at, "args", arg, node=name, field=arg)
                mcp_args[arg] = _to_ref(parsed) if parsed is not None else Const(value)
            return MCPToolNode(
                server=server,
                tool=tool_name,
                inputs=mcp_args,
                field_lines=field_lines,
                **{**common, "when": when},
            )
        elif ns.tool is not None:
            tool = tools.get(ns.tool)
            if tool is None:
                if ns.tool not in self.spec.tools:  # a declared tool that failed is reported
                    known = ", ".join(sorted(self.spec.tools)) or "none"
                    self.problem(
                        f"unknown tool '{ns.tool}' (tools: {known})",
                        *at,
                        "tool",
                        node=name,
                        field="tool",
                    )
                return None
            args: dict[str, Binding] = {}
            for arg, value in ns.args.items():
                field_lines[arg] = self.lines.line(*at, "args", arg) or 0
                parsed = self.tool_arg(value, *at, "args", arg, node=name, field=arg)
                if parsed is None:  # a literal (a bad reference was reported as a problem)
                    args[arg] = Const(value)
                    continue
                if parsed is not None and item is not None and parsed[0] == item:
                    if len(parsed) > 1:
                        self.problem(
                            "map item fields are not supported in tool args; "
                            f"pass '{{{{ {item} }}}}'",
                            *at,
                            "args",
                            arg,
                            node=name,
                            field=arg,
                        )
                    item_arg = arg
                    continue
                args[arg] = _to_ref(parsed)
            inner = ToolNode(
                tool=tool,
                inputs=args,
                input_types=tool.parameters,
                output_type=tool.return_type,
                field_lines=field_lines,
                **{**common, "when": () if item else when},
            )
            if item is not None and item_arg not in tool.parameters:
                self.problem(
                    f"map over a tool needs one argument set to '{{{{ {item} }}}}'",
                    *at,
                    "args",
                    node=name,
                    field="args",
                )
                return None
        elif ns.router is not None:
            from flowroute.routing.router import Route, RouterNode

            rs = ns.router
            text = self.ref(rs.input, *at, "router", "input", bare=True, node=name)
            field_lines["text"] = self.lines.line(*at, "router", "input") or 0
            inner = RouterNode(
                inputs={"text": text},
                routes={
                    n: Route(tuple(r), "")
                    if isinstance(r, list)
                    else Route(tuple(r.examples), r.description)
                    for n, r in rs.routes.items()
                },
                reject=rs.reject,
                reject_examples=tuple(rs.reject_examples),
                threshold=rs.threshold,
                method=rs.method,
                k=rs.k,
                fallback=rs.fallback,
                margin=rs.margin,
                when=when,
                field_lines=field_lines,
                **common,
            )
        else:
            refs = [
                self.ref(r, *at, "first_of", str(i), bare=True, node=name)
                for i, r in enumerate(ns.first_of or [])
            ]
            for i in range(len(refs)):
                field_lines[str(i)] = self.lines.line(*at, "first_of", str(i)) or 0
            try:
                out_type = _type_decl(ns.output) if ns.output is not None else ANY
            except ValueError as exc:
                self.problem(
                    f"invalid output type: {exc}", *at, "output", node=name, field="output"
                )
                return None
            return FirstOf(
                inputs={str(i): r for i, r in enumerate(refs)},
                output_type=out_type,
                when=when,
                field_lines=field_lines,
                **common,
            )
        if ns.map is None:
            return inner
        over = self.ref(ns.map.over, *at, "map", "over", bare=True, node=name)
        item_type = inner.input_types.get(item_arg, ANY)
        outer_inputs = {k: v for k, v in inner.inputs.items()}
        outer_inputs["__items__"] = over
        return MapNode(
            inner=inner,
            over="__items__",
            item_arg=item_arg,
            concurrency=ns.map.concurrency,
            inputs=outer_inputs,
            input_types={
                **{k: v for k, v in inner.input_types.items() if k != item_arg},
                "__items__": TypeSpec(schema={"type": "array", "items": item_type.schema}),
            },
            output_type=TypeSpec(schema={"type": "array", "items": inner.output_type.schema}),
            field_lines={**field_lines, "__items__": self.lines.line(*at, "map", "over") or 0},
            # retries and timeout apply per item (on the inner node), not again to the whole map
            **{**common, "when": when, "retries": 0, "timeout": None},
        )


def loads(text: str, source: str = "<string>", base_dir: str | Path | None = None) -> Workflow[Any]:
    """Load a workflow from YAML text. Raises `WorkflowDefinitionError` listing every problem."""
    try:
        root = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise WorkflowDefinitionError(
            [
                Problem(
                    "error",
                    f"not valid YAML: {getattr(exc, 'problem', exc)}",
                    file=source,
                    line=line,
                )
            ],
            source,
        ) from exc
    if root is None:
        raise WorkflowDefinitionError([Problem("error", "the file is empty", file=source)], source)
    lines = _Lines()
    data = lines.walk(root, ())
    problems = [
        Problem("error", f"duplicate key '{p[-1]}'", field=".".join(p), file=source, line=ln)
        for p, ln in lines.duplicates
    ]
    if not isinstance(data, dict):
        raise WorkflowDefinitionError(
            [Problem("error", "a workflow file must be a mapping", file=source, line=1)], source
        )
    try:
        spec = WorkflowFile.model_validate(data)
    except ValidationError as exc:
        members = (
            "str",
            "ModelDecl",
            "ToolSelection",
            "CascadeSpec",
            "list[str]",
            "dict[str,any]",
        )
        found = exc.errors()
        # a mapping given where a list or a mapping is allowed fails both ways; the "should be a
        # valid list" half only adds noise when the mapping's own errors are there
        mappings = ("ToolSelection", "CascadeSpec")
        deep = {
            tuple(
                str(x)
                for x in e["loc"][: min(e["loc"].index(m) for m in mappings if m in e["loc"])]
            )
            for e in found
            if any(m in e["loc"] for m in mappings)
        }
        for err in found:
            loc = [str(x) for x in err["loc"]]
            if err["type"] in ("list_type", "string_type") and tuple(loc[:-1]) in deep:
                continue
            # pydantic inserts union member names into locations; keep the ones present in the file
            path = [p for p in loc if p not in members]
            node = path[1] if len(path) > 1 and path[0] == "nodes" else None
            shown = ".".join(path[2:] if node else path)
            problems.append(
                Problem("error", err["msg"], node, shown or None, source, lines.line(*path))
            )
        raise WorkflowDefinitionError(problems, source) from exc
    if problems:
        raise WorkflowDefinitionError(problems, source)
    builder = _Builder(spec, lines, source, Path(base_dir) if base_dir else Path.cwd())
    wf = builder.build()
    if builder.problems:
        # warnings are left out: with nodes missing, "unused"/"unreachable" would be wrong
        errors = [p for p in wf.check() if p.severity == "error"]
        raise WorkflowDefinitionError(builder.problems + errors, source)
    return wf


def load(path: str | Path) -> Workflow[Any]:
    """Load a workflow file. Tools named `module:function` are imported relative to its folder."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise FlowrouteError(f"cannot read workflow file {p}: {exc.strerror or exc}") from exc
    return loads(text, source=str(p), base_dir=p.resolve().parent)
