"""A guarded query router: sends an input to one named branch, or rejects it.

Routes are described by example utterances (and optionally a description). The default
method is local and fast: the input is embedded by the packaged MiniLM model and scored
against each route's examples (k nearest neighbours, or the route's centroid). When the best
score is under the out-of-domain threshold the input goes to the reject branch. The threshold
is calibrated from the examples (leave-one-out), and from off-domain examples when given.
Optionally, inputs whose top two routes are close are sent to an LLM classifier.

The router's output is the route's name; branch on it with `when`.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import anyio

from flowroute.errors import NodeError, Problem
from flowroute.graph.nodes import Node
from flowroute.graph.types import TypeSpec

if TYPE_CHECKING:
    import numpy as np

    from flowroute.engine.context import NodeContext
    from flowroute.graph.workflow import Workflow

__all__ = ["Route", "RouterNode", "Routing"]


@dataclass(frozen=True)
class Route:
    """A branch: example utterances that belong to it, and an optional description."""

    examples: tuple[str, ...]
    description: str = ""


@dataclass(frozen=True)
class Routing:
    """One routing decision: the route, every route's score, and why."""

    route: str
    scores: Mapping[str, float]
    threshold: float
    margin: float
    by: Literal["embedding", "llm"] = "embedding"
    latency: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "route": self.route,
            "scores": {k: round(v, 4) for k, v in self.scores.items()},
            "threshold": round(self.threshold, 4),
            "margin": round(self.margin, 4),
            "by": self.by,
            "latency": round(self.latency, 5),
        }


@dataclass
class _Fitted:
    names: list[str]
    matrix: np.ndarray  # one row per example
    labels: np.ndarray  # route index of each row
    centroids: np.ndarray
    threshold: float


_fitted: dict[str, _Fitted] = {}
_fit_lock = threading.Lock()


