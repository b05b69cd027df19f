"""Run results: the typed output plus one record per node. Nothing computed is dropped."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import TypeAdapter

from flowroute.errors import RunFailedError

__all__ = ["ModelCall", "NodeRecord", "NodeStatus", "RunResult", "RunStatus"]

Out = TypeVar("Out")
NodeStatus = Literal["pending", "running", "succeeded", "failed", "skipped", "cancelled"]
RunStatus = Literal["running", "succeeded", "failed", "cancelled"]

_ANY: TypeAdapter[Any] = TypeAdapter(Any)


def jsonable(value: Any) -> Any:
    """Plain JSON data for any value flowroute produces (pydantic models dumped)."""
    try:
        return _ANY.dump_python(value, mode="json")
    except Exception:
        return repr(value)


@dataclass
class ModelCall:
    """One call to a model, as seen by a node (several with retries, repairs or cascades)."""

    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency: float = 0.0
    cost: float | None = None
    """In USD; None when the price is unknown (never silently zero)."""
    constrained: bool = False
    """Whether a grammar constraint was actually applied during decoding."""
    ok: bool = True
    error: str | None = None


@dataclass
class NodeRecord:
    """What happened to one node during a run."""

    name: str
    kind: str
    status: NodeStatus = "pending"
    started_at: datetime | None = None
    ended_at: datetime | None = None
    attempts: int = 0
    model: str | None = None
    calls: list[ModelCall] = field(default_factory=list)
    output: Any = None
    partial_output: Any = None
    """What a failed node had computed before failing (e.g. finished items of a map)."""
    error: str | None = None
    error_type: str | None = None
    skip_reason: str | None = None
    wait_time: float = 0.0
    """Seconds spent waiting for a model's concurrency slot (included in `duration`)."""
    trace: list[Any] = field(default_factory=list)
    """Node-kind detail: an agent's steps and tool calls, a search tree, ..."""
    retrievals: list[dict[str, Any]] = field(default_factory=list)
    """Tool retrievals: the query, and the tools found with their scores and ranks."""
    cascade: list[dict[str, Any]] = field(default_factory=list)
    """Cascade attempts: the model, each verifier's verdict, cost, latency."""
    escalations: int = 0
    """How many times a cascade moved on to a larger model."""
    answered_by: str | None = None
    """The model whose answer a cascade accepted (or chose, when none passed)."""

    @property
    def duration(self) -> float | None:
        if self.started_at is None or self.ended_at is None:
            return None
        return (self.ended_at - self.started_at).total_seconds()

    @property
    def prompt_tokens(self) -> int:
        return sum(c.prompt_tokens for c in self.calls)

    @property
    def completion_tokens(self) -> int:
        return sum(c.completion_tokens for c in self.calls)

    @property
    def cost(self) -> float | None:
        """Total cost in USD, or None if any call's price is unknown."""
        costs = [c.cost for c in self.calls]
        if any(c is None for c in costs):
            return None
        return sum(c for c in costs if c is not None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "status": self.status,
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "ended_at": self.ended_at.isoformat() if self.ended_at else None,
            "duration": self.duration,
            "attempts": self.attempts,
            "wait_time": self.wait_time,
            "model": self.model,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost": self.cost if self.calls else 0.0,
            "calls": [jsonable(c.__dict__) for c in self.calls],
            "output": jsonable(self.output),
            "partial_output": jsonable(self.partial_output),
            "error": self.error,
            "error_type": self.error_type,
            "skip_reason": self.skip_reason,
            "trace": jsonable(self.trace),
            "retrievals": jsonable(self.retrievals),
            "cascade": jsonable(self.cascade),
            "escalations": self.escalations,
            "answered_by": self.answered_by,
        }


@dataclass
class RunResult(Generic[Out]):
    """The outcome of a run: `output` (typed) and `records` (one per node, always complete)."""

    workflow: str
    inputs: dict[str, Any]
    records: dict[str, NodeRecord]
    status: RunStatus = "running"
    started_at: datetime = field(default_factory=datetime.now)
    ended_at: datetime | None = None
    error: str | None = None
    server_logs: dict[str, str] = field(default_factory=dict)
    """What each MCP server wrote to stderr during the run (stdio servers)."""
    _output: Any = None

    @property
    def ok(self) -> bool:
        return self.status == "succeeded"

    @property
    def output(self) -> Out:
        """The workflow's output; raises `RunFailedError` (carrying this result) if it failed."""
        if self.status != "succeeded":
            raise RunFailedError(self, f"workflow '{self.workflow}' {self.status}: {self.error}")
        return self._output  # type: ignore[no-any-return]

    @property
    def failed(self) -> list[NodeRecord]:
        return [r for r in self.records.values() if r.status == "failed"]

    @property
    def duration(self) -> float | None:
        return (self.ended_at - self.started_at).total_seconds() if self.ended_at else None

    @property
    def cost(self) -> float | None:
        costs = [r.cost for r in self.records.values() if r.calls]
        if any(c is None for c in costs):
            return None
        return sum(c for c in costs if c is not None)

    @property
    def total_tokens(self) -> int:
        return sum(r.prompt_tokens + r.completion_tokens for r in self.records.values())

    def metrics(self) -> dict[str, Any]:
        """Usage by model, and cascade outcomes.

        `models`: per model, calls (failed ones too), tokens, cost (None if any price is
        unknown) and summed latency. `escalations`: cascade moves to a larger model in the run;
        `answered_by`: per cascading node, the model whose answer was used; `fallback_nodes`:
        nodes answered by a model other than their cascade's first.
        """
        models: dict[str, dict[str, Any]] = {}
        for record in self.records.values():
            for call in record.calls:
                m = models.setdefault(
                    call.model,
                    {
                        "calls": 0,
                        "prompt_tokens": 0,
                        "completion_tokens": 0,
                        "cost": 0.0,
                        "latency": 0.0,
                    },
                )
                m["calls"] += 1
                m["prompt_tokens"] += call.prompt_tokens
                m["completion_tokens"] += call.completion_tokens
                m["latency"] += call.latency
                m["cost"] = (
                    None if m["cost"] is None or call.cost is None else m["cost"] + call.cost
                )
        answered = {n: r.answered_by for n, r in self.records.items() if r.answered_by}
        fallback = [
            n
            for n, r in self.records.items()
            if r.cascade and r.answered_by and r.cascade[0].get("model") != r.answered_by
        ]
        return {
            "models": models,
            "escalations": sum(r.escalations for r in self.records.values()),
            "answered_by": answered,
            "fallback_nodes": fallback,
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, as printed by `flowroute run --json`."""
        return {
            "workflow": self.workflow,
            "status": self.status,
            "error": self.error,
            "output": jsonable(self._output) if self.ok else None,
            "duration": self.duration,
            "total_tokens": self.total_tokens,
            "cost": self.cost,
            "metrics": self.metrics(),
            "nodes": {name: r.to_dict() for name, r in self.records.items()},
            "server_logs": self.server_logs,
        }
