"""Cascades on BFCL v4: small model only, large model only, and cascades with each verifier.

Each sampled BFCL question (simple, multiple, parallel, parallel_multiple) is a task: produce
the call(s) under flowroute's constrained step schema; success is BFCL's own AST check against
the possible answers. Every policy answers every task in one run, and reports accuracy, cost
per successful task (token prices are parameters), fallback rate, and latency.

Policies:

- `small`, `large`: one model alone;
- `cascade+executable`: escalate when the answer is not an executable call (or fails);
- `cascade+confidence`: escalate when the mean token probability is under `--threshold`;
- `cascade+consistency`: escalate when 3 samples of the small model disagree;
- `cascade+self-judge`: escalate when the small model, asked, does not confirm its answer
  (AutoMix-style self-verification).

Model calls are memoised by request, so a cascade's first attempt reuses the small model's
answer (with the latency it had when computed): every policy sees the same answers.

Setup and run (never downloads anything at run time):

    pip install ".[local,litellm]" && pip install --no-deps bfcl-eval
    python benchmarks/cascade.py --per-category 5 --large local          # harness check
    python benchmarks/cascade.py --large openai/gpt-4o-mini --large-price 0.6
    python benchmarks/cascade.py --large openai/qwen --large-api-base http://127.0.0.1:8080/v1
    python benchmarks/cascade.py --large local:/models/qwen2.5-7b-q4.gguf

The small model is the embedded Gemma 3 270M. This is a benchmark script, not a test.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent))

import tool_calls as tc

import flowroute as fr
from flowroute.models.base import Model, ModelRequest, ModelResponse
from flowroute.tools.calls import step_schema

CATEGORIES = ("simple", "multiple", "parallel", "parallel_multiple")


class Memo(Model):
    """Remembers responses by request, so every policy sees the same answer to a request."""

    def __init__(self, inner: Model) -> None:
        self.inner = inner
        self.name = inner.name
        self.cache: dict[str, ModelResponse] = {}
        self.max_concurrency = 1

    async def generate(self, request: ModelRequest) -> ModelResponse:
        key = repr((request.prompt, request.messages, request.settings)) + (
            json.dumps(request.constraint.schema, sort_keys=True) if request.constraint else ""
        )
        if key not in self.cache:
            self.cache[key] = await self.inner.generate(request)
        return replace(self.cache[key])


@dataclass
class Outcome:
    policy: str
    id: str
    correct: bool
    executable: bool
    valid: bool
    cost: float
    latency: float
    escalated: bool
    answered_by: str


def priced(record: fr.NodeRecord, prices: dict[str, float]) -> float:
    return sum(
        (c.prompt_tokens + c.completion_tokens) * prices.get(c.model, 0.0) / 1e6
        for c in record.calls
    )


async def run_task(
    policy: str, model: Any, q: tc.Question, check: Any, prices: dict[str, float], calls: int
) -> Outcome:
    schema = step_schema(q.tools, tc.FINAL_SCHEMA, max_calls=calls)

    @fr.llm(model=model, output=schema, settings={"max_tokens": 256})
    def answer(request: str) -> str:
        return tc.build_prompt(q)

    @fr.workflow
    def task(request: str) -> Any:
        return answer(request)

    start = time.perf_counter()
    result = await task.arun(request=q.text)
    wall = time.perf_counter() - start
    record = next(iter(result.records.values()))
    value = record.output if record.status == "succeeded" else None
    parsed, _final, proposed = tc.as_step(value)
    res = tc._score(tc.Result(q.id, q.category, policy, calls=proposed, parsed=parsed), q, check)
    latency = sum(c.latency for c in record.calls) or wall
    return Outcome(
        policy,
        q.id,
        res.correct,
        res.executable,
        parsed,
        priced(record, prices),
        latency,
        record.escalations > 0,
        record.answered_by or (record.calls[-1].model if record.calls else ""),
    )


def report(outcomes: Sequence[Outcome], policies: Sequence[str]) -> str:
    lines = [
        "| policy | accuracy | schema-valid | executable | cost / successful task | "
        "fallback rate | p50 s | p95 s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in policies:
        rows = [o for o in outcomes if o.policy == p]
        right = sum(o.correct for o in rows)
        cost = sum(o.cost for o in rows)
        lat = sorted(o.latency for o in rows)
        per_success = f"${cost / right:.6f}" if right else "n/a"
        lines.append(
            f"| {p} | {right / len(rows):.0%} | {sum(o.valid for o in rows) / len(rows):.0%} "
            f"| {sum(o.executable for o in rows) / len(rows):.0%} | {per_success} "
            f"| {sum(o.escalated for o in rows) / len(rows):.0%} "
            f"| {statistics.median(lat):.1f} | {lat[min(len(lat) - 1, int(0.95 * len(lat)))]:.1f} |"
        )
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> None:
    from flowroute.models.registry import resolve_model

    rng = random.Random(args.seed)
    questions: list[tc.Question] = []
    for cat in CATEGORIES:
        pool = tc.load_category(cat)
        questions += rng.sample(pool, min(args.per_category, len(pool)))
    check = tc._bfcl_checker()
    small = Memo(resolve_model("local"))
    large_inner: Model
    if args.large_api_base:
        from flowroute.models.litellm_model import LiteLLMModel

        large_inner = LiteLLMModel(args.large, api_base=args.large_api_base)
    else:
        large_inner = resolve_model(args.large)
    # the same model as both is a harness check: share its answers
    large = small if large_inner is small.inner else Memo(large_inner)
    large_name = f"large:{large_inner.name}"  # a distinct name even when it is the same model
    prices = {small.name: args.small_price, large_name: args.large_price}

    class Named(Model):
        def __init__(self, inner: Memo, name: str) -> None:
            self.inner, self.name, self.max_concurrency = inner, name, 1

        async def generate(self, request: ModelRequest) -> ModelResponse:
            response = await self.inner.generate(request)
            return replace(response, model=self.name)

    s, big = Named(small, small.name), Named(large, large_name)
    policies: dict[str, Any] = {
        "small": s,
        "large": big,
        "cascade+executable": fr.cascade(s, big, verifiers=[fr.ExecutableCalls()]),
        "cascade+confidence": fr.cascade(
            s, big, verifiers=[fr.Confidence(min_mean=args.threshold)]
        ),
        "cascade+consistency": fr.cascade(s, big, verifiers=[fr.SelfConsistency(k=3)]),
        "cascade+self-judge": fr.cascade(
            s, big, verifiers=[fr.Judge(s, "Is this the right tool call for the request?")]
        ),
    }
    print(
        f"{len(questions)} tasks; small {small.name} (${args.small_price}/Mtok), "
        f"large {large_name} (${args.large_price}/Mtok); confidence threshold {args.threshold}",
        flush=True,
    )
    outcomes: list[Outcome] = []
    for i, q in enumerate(questions, 1):
        calls = 4 if q.category.startswith("parallel") else 1
        for name, model in policies.items():
            outcome = await run_task(name, model, q, check, prices, calls)
            outcomes.append(outcome)
        done = [o for o in outcomes if o.id == q.id]
        print(
            f"[{i}/{len(questions)}] {q.id}: "
            + " ".join(f"{o.policy}={'ok' if o.correct else '-'}" for o in done),
            flush=True,
        )
    print()
    print(report(outcomes, list(policies)))
    if args.out:
        Path(args.out).write_text(json.dumps([o.__dict__ for o in outcomes], indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-category", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--large", default="local", help="litellm string, local, local:/x.gguf")
    parser.add_argument("--large-api-base", help="OpenAI-compatible server for --large")
    parser.add_argument("--small-price", type=float, default=0.02, help="USD per Mtok")
    parser.add_argument("--large-price", type=float, default=0.60, help="USD per Mtok")
    parser.add_argument("--threshold", type=float, default=0.9, help="confidence min_mean")
    parser.add_argument("--out", help="write every outcome as JSON here")
    anyio.run(main_async, parser.parse_args())


if __name__ == "__main__":
    main()
