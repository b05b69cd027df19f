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
from flowroute.cascade.cascade import Budget, Cascade, cascade
from flowroute.cascade.verifiers import (
    Confidence,
    ExecutableCalls,
    Judge,
    Predicate,
    SchemaCheck,
    SelfConsistency,
    Verdict,
    Verifier,
)
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
    plan_search,
    route,
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

_LAZY = {
    "MCPServer": "flowroute.tools.mcp",
    "MCPPool": "flowroute.tools.mcp",
    "MCPServerError": "flowroute.tools.mcp",
    "ToolIndex": "flowroute.retrieval.index",
    "ToolDocument": "flowroute.retrieval.index",
    "ToolHit": "flowroute.retrieval.index",
    "PlanMemory": "flowroute.planning.search",
}


def __getattr__(name: str) -> object:
    # these import optional extras (the mcp SDK, numpy): only when asked for
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'flowroute' has no attribute {name!r}")


__all__ = [
    "Budget",
    "Cascade",
    "Confidence",
    "ExecutableCalls",
    "FlowrouteError",
    "Handle",
    "InputError",
    "Judge",
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
    "PlanMemory",
    "Predicate",
    "Problem",
    "RunFailedError",
    "RunInterrupted",
    "RunOptions",
    "RunResult",
    "SchemaCheck",
    "SelfConsistency",
    "Settings",
    "Tool",
    "ToolDocument",
    "ToolError",
    "ToolHit",
    "ToolIndex",
    "Verdict",
    "Verifier",
    "Workflow",
    "WorkflowDefinitionError",
    "agent",
    "call_tool",
    "cascade",
    "first_of",
    "llm",
    "load",
    "loads",
    "map",
    "models",
    "plan_search",
    "route",
    "tool",
    "when",
    "workflow",
]
