"""Cascades: try a small model first, escalate to larger ones only when verifiers reject.

A `Cascade` stands wherever a model reference does (`model=` of an LLM or agent node). Each
answer goes through the cascade's verifiers; the first answer that passes is used. An agent
cascades at every step. Budgets (per node, and per run through `RunOptions(budget=...)`) stop
escalation; when no answer passes, `on_exhausted` picks the best-scoring one or fails the node.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

from flowroute.cascade.verifiers import Attempt, Confidence, Verdict, Verifier
from flowroute.errors import ModelError, NodeError

if TYPE_CHECKING:
    from flowroute.engine.context import NodeContext
    from flowroute.models.base import ModelRequest, ModelResponse

__all__ = ["Budget", "Cascade", "cascade"]


@dataclass(frozen=True)
class Budget:
    """Limits on escalation. Unset limits do not apply.

    `max_cost` (USD) and `max_latency` (seconds) count what was already spent (by the node, or
    by the whole run for a run budget); `max_escalations` counts moves to a larger model.
    Calls whose cost is unknown count as 0.
    """

    max_cost: float | None = None
    max_latency: float | None = None
    max_escalations: int | None = None

    def exceeded(self, cost: float, elapsed: float, escalations: int) -> str | None:
        """Why no further escalation is allowed, or None."""
        if self.max_cost is not None and cost >= self.max_cost:
            return f"cost ${cost:.6f} reached max_cost ${self.max_cost:g}"
        if self.max_latency is not None and elapsed >= self.max_latency:
            return f"{elapsed:.2f}s reached max_latency {self.max_latency:g}s"
        if self.max_escalations is not None and escalations >= self.max_escalations:
            return f"{escalations} escalation(s) reached max_escalations {self.max_escalations}"
        return None


@dataclass(frozen=True)
class Cascade:
    """Models tried in order (cheapest first); each answer must pass every verifier."""

    models: tuple[Any, ...]
    verifiers: tuple[Verifier, ...] = ()
    on_exhausted: Literal["best", "error"] = "best"
    """When no answer passes: `best` uses the highest-scoring answer, `error` fails the node."""
    budget: Budget = field(default_factory=Budget)

    @property
    def name(self) -> str:
        from flowroute.models.registry import describe_ref

        return "cascade(" + " -> ".join(describe_ref(m) for m in self.models) + ")"

    def check(self, declared: Any = None) -> list[str]:
        from flowroute.models.registry import check_model_ref, describe_ref

        if not self.models:
            return ["a cascade needs at least one model"]
        out = []
        for m in self.models:
            out += [f"in {describe_ref(m)}: {why}" for why in check_model_ref(m, declared)]
        for v in self.verifiers:
            if not isinstance(v, Verifier):
                out.append(f"not a verifier: {v!r}")
        return out

    async def generate(self, ctx: NodeContext, request: ModelRequest) -> ModelResponse:
        """Run the cascade for one request; every attempt lands in `ctx.record.cascade`."""
        if any(isinstance(v, Confidence) for v in self.verifiers) and not request.settings.logprobs:
            request = replace(request, settings=replace(request.settings, logprobs=True))
        record = ctx.record
        start = time.perf_counter()
        tried: list[tuple[ModelResponse, list[Verdict]]] = []
        failures: list[str] = []
        for i, ref in enumerate(self.models):
            if i > 0:
                stop = (
                    self.budget.exceeded(
                        _known_cost(record), time.perf_counter() - start, record.escalations
                    )
                    or ctx.run.budget_stop()
                )
                if stop:
                    record.cascade.append({"stopped": stop})
                    failures.append(f"escalation stopped: {stop}")
                    break
                record.escalations += 1
                ctx.run.escalations += 1
            model_name = _name(ref)
            t0 = time.perf_counter()
            calls_before = len(record.calls)
            try:
                response = await ctx.generate(ref, request)
            except ModelError as exc:
                verdict = Verdict("schema", False, 0.0, str(exc))
                record.cascade.append(_entry(model_name, [verdict], record, calls_before, t0))
                failures.append(f"{model_name}: {exc}")
                continue
            verdicts = [Verdict("schema", True, 1.0, "valid")]
            attempt = Attempt(request, ref, response, ctx)
            for verifier in self.verifiers:
                verdicts.append(await verifier.verify(attempt))
            entry = _entry(model_name, verdicts, record, calls_before, t0)
            record.cascade.append(entry)
            if entry["passed"]:
                record.answered_by = response.model
                return response
            tried.append((response, verdicts))
            failed = "; ".join(f"{v.verifier}: {v.reason}" for v in verdicts if not v.passed)
            failures.append(f"{model_name}: {failed}")
        if tried and self.on_exhausted == "best":
            best, verdicts = max(tried, key=lambda t: _mean(t[1]))
            record.answered_by = best.model
            record.cascade.append(
                {"exhausted": True, "chose": best.model, "score": round(_mean(verdicts), 4)}
            )
            return best
        raise NodeError(
            ctx.node.name, "no answer passed the verifiers:\n  " + "\n  ".join(failures)
        )


def _mean(verdicts: Sequence[Verdict]) -> float:
    return sum(v.score for v in verdicts) / len(verdicts)


def _known_cost(record: Any) -> float:
    return sum(c.cost or 0.0 for c in record.calls)


def _name(ref: Any) -> str:
    from flowroute.models.registry import describe_ref

    return describe_ref(ref)


def _entry(
    model: str, verdicts: list[Verdict], record: Any, calls_before: int, t0: float
) -> dict[str, Any]:
    calls = record.calls[calls_before:]
    costs = [c.cost for c in calls]
    return {
        "model": model,
        "passed": all(v.passed for v in verdicts),
        "verdicts": [v.as_dict() for v in verdicts],
        "latency": round(time.perf_counter() - t0, 4),
        "cost": None if any(c is None for c in costs) else sum(c or 0.0 for c in costs),
        "tokens": sum(c.prompt_tokens + c.completion_tokens for c in calls),
    }


def cascade(
    *models: Any,
    verifiers: Sequence[Verifier] = (),
    on_exhausted: Literal["best", "error"] = "best",
    max_cost: float | None = None,
    max_latency: float | None = None,
    max_escalations: int | None = None,
) -> Cascade:
    """A cascade over `models` (cheapest first), usable as any node's `model`.

    Example:
        ```python
        model = fr.cascade("local", "openai/gpt-4o-mini",
                           verifiers=[fr.Confidence(min_mean=0.8)], max_cost=0.01)
        ```
    """
    return Cascade(
        tuple(models),
        tuple(verifiers),
        on_exhausted,
        Budget(max_cost, max_latency, max_escalations),
    )
