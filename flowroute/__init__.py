"""flowroute: declarative agent workflows as typed graphs that run in parallel.

```python
import flowroute as fr

@fr.llm(model="local", output=Literal["refund", "question"])
def classify(ticket: str) -> str:
    "Ticket: {{ ticket }}\\nCategory:"

@fr.workflow
def triage(ticket: str) -> str:
    return classify(ticket)

print(triage.run(ticket="I was charged twice").output)
```
"""

from flowroute import models
from flowroute.engine.result import ModelCall, NodeRecord, RunResult
from flowroute.engine.scheduler import InputError, RunInterrupted, RunOptions
from flowroute.errors import (
    FlowrouteError,
    MissingExtraError,
    ModelError,
    NodeError,
    OutputValidationError,
    Problem,
    RunFailedError,
    ToolError,
    WorkflowDefinitionError,
)
from flowroute.frontends.decorators import (
    Handle,
    agent,
    call_tool,
    first_of,
    llm,
    map,
    tool,
    when,
    workflow,
)
from flowroute.frontends.yaml import load, loads
from flowroute.graph.workflow import Workflow
from flowroute.models.base import Model, ModelRequest, ModelResponse, Settings
from flowroute.structured.constraint import OutputConstraint
from flowroute.tools.python import Tool

__version__ = "0.1.0"

_LAZY = {"MCPServer", "MCPPool", "MCPServerError"}


def __getattr__(name: str) -> object:
    # MCP classes import the mcp SDK (the `mcp` extra): only when asked for
    if name in _LAZY:
        from flowroute.tools import mcp

        return getattr(mcp, name)
    raise AttributeError(f"module 'flowroute' has no attribute {name!r}")


__all__ = [
    "FlowrouteError",
    "Handle",
    "InputError",
    "MCPPool",
    "MCPServer",
    "MCPServerError",
    "MissingExtraError",
    "Model",
    "ModelCall",
    "ModelError",
    "ModelRequest",
    "ModelResponse",
    "NodeError",
    "NodeRecord",
    "OutputConstraint",
    "OutputValidationError",
    "Problem",
    "RunFailedError",
    "RunInterrupted",
    "RunOptions",
    "RunResult",
    "Settings",
    "Tool",
    "ToolError",
    "Workflow",
    "WorkflowDefinitionError",
    "agent",
    "call_tool",
    "first_of",
    "llm",
    "load",
    "loads",
    "map",
    "models",
    "tool",
    "when",
    "workflow",
]
