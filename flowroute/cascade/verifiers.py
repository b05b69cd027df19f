"""Verifiers: checks an answer must pass before a cascade accepts it.

Each returns a `Verdict` (pass/fail, a score in [0, 1], a reason). They compose in a list: an
answer is accepted when every verifier passes. Schema validity is always checked first (an
answer that does not validate never reaches the others).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import jsonschema

from flowroute.errors import ModelError
from flowroute.structured.constraint import OutputConstraint

if TYPE_CHECKING:
    from flowroute.engine.context import NodeContext
    from flowroute.models.base import ModelRequest, ModelResponse

__all__ = [
    "Attempt",
    "Confidence",
    "ExecutableCalls",
    "Judge",
    "Predicate",
    "SchemaCheck",
    "SelfConsistency",
    "Verdict",
    "Verifier",
]


@dataclass(frozen=True)
class Verdict:
    """One verifier's judgement of one answer."""

    verifier: str
    passed: bool
    score: float
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "verifier": self.verifier,
            "passed": self.passed,
            "score": round(self.score, 4),
            "reason": self.reason,
        }


@dataclass
class Attempt:
    """An answer under verification: the request, the model that answered, its response."""

    request: ModelRequest
    model_ref: Any
    response: ModelResponse
    ctx: NodeContext

    @property
    def value(self) -> Any:
        return self.response.value if self.request.constraint is not None else self.response.text

    async def resample(self, n: int, temperature: float) -> list[ModelResponse]:
        """`n` more answers from the same model, sampled (each recorded as a model call)."""
        out = []
        base = self.request.settings
        for i in range(n):
            seed = (base.seed or 0) + 1 + i
            settings = replace(base, temperature=temperature, seed=seed, logprobs=False)
            request = replace(self.request, settings=settings)
            out.append(await self.ctx.generate(self.model_ref, request))
        return out


@runtime_checkable
class Verifier(Protocol):
    """Judges an attempt. `name` labels its verdicts in the node's record."""

    @property
    def name(self) -> str: ...

    async def verify(self, attempt: Attempt) -> Verdict: ...


@dataclass(frozen=True)
class SchemaCheck:
    """The answer validates against `schema` (in addition to the node's own output type)."""

    schema: Mapping[str, Any]
    name: str = "schema"

    async def verify(self, attempt: Attempt) -> Verdict:
        validator = jsonschema.Draft202012Validator(dict(self.schema))
        errors = sorted(validator.iter_errors(attempt.value), key=lambda e: list(e.path))
        if errors:
            shown = "; ".join(
                f"{'.'.join(map(str, e.path)) or '<root>'}: {e.message}" for e in errors[:3]
            )
            return Verdict(self.name, False, 0.0, shown)
        return Verdict(self.name, True, 1.0, "valid")


@dataclass(frozen=True)
class Predicate:
    """`fn(value)` returns a bool, a score in [0, 1] (passing at `threshold`), or
    `(passed, reason)`."""

    fn: Callable[[Any], Any]
    name: str = "predicate"
    threshold: float = 0.5

    async def verify(self, attempt: Attempt) -> Verdict:
        try:
            out = self.fn(attempt.value)
        except Exception as exc:
            return Verdict(self.name, False, 0.0, f"raised {type(exc).__name__}: {exc}")
        if isinstance(out, tuple):
            ok, reason = bool(out[0]), str(out[1])
            return Verdict(self.name, ok, float(ok), reason)
        if isinstance(out, bool):
            return Verdict(self.name, out, float(out), "true" if out else "false")
        score = float(out)
        return Verdict(self.name, score >= self.threshold, score, f"score {score:.3f}")


@dataclass(frozen=True)
class Confidence:
    """The model's own token probabilities: the mean (geometric, `exp(mean logprob)`) must be
    at least `min_mean`, and the least likely token at least `min_token` (when set).

    Needs a backend that returns logprobs (the embedded local model does; the cascade asks
    for them). An answer without logprobs fails, with that reason.
    """

    min_mean: float = 0.7
    min_token: float | None = None
    name: str = "confidence"

    async def verify(self, attempt: Attempt) -> Verdict:
        logprobs = attempt.response.logprobs
        if not logprobs:
            return Verdict(self.name, False, 0.0, "the model returned no token logprobs")
        mean = math.exp(sum(logprobs) / len(logprobs))
        low = math.exp(min(logprobs))
        reasons = []
        if mean < self.min_mean:
            reasons.append(f"mean token probability {mean:.3f} < {self.min_mean}")
        if self.min_token is not None and low < self.min_token:
            reasons.append(f"lowest token probability {low:.3f} < {self.min_token}")
        detail = f"mean {mean:.3f}, lowest {low:.3f}"
        return Verdict(self.name, not reasons, mean, "; ".join(reasons) or detail)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


