"""Tool-call validity and accuracy on BFCL v4, with grammar constraints on and off.

Measures how often a model's proposed tool calls are executable (name a real function, and
arguments valid for its schema) and correct (BFCL's AST checker), on the single-turn
categories of the Berkeley Function Calling Leaderboard v4 as shipped in the `bfcl-eval`
PyPI package: simple (python), multiple, parallel, parallel_multiple and irrelevance.

Each sampled question is asked twice, interleaved so machine noise hits both modes alike:

- constraints ON: decoded under flowroute's `step_schema(tools, {"type": "string"})`, which
  admits only `{"calls": [...]}` (real tools, valid arguments) or `{"final": "..."}`;
- constraints OFF: the same prompt, free text; the first JSON object in it is the answer.

Setup (never downloads anything at run time):

    pip install --no-deps bfcl-eval     # its full dependency set pulls in torch, vllm clients...
    python benchmarks/tool_calls.py --per-category 6 --seed 0

The accuracy check is BFCL's own `ast_checker`, imported from the installed package with a
stub for the one module it needs that imports every provider SDK (see `_bfcl_checker`).

This is a benchmark script, not a test: pytest does not collect it.
"""

from __future__ import annotations

import argparse
import importlib.resources
import json
import platform
import random
import statistics
import sys
import time
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import jsonschema

from flowroute.errors import FlowrouteError
from flowroute.graph.types import TypeSpec
from flowroute.models.base import Model, ModelRequest, Settings
from flowroute.structured.constraint import OutputConstraint
from flowroute.tools.calls import ToolCall, describe_tools, parse_step, step_schema

CATEGORIES = {
    # our name -> BFCL v4 file stem (v4 names the plain "simple" category "simple_python")
    "simple": "simple_python",
    "multiple": "multiple",
    "parallel": "parallel",
    "parallel_multiple": "parallel_multiple",
    "irrelevance": "irrelevance",
}
FINAL_SCHEMA: dict[str, Any] = {"type": "string"}
"""The "no tool fits" answer: `{"final": "<string>"}`."""

# -- BFCL data ----------------------------------------------------------------------------------

_TYPES = {"dict": "object", "float": "number", "tuple": "array", "list": "array", "bool": "boolean"}
_DROP = {"optional"}
"""Non-standard BFCL keywords (`"optional": true` appears next to `default`)."""


