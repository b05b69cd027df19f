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
    python benchmarks/tool_calls.py --per-category 8 --seed 0

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
import resource
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
    """BFCL AST check of the calls after merging identical ones, as `AgentNode` runs them."""
    strict: bool = False
    """BFCL AST check of the calls as proposed (a repeated call counts as an extra call)."""
    no_call: bool = False
    """No call could be decoded (BFCL's irrelevance rule: unparseable output counts as right)."""
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
            res.error = "compile: " + " ".join(str(exc).split())
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
    res.no_call = not res.calls
    if q.ground_truth is None:
        # irrelevance: right only when the model abstains with a final answer. (BFCL's rule,
        # "no decodable call", also counts unparseable output as right: see `no_call`.)
        res.correct = res.strict = res.final
    elif res.calls:
        merged = list({c.key(): c for c in res.calls}.values())  # as AgentNode runs them
        verdict = check(q, merged)
        res.correct = bool(verdict.get("valid"))
        res.strict = res.correct if len(merged) == len(res.calls) else check(q, res.calls)["valid"]
        if not res.correct:
            res.check_error = json.dumps(verdict.get("error"), default=str)[:300]
    return res


# -- report ---------------------------------------------------------------------------------------


def _rate(values: Sequence[bool]) -> float | None:
    return sum(values) / len(values) if values else None


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def _quantile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