@dataclass(frozen=True)
class SelfConsistency:
    """Sample `k - 1` more answers (at `temperature`); at least `min_agreement` of the `k`
    must equal the first (by `key`, canonical JSON by default)."""

    k: int = 3
    temperature: float = 0.7
    min_agreement: float = 1.0
    key: Callable[[Any], Any] | None = None
    name: str = "self_consistency"

    async def verify(self, attempt: Attempt) -> Verdict:
        key = self.key or _canonical
        others = await attempt.resample(self.k - 1, self.temperature)
        values = [attempt.value]
        for r in others:
            values.append(r.value if attempt.request.constraint is not None else r.text)
        keys = [key(v) for v in values]
        agree = sum(1 for k in keys if k == keys[0]) / len(keys)
        counts = Counter(keys).most_common(1)[0][1]
        return Verdict(
            self.name,
            agree >= self.min_agreement,
            agree,
            f"{round(agree * len(keys))}/{len(keys)} samples agree with the answer "
            f"(largest group {counts})",
        )


_JUDGE_PROMPT = """You check answers.

Request:
{request}

Answer:
{answer}

{question} Reply yes or no.
Verdict:"""


@dataclass(frozen=True)
class Judge:
    """Ask `model` a yes/no `question` about the answer (constrained to "yes" or "no").

    The score is the judge's probability of "yes" when it returns logprobs, else 1 or 0.
    """

    model: Any
    question: str = "Is the answer correct and complete for the request?"
    name: str = "judge"

    async def verify(self, attempt: Attempt) -> Verdict:
        from flowroute.models.base import ModelRequest, Settings

        request_text = attempt.request.as_prompt()
        answer = attempt.response.text
        prompt = _JUDGE_PROMPT.format(
            request=request_text[-2000:], answer=answer[:2000], question=self.question
        )
        judge_request = ModelRequest(
            prompt=prompt,
            constraint=OutputConstraint.json_schema({"type": "string", "enum": ["yes", "no"]}),
            settings=Settings(max_tokens=4, logprobs=True),
        )
        try:
            response = await attempt.ctx.generate(self.model, judge_request)
        except ModelError as exc:
            return Verdict(self.name, False, 0.0, f"the judge failed: {exc}")
        said = str(response.value)
        score = float(said == "yes")
        if response.logprobs:
            p = math.exp(sum(response.logprobs))
            score = p if said == "yes" else 1.0 - p
        return Verdict(self.name, said == "yes", score, f"the judge said {said}")


@dataclass(frozen=True)
class ExecutableCalls:
    """Every tool call in the answer names an offered tool and has arguments valid for it:
    native tool calls against the request's tools, JSON steps (`{"calls": [...]}`) against
    the step's schema."""

    name: str = "executable_calls"

    async def verify(self, attempt: Attempt) -> Verdict:
        request, response = attempt.request, attempt.response
        problems: list[str] = []
        total = 0
        if response.tool_calls:
            tools = {t["name"]: t.get("parameters") or {} for t in request.tools}
            for call in response.tool_calls:
                total += 1
                schema = tools.get(call["name"])
                if schema is None:
                    problems.append(f"unknown tool '{call['name']}'")
                    continue
                errors = list(
                    jsonschema.Draft202012Validator(schema).iter_errors(call["arguments"])
                )
                if errors:
                    problems.append(f"{call['name']}: {errors[0].message}")
        elif isinstance(attempt.value, dict) and "calls" in attempt.value:
            total = len(attempt.value["calls"])
            if request.constraint is not None and request.constraint.schema:
                errors = list(
                    jsonschema.Draft202012Validator(request.constraint.schema).iter_errors(
                        attempt.value
                    )
                )
                problems += [e.message for e in errors[:3]]
        if problems:
            return Verdict(self.name, False, 1 - len(problems) / max(total, 1), "; ".join(problems))
        return Verdict(self.name, True, 1.0, f"{total} call(s) executable")
