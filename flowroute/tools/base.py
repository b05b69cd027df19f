"""What every tool looks like to nodes and agents: Python functions and MCP tools alike."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from flowroute.graph.types import TypeSpec

__all__ = ["ToolLike"]


@runtime_checkable
class ToolLike(Protocol):
    """A callable tool: a name, a description, a JSON Schema for its arguments, and `call`.

    `call` validates the arguments, runs the tool, and raises `ToolError` (naming the tool,
    and the server for MCP tools) on any failure.
    """

    @property
    def name(self) -> str: ...

    @property
    def description(self) -> str: ...

    @property
    def json_schema(self) -> dict[str, Any]:
        """JSON Schema of the arguments object."""
        ...

    @property
    def return_type(self) -> TypeSpec: ...

    async def call(self, args: dict[str, Any]) -> Any: ...