def _num(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def metrics(rs: list[Result]) -> dict[str, float | None]:
    """One category's numbers for one mode."""
    relevant = [r for r in rs if r.category != "irrelevance"]
    answered = [r for r in rs if r.latency > 0]  # a generation happened
    done = [r for r in answered if not r.error]
    return {
        "parsed": _rate([r.parsed for r in rs]),
        "abstained": _rate([r.final for r in rs]),
        "executable": _rate([r.executable for r in relevant]),
        "accuracy": _rate([r.correct for r in rs]),
        "strict": _rate([r.strict for r in rs]),
        "p50": _quantile([r.latency for r in answered], 0.5),
        "p95": _quantile([r.latency for r in answered], 0.95),
        # outputs cut off at max_tokens raise without a token count: left out here
        "tokens": statistics.mean(r.completion_tokens for r in done) if done else None,
    }


def report(results: list[Result], modes: Sequence[str], model_name: str) -> str:
    """Markdown tables: quality, then cost; each cell is `ON / OFF`."""
    cats = [c for c in CATEGORIES if any(r.category == c for r in results)]
    per = {
        (c, m): metrics([r for r in results if r.category == c and r.mode == m])
        for c in cats
        for m in modes
    }
    for m in modes:
        every = [r for r in results if r.mode == m]
        overall = metrics(every)
        # BFCL style: overall accuracy is the unweighted mean of the category accuracies
        for key in ("accuracy", "strict"):
            overall[key] = statistics.mean(per[c, m][key] or 0.0 for c in cats)
        overall["executable"] = _rate([r.executable for r in every if r.category != "irrelevance"])
        per["overall", m] = overall

    def cell(cat: str, key: str, fmt: Callable[[Any], str] = _pct) -> str:
        return " / ".join(fmt(per[cat, m][key]) for m in modes)

    label = " / ".join(m.upper() for m in modes)
    counts = {c: sum(r.category == c and r.mode == modes[0] for r in results) for c in cats}
    counts["overall"] = sum(counts.values())
    rows = [*cats, "overall"]
    lines = [
        f"Model `{model_name}`; every cell is constraints {label}. Irrelevance accuracy: the "
        "model abstained (`final`).",
        "",
        "| category | n | parsed | abstained | executable | accuracy | accuracy, strict |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for c in rows:
        name = "**overall**" if c == "overall" else c
        lines.append(
            f"| {name} | {counts[c]} | {cell(c, 'parsed')} | {cell(c, 'abstained')} "
            f"| {cell(c, 'executable') if c != 'irrelevance' else '-'} "
            f"| {cell(c, 'accuracy')} | {cell(c, 'strict')} |"
        )
    lines += [
        "",
        "| category | p50 s/question | p95 s/question | completion tokens (mean) "
        "| ON/OFF latency, paired median | grammar compile s, ON (median / max) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    latency = {(r.id, r.mode): r.latency for r in results}
    for c in rows:
        # each question ran ON then OFF back to back: their ratio is robust to machine noise
        ratios = [
            latency[r.id, "on"] / latency[r.id, "off"]
            for r in results
            if r.mode == "on"
            and (c == "overall" or r.category == c)
            and latency[r.id, "on"] > 0
            and latency.get((r.id, "off"), 0) > 0
        ]
        ratio_cell = f"{statistics.median(ratios):.2f}" if ratios else "-"
        on = [
            r.compile_s
            for r in results
            if r.mode == "on" and r.compile_s > 0 and (c == "overall" or r.category == c)
        ]
        compile_cell = f"{statistics.median(on):.1f} / {max(on):.1f}" if on else "-"
        lines.append(
            f"| {'**overall**' if c == 'overall' else c} "
            f"| {cell(c, 'p50', _num)} | {cell(c, 'p95', _num)} "
            f"| {cell(c, 'tokens', lambda x: _num(x, 0))} "
            f"| {ratio_cell} | {compile_cell} |"
        )
    lines.append("")
    totals = {m: sum(r.latency for r in results if r.mode == m) for m in modes}
    compile_total = sum(r.compile_s for r in results)
    summary = "Total generation time " + " / ".join(f"{totals[m]:.0f} s" for m in modes)
    if len(modes) == 2 and totals[modes[1]]:
        summary += f" (ratio {totals[modes[0]] / totals[modes[1]]:.2f})"
    lines.append(f"{summary}; grammar compile (ON only) {compile_total:.0f} s.")
    irrelevant = {
        m: [r.no_call for r in results if r.mode == m and r.category == "irrelevance"]
        for m in modes
    }
    if irrelevant[modes[0]]:
        lines.append(
            "Irrelevance by BFCL's rule (any output without a decodable call counts as right): "
            + ", ".join(f"{m.upper()} {sum(irrelevant[m])}/{len(irrelevant[m])}" for m in modes)
            + "."
        )
    errors = [r for r in results if r.error]
    if errors:
        lines += ["", f"Errors ({len(errors)}):"]
        lines += [f"- `{r.id}` [{r.mode}]: {r.error[:200]}" for r in errors]
    return "\n".join(lines)


# -- main -----------------------------------------------------------------------------------------


def max_calls(args: argparse.Namespace, q: Question) -> int:
    """Calls admitted per answer: `--max-calls N`, or (auto) 4 in parallel categories, else 1.

    Like a workflow author setting `max_calls_per_step` for a node: a question that needs one
    call gets a schema admitting one, which also keeps the grammar (and its compile) small.
    """
    if args.max_calls != "auto":
        return int(args.max_calls)
    return 4 if q.category.startswith("parallel") else 1


def make_model(args: argparse.Namespace) -> Model:
    if args.model == "local":
        from flowroute.models.llamacpp import LocalModel

        # cache_dir="": compiled grammars stay in memory, so every run measures compiling them
        return LocalModel(
            n_ctx=args.n_ctx,
            n_threads=args.threads,
            cache_dir=None if args.grammar_cache else "",
        )
    from flowroute.models.litellm_model import LiteLLMModel

    # no repair retries: one call per question, like the local model
    options: dict[str, Any] = {"repair_retries": 0}
    if args.api_base:
        options["api_base"] = args.api_base
    return LiteLLMModel(args.model, **options)


def report_from(paths: Sequence[str]) -> None:
    """Tables re-rendered (and re-scored) from `--out` files; a question in several counts once."""
    check = _bfcl_checker()
    questions = {q.id: q for cat in CATEGORIES for q in load_category(cat)}
    seen: dict[tuple[str, str], Result] = {}
    for path in paths:
        for line in Path(path).read_text().splitlines():
            row = json.loads(line)
            row["calls"] = [ToolCall(c["name"], c["arguments"]) for c in row["calls"]]
            fields = set(Result.__dataclass_fields__)
            r = Result(**{k: v for k, v in row.items() if k in fields})
            seen.setdefault((r.id, r.mode), _score(r, questions[r.id], check))
    results = list(seen.values())
    modes = [m for m in ("on", "off") if any(r.mode == m for r in results)]
    print(f"Re-scored from {', '.join(paths)}: {len(results) // len(modes)} questions.\n")
    print(report(results, modes, "(from saved results)"))


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
    out = open(args.out, "w") if args.out else None  # noqa: SIM115 - written as results come
    started = time.perf_counter()
    for i, q in enumerate(questions, 1):
        for constrained in modes:  # interleaved: noise affects both modes alike
            r = await answer(model, q, constrained, settings, check, max_calls(args, q))
            results.append(r)
            if out is not None:
                out.write(json.dumps(r.record(), default=str) + "\n")
                out.flush()
            mark = "ok " if r.correct else "-- "
            print(
                f"[{i}/{len(questions)}] {mark}{r.mode:3} {q.id:24} "
                f"{r.latency:5.1f}s compile {r.compile_s:4.1f}s "
                f"{(r.error or r.text.strip())[:90]!r}",
                file=sys.stderr,
                flush=True,
            )
    wall = time.perf_counter() - started
    if out is not None:
        out.close()
    print(
        f"\n{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, "
        f"Python {platform.python_version()}; {len(questions)} questions "
        f"({args.per_category} per category, seed {args.seed}), max_calls={args.max_calls}, "
        f"max_tokens={args.max_tokens}; model load {load_s:.1f} s, run {wall / 60:.1f} min, "
        f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB.\n"
    )
    names = ["on"] if args.no_unconstrained else ["on", "off"]
    print(report(results, names, getattr(model, "name", args.model)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-category", type=int, default=8, help="questions per category")
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
        "--max-calls",
        default="auto",
        help="calls admitted per constrained answer: N, or auto (4 for parallel categories, "
        "else 1)",
    )
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--n-ctx", type=int, default=2048, help="context size (local model)")
    parser.add_argument(
        "--threads", type=int, default=None, help="llama.cpp threads (default: every core)"
    )
    parser.add_argument(
        "--grammar-cache",
        action="store_true",
        help="use the on-disk grammar cache (default: off, so compile times are measured)",
    )
    parser.add_argument("--out", default=None, help="write each result as it comes (JSON lines)")
    parser.add_argument(
        "--report-from",
        nargs="+",
        metavar="FILE",
        help="print the tables from --out files instead of running the model",
    )
    args = parser.parse_args()
    if args.report_from:
        report_from(args.report_from)
    else:
        anyio.run(run, args)


if __name__ == "__main__":
    main()
