"""The basic node kinds: LLM calls and tool calls."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from flowroute.errors import Problem
from flowroute.graph.nodes import Node
from flowroute.graph.templates import TemplateError, render, template_paths
from flowroute.models.base import ModelRequest, Settings
from flowroute.structured.constraint import OutputConstraint
from flowroute.tools.python import Tool

if TYPE_CHECKING:
    from flowroute.engine.context import NodeContext
    from flowroute.graph.workflow import Workflow

__all__ = ["LLMNode", "ToolNode"]


@dataclass(frozen=True, kw_only=True)
class LLMNode(Node):
    """Render a prompt from the node's inputs, call a model, return its (constrained) output.

    `prompt` is a Jinja2 template over the inputs; `prompt_fn`, when set, computes the prompt
    from the inputs instead (the Python front end's "return value is the prompt").
    """

    kind: ClassVar[str] = "llm"

    model: Any
    prompt: str = ""
    prompt_fn: Callable[..., str] | None = None
    system: str | None = None
    constraint: OutputConstraint | None = None
    settings: Settings = field(default_factory=Settings)

    @property
    def model_ref(self) -> Any:
        return self.model

    def check(self, workflow: Workflow[Any]) -> list[Problem]:
        from flowroute.models.registry import check_model_ref

        out = [
            Problem("error", why, node=self.name, field="model")
            for why in check_model_ref(self.model, workflow.models)
        ]
        if self.prompt_fn is None:
            try:
                template_paths(self.prompt)
            except TemplateError as exc:
                out.append(Problem("error", str(exc), node=self.name, field="prompt"))
        return out

    def render(self, args: dict[str, Any]) -> str:
        if self.prompt_fn is not None:
            return str(self.prompt_fn(**args))
        return render(self.prompt, args)

    async def execute(self, args: dict[str, Any], ctx: NodeContext) -> Any:
        prompt = self.render(args)
        if self.system:
            request = ModelRequest(
                messages=(
                    {"role": "system", "content": self.system},
                    {"role": "user", "content": prompt},
                ),
                constraint=self.constraint,
                settings=self.settings,
            )
        else:
            request = ModelRequest(
                prompt=prompt, constraint=self.constraint, settings=self.settings
            )
        response = await ctx.generate(self.model, request)
        return response.value if self.constraint is not None else response.text

    def label(self) -> str:
        from flowroute.models.registry import describe_ref

        return f"llm: {self.name} ({describe_ref(self.model)})"


@dataclass(frozen=True, kw_only=True)
class ToolNode(Node):
    """Call one tool with arguments bound from inputs and other nodes' outputs."""

    kind: ClassVar[str] = "tool"

    tool: Tool

    def check(self, workflow: Workflow[Any]) -> list[Problem]:
        out: list[Problem] = []
        for arg in self.inputs:
            if arg not in self.tool.parameters:
                params = ", ".join(self.tool.parameters) or "none"
                out.append(
                    Problem(
                        "error",
                        f"tool '{self.tool.name}' has no parameter '{arg}' (parameters: {params})",
                        node=self.name,
                        field=arg,
                    )
                )
        for arg in sorted(self.tool.required - set(self.inputs)):
            out.append(
                Problem(
                    "error",
                    f"missing required argument '{arg}' of tool '{self.tool.name}'",
                    node=self.name,
                    field=arg,
                )
            )
        return out

    async def execute(self, args: dict[str, Any], ctx: NodeContext) -> Any:
        return await self.tool.call(args)

    def label(self) -> str:
        return f"tool: {self.name}"


def mcp_ref_problems(ref: str, workflow: Workflow[Any], node: str, field: str) -> list[Problem]:
    """Problems with a `"server.tool"` / `"server.*"` reference (the server must be declared)."""
    server, sep, tool = ref.partition(".")
    if not sep or not tool:
        return [
            Problem(
                "error",
                f"'{ref}': MCP tools read 'server.tool' or 'server.*'",
                node=node,
                field=field,
            )
        ]
    if server not in workflow.mcp_servers:
        known = ", ".join(sorted(workflow.mcp_servers)) or "none"
        return [
            Problem(
                "error",
                f"'{ref}': unknown MCP server '{server}' (mcp_servers: {known})",
                node=node,
                field=field,
            )
        ]
    return []


@dataclass(frozen=True, kw_only=True)
class MCPToolNode(Node):
    """Call one tool of an MCP server; its schema is fetched from the server when the node runs."""

    kind: ClassVar[str] = "mcp_tool"

    server: str
    tool: str

    def check(self, workflow: Workflow[Any]) -> list[Problem]:
        return mcp_ref_problems(f"{self.server}.{self.tool}", workflow, self.name, "tool")

    async def execute(self, args: dict[str, Any], ctx: NodeContext) -> Any:
        (tool,) = await ctx.resolve_tools([f"{self.server}.{self.tool}"])
        return await tool.call(args)

    def label(self) -> str:
        return f"mcp: {self.name} ({self.server}.{self.tool})"
