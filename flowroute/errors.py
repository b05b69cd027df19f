"""The exception hierarchy: every error flowroute raises is a `FlowrouteError`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from flowroute.engine.result import RunResult

__all__ = [
    "FlowrouteError",
    "MissingExtraError",
    "ModelError",
    "NodeError",
    "OutputValidationError",
    "Problem",
    "RunFailedError",
    "ToolError",
    "WorkflowDefinitionError",
]


class FlowrouteError(Exception):
    """Base class of every error raised by flowroute."""


@dataclass(frozen=True)
class Problem:
    """One problem found while checking a workflow.

    `where` names the node (and field) at fault; `file`/`line` are set for YAML workflows.
    """

    severity: Literal["error", "warning"]
    message: str
    node: str | None = None
    field: str | None = None
    file: str | None = None
    line: int | None = None

    def __str__(self) -> str:
        loc = ""
        if self.file:
            loc = f"{self.file}:{self.line}: " if self.line else f"{self.file}: "
        where = ""
        if self.node:
            where = f"node '{self.node}'" + (f", field '{self.field}'" if self.field else "") + ": "
        elif self.field:
            where = f"'{self.field}': "
        return f"{loc}{self.severity}: {where}{self.message}"


class WorkflowDefinitionError(FlowrouteError):
    """A workflow (Python or YAML) is invalid; `problems` lists every problem found."""

    def __init__(self, problems: list[Problem], source: str | None = None) -> None:
        self.problems = problems
        self.source = source
        errors = [p for p in problems if p.severity == "error"]
        head = f"{source}: " if source else ""
        lines = "\n".join(f"  {p}" for p in errors)
        super().__init__(f"{head}{len(errors)} problem(s) in workflow:\n{lines}")


class MissingExtraError(FlowrouteError, ImportError):
    """An optional dependency is not installed; the message names the extra that provides it."""

    def __init__(self, package: str, extra: str, purpose: str) -> None:
        super().__init__(
            f"{purpose} needs the '{package}' package, which is not installed. "
            f'Install it with: pip install "flowroute[{extra}]"'
        )


class NodeError(FlowrouteError):
    """A node failed while running. `node` names it; `cause` holds the underlying error."""

    def __init__(self, node: str, message: str) -> None:
        self.node = node
        super().__init__(f"node '{node}': {message}")


class ModelError(FlowrouteError):
    """A model call failed, or its output could not be made valid.

    `raw_text` keeps what the model produced; `validation_errors` what was wrong with it.
    """

    def __init__(
        self,
        model: str,
        message: str,
        *,
        node: str | None = None,
        raw_text: str | None = None,
        validation_errors: list[str] | None = None,
    ) -> None:
        self.model = model
        self.message = message
        self.node = node
        self.raw_text = raw_text
        self.validation_errors = validation_errors or []
        super().__init__(message)

    def __str__(self) -> str:
        # built on demand: the engine fills in `node` after a backend raised the error
        where = f"node '{self.node}', " if self.node else ""
        detail = ""
        if self.validation_errors:
            detail += "\n  validation errors:\n" + "\n".join(
                f"    - {e}" for e in self.validation_errors
            )
        if self.raw_text is not None:
            detail += f"\n  raw output: {self.raw_text[:500]!r}"
        return f"{where}model '{self.model}': {self.message}{detail}"


class OutputValidationError(FlowrouteError):
    """A value does not match the schema it must satisfy."""

    def __init__(self, what: str, errors: list[str], value: Any = None) -> None:
        self.errors = errors
        self.value = value
        super().__init__(f"{what} is invalid:\n" + "\n".join(f"  - {e}" for e in errors))


class ToolError(FlowrouteError):
    """A tool call failed: bad arguments, the tool raised, or it timed out."""

    def __init__(self, tool: str, message: str) -> None:
        self.tool = tool
        super().__init__(f"tool '{tool}': {message}")


class RunFailedError(FlowrouteError):
    """The workflow's output could not be computed. `result` keeps every node that did finish."""

    def __init__(self, result: RunResult[Any], message: str) -> None:
        self.result = result
        super().__init__(message)