def convert_schema(node: Any) -> Any:
    """A BFCL parameter schema as JSON Schema: `dict`->object, `float`->number, `tuple`->array,
    `any`-> no type constraint; non-standard keywords dropped."""
    if isinstance(node, list):
        return [convert_schema(v) for v in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP:
            continue
        if key == "type" and isinstance(value, str):
            if value == "any":
                continue
            out["type"] = _TYPES.get(value, value)
        elif key == "properties" and isinstance(value, dict):
            out["properties"] = {name: convert_schema(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties"):
            out[key] = convert_schema(value)
        else:
            out[key] = value
    return out


@dataclass(frozen=True)
class BfclTool:
    """A BFCL function doc as a flowroute tool (ToolLike); never called."""

    name: str
    description: str
    json_schema: dict[str, Any]
    return_type: TypeSpec = field(default_factory=TypeSpec)

    async def call(self, args: dict[str, Any]) -> Any:
        raise NotImplementedError("BFCL functions are only proposed, never executed")


@dataclass
class Question:
    id: str
    category: str
    text: str
    functions: list[dict[str, Any]]
    """The original BFCL function docs (what the AST checker reads)."""
    ground_truth: list[dict[str, Any]] | None
    tools: list[BfclTool] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.tools = [
            BfclTool(f["name"], f.get("description", ""), convert_schema(f["parameters"]))
            for f in self.functions
        ]


def bfcl_data_dir() -> Path:
    try:
        return Path(str(importlib.resources.files("bfcl_eval") / "data"))
    except ModuleNotFoundError:
        sys.exit("bfcl-eval is not installed: pip install --no-deps bfcl-eval")


def load_category(name: str) -> list[Question]:
    data = bfcl_data_dir()
    stem = f"BFCL_v4_{CATEGORIES[name]}.json"
    answers: dict[str, Any] = {}
    answer_file = data / "possible_answer" / stem
    if answer_file.exists():  # irrelevance has none: the right answer is no call
        for line in answer_file.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                answers[row["id"]] = row["ground_truth"]
    out = []
    for line in (data / stem).read_text().splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        turns = row["question"]
        # every question in these categories is one turn with one user message
        text = "\n".join(m["content"] for m in turns[0] if m["role"] == "user")
        out.append(Question(row["id"], name, text, row["function"], answers.get(row["id"])))
    return out


def _bfcl_checker() -> Callable[..., dict[str, Any]]:
    """BFCL's own `ast_checker`, imported without its provider SDKs.

    `ast_checker` imports `constants.model_config` only to ask whether a model's function names
    had "." replaced by "_"; that module imports every provider SDK (anthropic, cohere, ...). A
    stub answering "no" stands in for it, so the checker runs unchanged.
    """
    stub_name = "bfcl_eval.constants.model_config"
    if stub_name not in sys.modules:
        stub = types.ModuleType(stub_name)

        class _Configs(dict[str, Any]):
            def __missing__(self, key: str) -> Any:
                return types.SimpleNamespace(underscore_to_dot=False)

        stub.MODEL_CONFIG_MAPPING = _Configs()  # type: ignore[attr-defined]
        sys.modules[stub_name] = stub
    from bfcl_eval.constants.enums import Language
    from bfcl_eval.eval_checker.ast_eval.ast_checker import ast_checker

    def check(q: Question, calls: Sequence[ToolCall]) -> dict[str, Any]:
        output = [{c.name: c.arguments} for c in calls]
        try:
            return dict(
                ast_checker(
                    q.functions,
                    output,
                    q.ground_truth,
                    Language.PYTHON,
                    CATEGORIES[q.category],
                    "flowroute",
                )
            )
        except Exception as exc:  # the checker assumes well-formed output; a crash is a miss
            return {"valid": False, "error": [f"checker raised {exc!r}"]}

    return check


# -- prompt ---------------------------------------------------------------------------------------

_WEATHER = BfclTool(
    "get_weather",
    "Get the current weather in a city.",
    {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        },
        "required": ["city"],
    },
)
_CURRENCY = BfclTool(
    "convert_currency",
    "Convert an amount of money from one currency to another.",
    {
        "type": "object",
        "properties": {
            "amount": {"type": "number"},
            "from_currency": {"type": "string"},
            "to_currency": {"type": "string"},
        },
        "required": ["amount", "from_currency", "to_currency"],
    },
)
_EXAMPLES: list[tuple[list[BfclTool], str, dict[str, Any]]] = [
    (
        [_WEATHER, _CURRENCY],
        "What is the weather in Paris right now, in celsius?",
        {"calls": [{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}]},
    ),
    (
        [_CURRENCY],
        "How much are 100 US dollars in euros, and in Japanese yen?",
        {
            "calls": [
                {
                    "name": "convert_currency",
                    "arguments": {"amount": 100, "from_currency": "USD", "to_currency": "EUR"},
                },
                {
                    "name": "convert_currency",
                    "arguments": {"amount": 100, "from_currency": "USD", "to_currency": "JPY"},
                },
            ]
        },
    ),
    (
        [_WEATHER],
        "Who wrote the novel Pride and Prejudice?",
        {"final": "None of the tools can answer this."},
    ),
]
_INSTRUCTIONS = (
    "Each request comes with a list of tools. Reply with one line of JSON: "
    '{"calls": [{"name": ..., "arguments": {...}}]} with one call per action the request '
    'needs, or {"final": "..."} when no tool fits the request.\n\n'
)


def _block(tools: Sequence[BfclTool], request: str) -> str:
    return f"Tools:\n{describe_tools(tools)}\nRequest: {request}\nReply:"


def build_prompt(q: Question) -> str:
    """A completion-style few-shot prompt for a base model (examples are not from BFCL)."""
    shots = "".join(
        f"{_block(tools, request)} {json.dumps(reply)}\n\n" for tools, request, reply in _EXAMPLES
    )
    return _INSTRUCTIONS + shots + _block(q.tools, q.text)


# -- one answer -----------------------------------------------------------------------------------


def first_json_object(text: str) -> Any:
    """The first JSON object in free text, or None."""
    decoder = json.JSONDecoder()
    start = text.find("{")
    while start != -1:
        try:
            value, _ = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            start = text.find("{", start + 1)
            continue
        if isinstance(value, dict):
            return value
        start = text.find("{", start + 1)
    return None


def as_step(value: Any) -> tuple[bool, bool, list[ToolCall]]:
    """(parsed as a step, is final, calls) for a decoded JSON value."""
    if not isinstance(value, dict):
        return False, False, []
    if set(value) == {"final"}:
        return True, True, []
    calls = value.get("calls")
    if set(value) != {"calls"} or not isinstance(calls, list) or not calls:
        return False, False, []
    if not all(
        isinstance(c, dict)
        and isinstance(c.get("name"), str)
        and isinstance(c.get("arguments", {}), dict)
        for c in calls
    ):
        return False, False, []
    return True, False, list(parse_step(value).calls)


def executable(q: Question, calls: Sequence[ToolCall]) -> bool:
    """Every call names a function of this question, with arguments valid for its schema.

    Unknown arguments make a call not executable (a Python function would raise TypeError).
    """
    if not calls:
        return False
    by_name = {t.name: t for t in q.tools}
    for call in calls:
        tool = by_name.get(call.name)
        if tool is None:
            return False
        schema = {**tool.json_schema, "additionalProperties": False}
        if not jsonschema.Draft202012Validator(schema).is_valid(call.arguments):
            return False
    return True


@dataclass
class Result:
    id: str
    category: str
    mode: str
    text: str = ""
    error: str = ""
    parsed: bool = False
    final: bool = False
    calls: list[ToolCall] = field(default_factory=list)
    executable: bool = False
    correct: bool = False
    check_error: str = ""
    latency: float = 0.0
    compile_s: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish: str = ""

    def record(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["calls"] = [{"name": c.name, "arguments": c.arguments} for c in self.calls]
        return out


async def answer(
    model: Model,
    q: Question,
    constrained: bool,
    settings: Settings,
    check: Callable[[Question, Sequence[ToolCall]], dict[str, Any]],
    max_calls: int,
) -> Result:
    res = Result(q.id, q.category, "on" if constrained else "off")
    constraint = None
    if constrained:
        try:
            constraint = OutputConstraint.json_schema(
                step_schema(q.tools, FINAL_SCHEMA, max_calls=max_calls)
            )
            warm_up = getattr(model, "warm_up", None)
            if warm_up is not None:  # compile the grammar now, so latency is generation only
                start = time.perf_counter()
                await anyio.to_thread.run_sync(warm_up, constraint)
                res.compile_s = time.perf_counter() - start
        except (FlowrouteError, jsonschema.SchemaError, ValueError) as exc:
            res.error = f"compile: {exc}"
            return _score(res, q, check)
    request = ModelRequest(prompt=build_prompt(q), constraint=constraint, settings=settings)
    start = time.perf_counter()
    try:
        response = await model.generate(request)
    except FlowrouteError as exc:
        res.latency = time.perf_counter() - start
        res.error = str(exc).splitlines()[0]
        res.text = getattr(exc, "raw_text", None) or ""
        return _score(res, q, check)
    except ValueError as exc:  # llama.cpp: prompt longer than the context window
        res.error = f"generate: {exc}"
        return _score(res, q, check)
    res.latency = response.latency or (time.perf_counter() - start)
    res.text = response.text
    res.prompt_tokens = response.prompt_tokens
    res.completion_tokens = response.completion_tokens
    res.finish = response.finish_reason
    value = response.value if constrained else first_json_object(response.text)
    res.parsed, res.final, res.calls = as_step(value)
    return _score(res, q, check)


def _score(
    res: Result, q: Question, check: Callable[[Question, Sequence[ToolCall]], dict[str, Any]]
) -> Result:
    res.executable = executable(q, res.calls)
    if q.ground_truth is None:
        # BFCL irrelevance: right when no call could be decoded (an explicit final, or no
        # parseable calls at all)
        res.correct = not res.calls
    elif res.calls:
        verdict = check(q, res.calls)
        res.correct = bool(verdict.get("valid"))
        if not res.correct:
            res.check_error = json.dumps(verdict.get("error"), default=str)[:300]
    return res


# -- report ---------------------------------------------------------------------------------------


def _pct(values: Sequence[bool]) -> str:
    return f"{100 * sum(values) / len(values):.0f}%" if values else "-"


def _quantile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


def _pair(on: str, off: str, have_off: bool) -> str:
    return f"{on} / {off}" if have_off else on


def report(results: list[Result], have_off: bool, model_name: str) -> str:
    rows = [*CATEGORIES, "overall"]
    by: dict[tuple[str, str], list[Result]] = {}
    for r in results:
        for key in (r.category, "overall"):
            by.setdefault((key, r.mode), []).append(r)

    def get(cat: str, mode: str) -> list[Result]:
        return by.get((cat, mode), [])

    head = "ON / OFF" if have_off else "ON"
    lines = [
        f"Model: `{model_name}`. Cells are {head}"
        + (" (constraints on / off)." if have_off else " (constraints on)."),
        "",
        f"| category | n | parsed | abstained | executable | accuracy ({head}) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for cat in rows:
        on, off = get(cat, "on"), get(cat, "off")
        if not on:
            continue
        relevant_on = [r for r in on if r.category != "irrelevance"]
        relevant_off = [r for r in off if r.category != "irrelevance"]
        if cat == "overall":
            # BFCL style: the unweighted mean of the per-category accuracies
            acc_on = statistics.mean(
                sum(r.correct for r in get(c, "on")) / len(get(c, "on"))
                for c in CATEGORIES
                if get(c, "on")
            )
            off_cats = [c for c in CATEGORIES if get(c, "off")]
            acc_off = (
                statistics.mean(sum(r.correct for r in get(c, "off")) / len(get(c, "off")) for c in off_cats)
                if off_cats
                else 0.0
            )
            acc = _pair(f"{100 * acc_on:.0f}%", f"{100 * acc_off:.0f}%", have_off)
            cat_label = "**overall** (mean of categories)"
        else:
            acc = _pair(_pct([r.correct for r in on]), _pct([r.correct for r in off]), have_off)
            cat_label = cat + (" (no call = right)" if cat == "irrelevance" else "")
        exec_cell = _pair(
            _pct([r.executable for r in relevant_on]),
            _pct([r.executable for r in relevant_off]),
            have_off,
        )
        lines.append(
            f"| {cat_label} | {len(on)} "
            f"| {_pair(_pct([r.parsed for r in on]), _pct([r.parsed for r in off]), have_off)} "
            f"| {_pair(_pct([r.final for r in on]), _pct([r.final for r in off]), have_off)} "
            f"| {exec_cell if relevant_on else '-'} | {acc} |"
        )
    lines += [
        "",
        f"| category | p50 latency s ({head}) | p95 latency s | completion tokens, mean "
        "| s per completion token | grammar compile s, ON (median / max) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for cat in rows:
        on, off = get(cat, "on"), get(cat, "off")
        if not on:
            continue

        def lat(rs: list[Result], q: float) -> str:
            values = [r.latency for r in rs if r.latency > 0]
            return f"{_quantile(values, q):.1f}" if values else "-"

        def toks(rs: list[Result]) -> str:
            values = [r.completion_tokens for r in rs if r.latency > 0]
            return f"{statistics.mean(values):.0f}" if values else "-"

        def per_tok(rs: list[Result]) -> str:
            done = [r for r in rs if r.completion_tokens > 0]
            total = sum(r.completion_tokens for r in done)
            return f"{sum(r.latency for r in done) / total:.3f}" if total else "-"

        compiles = [r.compile_s for r in on if r.compile_s > 0]
        compile_cell = (
            f"{statistics.median(compiles):.1f} / {max(compiles):.1f}" if compiles else "-"
        )
        lines.append(
            f"| {'**overall**' if cat == 'overall' else cat} "
            f"| {_pair(lat(on, 0.5), lat(off, 0.5), have_off)} "
            f"| {_pair(lat(on, 0.95), lat(off, 0.95), have_off)} "
            f"| {_pair(toks(on), toks(off), have_off)} "
            f"| {_pair(per_tok(on), per_tok(off), have_off)} | {compile_cell} |"
        )
    on_all, off_all = get("overall", "on"), get("overall", "off")
    errors = [r for r in results if r.error]
    lines.append("")
    if have_off:
        on_lat = sum(r.latency for r in on_all)
        off_lat = sum(r.latency for r in off_all)
        if off_lat:
            lines.append(
                f"Total generation time ON / OFF: {on_lat:.0f} s / {off_lat:.0f} s "
                f"(ratio {on_lat / off_lat:.2f}); grammar compile (ON only): "
                f"{sum(r.compile_s for r in on_all):.0f} s."
            )
    if errors:
        lines.append(f"Errors ({len(errors)}):")
        lines += [f"- {r.id} [{r.mode}]: {r.error[:200]}" for r in errors]
    return "\n".join(lines)


# -- main -----------------------------------------------------------------------------------------


def make_model(args: argparse.Namespace) -> Model:
    if args.model == "local":
        from flowroute.models.llamacpp import LocalModel

        return LocalModel(n_ctx=args.n_ctx)
    from flowroute.models.litellm_model import LiteLLMModel

    options: dict[str, Any] = {}
    if args.api_base:
        options["api_base"] = args.api_base
    return LiteLLMModel(args.model, **options)


async def run(args: argparse.Namespace) -> None:
    rng = random.Random(args.seed)
    questions: list[Question] = []
    for cat in args.categories:
        pool = load_category(cat)
        questions += rng.sample(pool, min(args.per_category, len(pool)))
    check = _bfcl_checker()
    model = make_model(args)
    settings = Settings(max_tokens=args.max_tokens, stop=("\n",))
    warm_up = getattr(model, "warm_up", None)
    start = time.perf_counter()
    if warm_up is not None:
        await anyio.to_thread.run_sync(warm_up)  # load the weights outside any measurement
    load_s = time.perf_counter() - start
    modes = [True] if args.no_unconstrained else [True, False]
    results: list[Result] = []
    started = time.perf_counter()
    for i, q in enumerate(questions, 1):
        for constrained in modes:  # interleaved: noise affects both modes alike
            r = await answer(model, q, constrained, settings, check, args.max_calls)
            results.append(r)
            mark = "ok " if r.correct else "-- "
            print(
                f"[{i}/{len(questions)}] {mark}{r.mode:3} {q.id:24} "
                f"{r.latency:5.1f}s compile {r.compile_s:4.1f}s "
                f"{(r.error or r.text.strip())[:90]!r}",
                file=sys.stderr,
                flush=True,
            )
    wall = time.perf_counter() - started
    if args.out:
        with open(args.out, "w") as f:
            for r in results:
                f.write(json.dumps(r.record(), default=str) + "\n")
    print(
        f"\n{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, "
        f"Python {platform.python_version()}; {len(questions)} questions "
        f"({args.per_category} per category, seed {args.seed}), max_calls={args.max_calls}, "
        f"max_tokens={args.max_tokens}; model load {load_s:.1f} s, run {wall / 60:.1f} min.\n"
    )
    print(report(results, not args.no_unconstrained, getattr(model, "name", args.model)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-category", type=int, default=6, help="questions per category")
    parser.add_argument("--seed", type=int, default=0, help="question sampling seed")
    parser.add_argument(
        "--no-unconstrained", action="store_true", help="skip the constraints-off baseline"
    )
    parser.add_argument(
        "--model", default="local", help='"local" (embedded Gemma 3 270M) or a litellm model'
    )
    parser.add_argument("--api-base", default=None, help="URL of an OpenAI-compatible server")
    parser.add_argument(
        "--categories",
        nargs="+",
        default=list(CATEGORIES),
        choices=list(CATEGORIES),
        help="categories to sample (default: all five)",
    )
    parser.add_argument(
        "--max-calls", type=int, default=4, help="calls allowed per answer (all categories)"
    )
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--n-ctx", type=int, default=2048, help="context size (local model)")
    parser.add_argument("--out", default=None, help="write per-question results (JSON lines)")
    args = parser.parse_args()
    anyio.run(run, args)


if __name__ == "__main__":
    main()