@dataclass(frozen=True, kw_only=True)
class RouterNode(Node):
    """Route the input `text` to one of `routes` by name, or to `reject`.

    `threshold`: the lowest score an in-domain input has (None: calibrated from the examples,
    keeping about `keep` of them in domain, or balancing against `reject_examples`).
    `method`: `knn` (mean similarity to the route's `k` nearest examples) or `centroid`.
    `fallback`: a model asked (constrained to the route names) when the top two routes are
    within `margin` of each other, or the best is within `margin` of the threshold.
    """

    kind: ClassVar[str] = "router"

    routes: Mapping[str, Route]
    reject: str = "reject"
    threshold: float | None = None
    reject_examples: tuple[str, ...] = ()
    method: Literal["knn", "centroid"] = "knn"
    k: int = 3
    keep: float = 0.95
    fallback: Any = None
    margin: float = 0.03
    embedder: Any = None

    def __post_init__(self) -> None:
        names = [*self.routes, self.reject]
        object.__setattr__(
            self, "output_type", TypeSpec.from_schema({"type": "string", "enum": names})
        )

    @property
    def model_ref(self) -> Any:
        return self.fallback

    def check(self, workflow: Workflow[Any]) -> list[Problem]:
        out: list[Problem] = []
        if "text" not in self.inputs:
            out.append(Problem("error", "a router needs its input text", node=self.name))
        if len(self.routes) < 1:
            out.append(Problem("error", "a router needs at least one route", node=self.name))
        for name, route in self.routes.items():
            if not route.examples:
                out.append(
                    Problem(
                        "error",
                        f"route '{name}' has no examples",
                        node=self.name,
                        field=f"routes.{name}",
                    )
                )
        if self.reject in self.routes:
            out.append(
                Problem(
                    "error",
                    f"the reject branch '{self.reject}' is also a route",
                    node=self.name,
                    field="reject",
                )
            )
        if self.fallback is not None:
            from flowroute.models.registry import check_model_ref

            out += [
                Problem("error", why, node=self.name, field="fallback")
                for why in check_model_ref(self.fallback, workflow.models)
            ]
        return out

    # -- fitting -------------------------------------------------------------------------------

    def _embedder(self) -> Any:
        if self.embedder is not None:
            return self.embedder
        from flowroute.retrieval.embedder import default_embedder

        return default_embedder()

    def _key(self) -> str:
        payload = json.dumps(
            [
                self._embedder().name,
                {n: [list(r.examples), r.description] for n, r in self.routes.items()},
                list(self.reject_examples),
                self.method,
                self.k,
                self.keep,
                self.threshold,
            ]
        )
        return hashlib.sha256(payload.encode()).hexdigest()

    def fit(self) -> _Fitted:
        """Embed the examples and calibrate the threshold (once per process per router)."""
        import numpy as np

        key = self._key()
        with _fit_lock:
            found = _fitted.get(key)
        if found is not None:
            return found
        names = list(self.routes)
        texts = [e for r in self.routes.values() for e in r.examples]
        labels = np.array([i for i, r in enumerate(self.routes.values()) for _ in r.examples])
        embedder = self._embedder()
        matrix = embedder.embed(texts)
        centroids = np.stack([matrix[labels == i].mean(axis=0) for i in range(len(names))])
        centroids /= np.linalg.norm(centroids, axis=1, keepdims=True) + 1e-12
        fitted = _Fitted(names, matrix, labels, centroids, 0.0)
        if self.threshold is not None:
            fitted.threshold = self.threshold
        else:
            own = [
                self._scores(fitted, matrix[i], leave_out=i)[labels[i]] for i in range(len(texts))
            ]
            if self.reject_examples:
                off = [
                    float(self._scores(fitted, v).max())
                    for v in embedder.embed(list(self.reject_examples))
                ]
                fitted.threshold = _balanced_threshold(own, off)
            else:
                fitted.threshold = float(np.quantile(own, 1 - self.keep))
        with _fit_lock:
            _fitted[key] = fitted
        return fitted

    def _scores(self, fitted: _Fitted, vector: np.ndarray, leave_out: int = -1) -> np.ndarray:
        import numpy as np

        if self.method == "centroid" and leave_out < 0:
            out: np.ndarray = np.einsum("ij,j->i", fitted.centroids, vector, optimize=False)
            return out
        sims = np.einsum("ij,j->i", fitted.matrix, vector, optimize=False)
        scores = np.full(len(fitted.names), -1.0)
        for i in range(len(fitted.names)):
            mask = fitted.labels == i
            if leave_out >= 0:
                mask[leave_out] = False
            own = np.sort(sims[mask])[::-1]
            if own.size == 0:
                continue
            if self.method == "centroid":
                centroid = fitted.matrix[mask].mean(axis=0)
                scores[i] = float(centroid @ vector) / (float(np.linalg.norm(centroid)) + 1e-12)
            else:
                scores[i] = float(own[: self.k].mean())
        return scores

    # -- routing -------------------------------------------------------------------------------

    def classify(self, text: str) -> Routing:
        """Route `text` by embeddings alone (no fallback); thread-safe, blocking."""
        start = time.perf_counter()
        fitted = self.fit()
        vector = self._embedder().embed([text])[0]
        scores = self._scores(fitted, vector)
        order = scores.argsort()[::-1]
        best = float(scores[order[0]])
        second = float(scores[order[1]]) if len(order) > 1 else -1.0
        route = fitted.names[order[0]] if best >= fitted.threshold else self.reject
        return Routing(
            route,
            dict(zip(fitted.names, map(float, scores), strict=True)),
            fitted.threshold,
            best - second,
            latency=time.perf_counter() - start,
        )

    def _uncertain(self, routing: Routing) -> bool:
        best = max(routing.scores.values())
        return routing.margin < self.margin or abs(best - routing.threshold) < self.margin

    async def execute(self, args: dict[str, Any], ctx: NodeContext) -> Any:
        text = args.get("text")
        if not isinstance(text, str):
            raise NodeError(self.name, f"the router's input must be a string, got {text!r}")
        routing = await anyio.to_thread.run_sync(self.classify, text)
        entry = routing.as_dict()
        if self.fallback is not None and self._uncertain(routing):
            route = await self._ask(text, ctx)
            entry["embedding_route"] = routing.route
            entry["route"], entry["by"] = route, "llm"
            ctx.record.trace.append(entry)
            return route
        ctx.record.trace.append(entry)
        return routing.route

    async def _ask(self, text: str, ctx: NodeContext) -> str:
        from flowroute.models.base import ModelRequest, Settings
        from flowroute.structured.constraint import OutputConstraint

        lines = []
        for name, route in self.routes.items():
            shown = "; ".join(route.examples[:3])
            about = f"{route.description} " if route.description else ""
            lines.append(f"- {name}: {about}(e.g. {shown})")
        lines.append(f"- {self.reject}: anything that belongs to none of the above")
        prompt = (
            "Choose the category of the message.\n\nCategories:\n"
            + "\n".join(lines)
            + f"\n\nMessage: {text}\nCategory:"
        )
        choices = [*self.routes, self.reject]
        request = ModelRequest(
            prompt=prompt,
            constraint=OutputConstraint.json_schema({"type": "string", "enum": choices}),
            settings=Settings(max_tokens=16),
        )
        response = await ctx.generate(self.fallback, request)
        return str(response.value)

    def label(self) -> str:
        return f"router: {self.name} ({', '.join(self.routes)} | {self.reject})"


def _balanced_threshold(own: Sequence[float], off: Sequence[float]) -> float:
    """The threshold maximising the mean of in-domain recall and off-domain rejection."""
    candidates = sorted({*own, *off})
    best_t, best = candidates[0], -1.0
    for t in candidates:
        kept = sum(1 for s in own if s >= t) / len(own)
        rejected = sum(1 for s in off if s < t) / len(off)
        score = (kept + rejected) / 2
        if score > best:
            best_t, best = t, score
    return best_t


def routes_from(spec: Mapping[str, Any]) -> dict[str, Route]:
    """Routes from `{name: [examples]}`, `{name: Route}` or `{name: {"examples": ...,
    "description": ...}}`."""
    out: dict[str, Route] = {}
    for name, value in spec.items():
        if isinstance(value, Route):
            out[name] = value
        elif isinstance(value, Mapping):
            out[name] = Route(tuple(value.get("examples", ())), str(value.get("description", "")))
        else:
            out[name] = Route(tuple(value))
    return out
