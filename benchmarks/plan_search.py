"""Plan search on AgentDojo's benign user tasks: greedy steps vs A* (uniform cost) vs A* + h.

AgentDojo (the `agentdojo` PyPI package) has four suites, workspace, travel, banking and slack,
whose tools are real Python functions over an in-memory environment (inbox, calendar, bank
account, Slack workspace...). Every user task has a prompt, a ground-truth call sequence and a
utility check that reads the model's answer and the environment after the run. Each suite's
tools are wrapped as flowroute tools (`DojoTool`, run through AgentDojo's own
`FunctionsRuntime`, so arguments are validated and the environment injected as AgentDojo does),
and every sampled task is run, on a fresh copy of its environment, by three strategies with the
same model, prompt and budget:

- `greedy`: an agent node (`@fr.agent`), one call per step, `max_steps = --max-depth`;
- `a*-ucs`: `@fr.plan_search(heuristic="zero")`: uniform-cost search;
- `a*-llm`: `@fr.plan_search(heuristic="llm")`: the model estimates the calls left.

Both searches sample `--k` candidates per expansion, stop after `--max-expansions`, and reach
at most `--max-depth` steps (the final answer included). Read-only tools (`pure_tools`: names
starting with get_/search_/list_/read_/check_, except the two that write to the
environment) run during the search; the others are simulated and run once the plan is chosen.
Every run also gets `--task-timeout` seconds.

Printed per suite and overall, per strategy: utility success rate (AgentDojo's own check:
`utility_from_traces`, else `utility`), mean model calls (`record.calls`, heuristic calls
included), mean tool executions (calls that ran against the environment, failed ones
included), mean wall time per task; and how many runs ended in an error, and why. A run whose
node failed is still scored: the environment may already have changed, and the answer is "".

Setup (never downloads anything at run time). agentdojo is installed without its
dependencies (about 30 LLM SDKs); it needs three small packages more to load its suites:

    pip install ".[local,litellm]"
    pip install --no-deps agentdojo==0.1.35
    pip install "deepdiff>=8.6.1" "docstring-parser>=0.15" "email-validator>=2.0.0"
    python benchmarks/plan_search.py --model oracle --tasks-per-suite 0   # harness check
    python benchmarks/plan_search.py --tasks-per-suite 2 --seed 0          # embedded model
    python benchmarks/plan_search.py --model openai/gpt-4o-mini --tasks-per-suite 10
    python benchmarks/plan_search.py --model openai/qwen --api-base http://127.0.0.1:8080/v1

`agentdojo.agent_pipeline` (which imports every provider SDK) is never imported: `load_suites`
puts an empty package in its place in `sys.modules`, so that only the few submodules the task
suites need (`base_pipeline_element`, `errors`, `ground_truth_pipeline`, `tool_execution`) are
loaded from the package's files, and a stub for the one name `tool_execution` imports from the
Google client (`EMPTY_FUNCTION_NAME`).

`--model oracle` is a harness check, not a model: a scripted model that replies with each
task's ground-truth calls in order, then its `GROUND_TRUTH_OUTPUT` (or "done"). It shows what
the wrapping and scoring allow (give it `--max-depth 8`: some tasks take 6 calls).

This is a benchmark script, not a test: pytest does not collect it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import random
import re
import statistics
import sys
import time
import types
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
from pydantic_core import to_jsonable_python

import flowroute as fr
from flowroute.errors import ToolError
from flowroute.graph.types import ANY, TypeSpec
from flowroute.models.base import Model, ModelRequest
from flowroute.structured.constraint import OutputConstraint
from flowroute.tools.calls import step_schema

SUITES = ("workspace", "travel", "banking", "slack")
STRATEGIES = ("greedy", "a*-ucs", "a*-llm")
READ_PREFIXES = ("get_", "search_", "list_", "read_", "check_")
WRITING_READS = frozenset({"get_unread_emails", "get_webpage"})
"""Read-style names that change the environment: `get_unread_emails` marks the emails read
(read-only workspace tasks check `pre_environment == post_environment`), `get_webpage` logs the
URL in `web.web_requests` (which slack tasks check). Not pure: simulated during the search."""

PROMPT = """You are an assistant with tools over the user's data. Complete the user's task with \
the tools, then give a short final answer that states the result.

User task: {{ goal }}"""


# -- AgentDojo -------------------------------------------------------------------------------


def load_suites(version: str) -> dict[str, Any]:
    """AgentDojo's task suites at `version`, without importing `agentdojo.agent_pipeline`."""
    spec = importlib.util.find_spec("agentdojo")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("agentdojo is not installed: pip install --no-deps agentdojo==0.1.35")
    base = Path(next(iter(spec.submodule_search_locations)))
    if "agentdojo.agent_pipeline" not in sys.modules:
        # an empty package: its submodules load from their files, its __init__ never runs
        pipeline = types.ModuleType("agentdojo.agent_pipeline")
        pipeline.__path__ = [str(base / "agent_pipeline")]
        sys.modules["agentdojo.agent_pipeline"] = pipeline
        google = types.ModuleType("agentdojo.agent_pipeline.llms.google_llm")
        google.EMPTY_FUNCTION_NAME = "<empty-function-name>"  # type: ignore[attr-defined]
        sys.modules["agentdojo.agent_pipeline.llms.google_llm"] = google
    try:
        from agentdojo.task_suite.load_suites import get_suites  # type: ignore[import-untyped]
    except ImportError as exc:
        sys.exit(
            f"cannot load the AgentDojo suites ({exc}): "
            'pip install "deepdiff>=8.6.1" "docstring-parser>=0.15" "email-validator>=2.0.0"'
        )
    return dict(get_suites(version))


def pure_tools(suite: Any) -> tuple[str, ...]:
    return tuple(
        t.name
        for t in suite.tools
        if t.name.startswith(READ_PREFIXES) and t.name not in WRITING_READS
    )


def check_pure(suites: dict[str, Any]) -> list[str]:
    """Run every ground-truth call of a pure tool on a fresh environment and report the ones
    that changed it (none expected)."""
    from agentdojo.functions_runtime import FunctionsRuntime  # type: ignore[import-untyped]

    out = []
    for name, suite in suites.items():
        pure = set(pure_tools(suite))
        runtime = FunctionsRuntime(suite.tools)
        base = suite.load_and_inject_default_environment({})
        for task_id, task in suite.user_tasks.items():
            env = task.init_environment(base.model_copy(deep=True))
            for gt in task.ground_truth(env.model_copy(deep=True)):
                if gt.function not in pure:
                    continue
                before = env.model_dump()
                runtime.run_function(env, gt.function, dict(gt.args))
                if env.model_dump() != before:
                    out.append(f"{name}/{task_id}: {gt.function} changed the environment")
    return out


def vacuous(suite: Any, task_ids: Sequence[str]) -> list[str]:
    """The tasks whose utility check passes with no call made and an empty answer."""
    base = suite.load_and_inject_default_environment({})
    out = []
    for task_id in task_ids:
        task = suite.user_tasks[task_id]
        env = task.init_environment(base.model_copy(deep=True))
        try:
            ok = task.utility_from_traces("", env, env, [])
            ok = task.utility("", env, env) if ok is None else ok
        except Exception:  # a check that cannot read the run fails it
            ok = False
        if ok:
            out.append(task_id)
    return out


def ground_truth_calls(suite: Any, task_id: str) -> int:
    task = suite.user_tasks[task_id]
    env = task.init_environment(suite.load_and_inject_default_environment({}))
    return len(task.ground_truth(env))


@dataclass
class Session:
    """The environment the tools act on (swapped per run) and what ran against it."""

    runtime: Any
    env: Any = None
    executed: list[Any] = field(default_factory=list)  # agentdojo FunctionCalls

    def reset(self, env: Any) -> None:
        self.env, self.executed = env, []


@dataclass(frozen=True)
class DojoTool:
    """An AgentDojo `Function` as a flowroute tool (ToolLike), run on `session.env`."""

    function: Any
    session: Session
    json_schema: dict[str, Any]
    return_type: TypeSpec = ANY

    @property
    def name(self) -> str:
        return str(self.function.name)

    @property
    def description(self) -> str:
        return str(self.function.description)

    @classmethod
    def wrap(cls, function: Any, session: Session) -> DojoTool:
        schema = function.parameters.model_json_schema()
        schema.pop("title", None)
        return cls(function, session, schema)

    async def call(self, args: dict[str, Any]) -> Any:
        from agentdojo.functions_runtime import FunctionCall

        self.session.executed.append(FunctionCall(function=self.name, args=dict(args)))
        result, error = self.session.runtime.run_function(self.session.env, self.name, args)
        if error is not None:
            raise ToolError(self.name, error)
        return to_jsonable_python(result)


# -- models ----------------------------------------------------------------------------------


def oracle(suites: dict[str, Any]) -> Model:
    """Replies with the ground-truth calls of the task in the prompt, in order."""
    from flowroute.models.testing import FunctionModel

    plans: dict[str, tuple[list[Any], str]] = {}
    for suite in suites.values():
        base = suite.load_and_inject_default_environment({})
        for task in suite.user_tasks.values():
            env = task.init_environment(base.model_copy(deep=True))
            answer = getattr(task, "GROUND_TRUTH_OUTPUT", "") or "done"
            plans[task.PROMPT] = (task.ground_truth(env), answer)

    def reply(request: ModelRequest) -> str:
        prompt = request.as_prompt()
        task = max((p for p in plans if p in prompt), key=len, default=None)
        if task is None:
            raise ValueError("no task prompt in the request")
        calls, answer = plans[task]
        if "How many more tool calls are needed" in prompt:  # the "llm" heuristic
            so_far = prompt.split("Calls so far:")[1].split("\nHow many")[0].strip()
            done = len(so_far.split("; ")) if so_far else 0
            return json.dumps(max(0, min(5, len(calls) - done)))
        step = int(re.findall(r"Step (\d+):", prompt)[-1])
        schema = request.constraint.schema if request.constraint is not None else None
        if step <= len(calls) and "calls" in json.dumps(schema or {}):
            gt = calls[step - 1]
            return json.dumps({"calls": [{"name": gt.function, "arguments": dict(gt.args)}]})
        return json.dumps({"final": answer})

    return FunctionModel(reply, name="oracle")


def make_model(args: argparse.Namespace, suites: dict[str, Any]) -> Model:
    if args.model == "oracle":
        return oracle(suites)
    if args.model == "local" or args.model.startswith("local:"):
        from flowroute.models.llamacpp import LocalModel

        path = args.model.partition(":")[2] or None
        return LocalModel(path, n_ctx=args.n_ctx, n_threads=args.threads)
    from flowroute.models.litellm_model import LiteLLMModel

    options: dict[str, Any] = {}
    if args.api_base:
        options["api_base"] = args.api_base
    return LiteLLMModel(args.model, **options)


def constraints(tools: Sequence[DojoTool]) -> list[OutputConstraint]:
    """The grammars the strategies decode under: a step (one call or a string answer), a
    final answer only, and the "llm" heuristic's estimate."""
    final = {"type": "string"}
    return [
        OutputConstraint.json_schema(step_schema(tools, final, max_calls=1)),
        OutputConstraint.json_schema(step_schema([], final)),
        OutputConstraint.json_schema({"type": "integer", "enum": [0, 1, 2, 3, 4, 5]}),
    ]


# -- runs ------------------------------------------------------------------------------------


def build(
    strategy: str, model: Model, tools: list[DojoTool], pure: Sequence[str], a: argparse.Namespace
) -> fr.Workflow[Any]:
    settings = {"max_tokens": a.max_tokens, "seed": a.seed}
    if strategy == "greedy":
        node: Any = fr.agent(
            model=model,
            tools=tools,
            output=str,
            settings=settings,
            max_steps=a.max_depth,
            max_calls_per_step=1,
            timeout=a.task_timeout,
            name="solve",
        )
    else:
        node = fr.plan_search(
            model=model,
            tools=tools,
            output=str,
            settings=settings,
            k=a.k,
            heuristic="zero" if strategy == "a*-ucs" else "llm",
            max_expansions=a.max_expansions,
            max_tool_runs=a.max_tool_runs,
            max_depth=a.max_depth,
            max_time=a.task_timeout * 0.9,  # ends with its tree; the node timeout is the backstop
            pure=tuple(pure),
            timeout=a.task_timeout,
            name="solve",
        )

    def solve(goal: str) -> str:
        return PROMPT  # a returned string is the node's prompt template

    step = node(solve)

    @fr.workflow
    def task(goal: str) -> Any:
        return step(goal)

    return task  # type: ignore[no-any-return]


@dataclass
class Run:
    suite: str
    task: str
    strategy: str
    utility: bool
    model_calls: int
    tool_runs: int
    wall: float
    status: str
    error: str | None
    output: str
    expansions: int | None
    calls: list[list[Any]]


def short_error(error: str | None) -> str:
    text = (error or "").strip().split("\n")[0]
    text = re.sub(r"^node '[^']*'(, model '[^']*')?: ", "", text)
    text = re.sub(r"validation errors? for", "validation error(s) for", text)
    text = re.sub(r"after \d+ expansions.*", "", text)
    text = re.sub(r"\d+(\.\d+)?", "N", text)
    return text.strip().rstrip(";,")[:120]


async def run_one(
    suite_name: str, suite: Any, base_env: Any, task_id: str, strategy: str, wf: Any, s: Session
) -> Run:
    task = suite.user_tasks[task_id]
    env = task.init_environment(base_env.model_copy(deep=True))
    pre = env.model_copy(deep=True)
    s.reset(env)
    start = time.perf_counter()
    result = await wf.arun(goal=task.PROMPT)
    wall = time.perf_counter() - start
    record = result.records["solve"]
    output = result.output if record.status == "succeeded" else ""
    text = output if isinstance(output, str) else json.dumps(output, default=str)
    error = record.error or (record.error_type if record.status != "succeeded" else None)
    try:
        utility = task.utility_from_traces(text, pre, s.env, s.executed)
        if utility is None:
            utility = task.utility(text, pre, s.env)
    except Exception as exc:  # a check that cannot read the run fails it
        utility = False
        error = (error or "") + f" [utility check raised {type(exc).__name__}]"
    tree = next((t for t in reversed(record.trace) if "expansions" in t), None)
    return Run(
        suite=suite_name,
        task=task_id,
        strategy=strategy,
        utility=bool(utility),
        model_calls=len(record.calls),
        tool_runs=len(s.executed),
        wall=wall,
        status=record.status,
        error=error,
        output=text,
        expansions=None if tree is None else tree["expansions"],
        calls=[[c.function, dict(c.args)] for c in s.executed],
    )


def table(runs: Sequence[Run], strategies: Sequence[str]) -> str:
    lines = [
        "| strategy | tasks | utility | model calls | tool executions | wall time (s) | errors |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for strategy in strategies:
        rs = [r for r in runs if r.strategy == strategy]
        if not rs:
            continue
        ok = sum(r.utility for r in rs)
        lines.append(
            f"| {strategy} | {len(rs)} | {ok}/{len(rs)} ({100 * ok / len(rs):.0f}%) "
            f"| {statistics.mean(r.model_calls for r in rs):.1f} "
            f"| {statistics.mean(r.tool_runs for r in rs):.1f} "
            f"| {statistics.mean(r.wall for r in rs):.1f} "
            f"| {sum(r.status != 'succeeded' for r in rs)} |"
        )
    return "\n".join(lines)


def sample(suite: Any, n: int, rng: random.Random) -> list[str]:
    ids = sorted(suite.user_tasks, key=lambda t: int(t.rpartition("_")[2]))
    return ids if n <= 0 or n >= len(ids) else sorted(rng.sample(ids, n), key=ids.index)


async def run(args: argparse.Namespace) -> None:
    from agentdojo.functions_runtime import FunctionsRuntime

    suites = {k: v for k, v in load_suites(args.version).items() if k in args.suites}
    for problem in check_pure(suites):
        print(f"warning: {problem}", file=sys.stderr)
    model = make_model(args, suites)
    rng = random.Random(args.seed)
    plan = {name: sample(suite, args.tasks_per_suite, rng) for name, suite in suites.items()}
    start = time.perf_counter()
    warm_up = getattr(model, "warm_up", None)
    if warm_up is not None:
        await anyio.to_thread.run_sync(warm_up)  # load the weights outside any measurement
    load_s = time.perf_counter() - start
    start = time.perf_counter()
    if warm_up is not None:  # compile each suite's step grammar outside any measurement too
        for name, suite in suites.items():
            tools = [DojoTool.wrap(f, Session(None)) for f in suite.tools]
            for constraint in constraints(tools):
                t0 = time.perf_counter()
                await anyio.to_thread.run_sync(warm_up, constraint)
                print(
                    f"grammar ({name}): {len(constraint.to_regex())} chars of regex, "
                    f"{time.perf_counter() - t0:.1f} s",
                    file=sys.stderr,
                    flush=True,
                )
    compile_s = time.perf_counter() - start
    runs: list[Run] = []
    out = open(args.out, "w") if args.out else None  # noqa: SIM115 - written as results come
    started = time.perf_counter()
    total = sum(len(ids) for ids in plan.values()) * len(args.strategies)
    done = 0
    for name, suite in suites.items():
        session = Session(FunctionsRuntime(suite.tools))
        tools = [DojoTool.wrap(f, session) for f in suite.tools]
        pure = pure_tools(suite)
        base_env = suite.load_and_inject_default_environment({})
        workflows = {s: build(s, model, tools, pure, args) for s in args.strategies}
        for task_id in plan[name]:
            for strategy in args.strategies:  # interleaved: machine noise hits all alike
                r = await run_one(
                    name, suite, base_env, task_id, strategy, workflows[strategy], session
                )
                runs.append(r)
                done += 1
                if out is not None:
                    out.write(json.dumps(r.__dict__, default=str) + "\n")
                    out.flush()
                print(
                    f"[{done}/{total}] {'ok' if r.utility else '--'} {name}/{task_id:14} "
                    f"{strategy:7} {r.wall:6.1f}s calls={r.model_calls:3} tools={r.tool_runs:2} "
                    f"{r.status:9} {(short_error(r.error) or r.output)[:80]!r}",
                    file=sys.stderr,
                    flush=True,
                )
    wall = time.perf_counter() - started
    if out is not None:
        out.close()
    empty = [f"{n}/{t}" for n, ids in plan.items() for t in vacuous(suites[n], ids)]
    lengths = ", ".join(
        f"{n}/{t} {ground_truth_calls(suites[n], t)}" for n, ids in plan.items() for t in ids
    )
    counts = ", ".join(f"{n} {len(ids)}/{len(suites[n].user_tasks)}" for n, ids in plan.items())
    print(
        f"\n{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, Python "
        f"{platform.python_version()}; model {getattr(model, 'name', args.model)}; AgentDojo "
        f"{args.version}, tasks sampled (seed {args.seed}): {counts}.\nBudget per task, every "
        f"strategy: max_depth {args.max_depth} (greedy: max_steps {args.max_depth}, one call "
        f"per step), max_tokens {args.max_tokens} per model call, timeout {args.task_timeout:g}"
        f" s; searches: k {args.k}, max_expansions {args.max_expansions}, max_tool_runs "
        f"{args.max_tool_runs}. Model load {load_s:.1f} s, grammars {compile_s:.1f} s, "
        f"run {wall / 60:.1f} min.\nSampled tasks whose utility check passes with no call and "
        f"an empty answer: {', '.join(empty) or 'none'}.\nGround-truth calls per sampled task "
        f"(a plan holds at most {args.max_depth - 1} calls): {lengths}.\n"
    )
    for name in suites:
        print(f"### {name}\n\n{table([r for r in runs if r.suite == name], args.strategies)}\n")
    print(f"### overall\n\n{table(runs, args.strategies)}\n")
    errors = Counter((r.strategy, short_error(r.error)) for r in runs if r.error)
    if errors:
        print("Errors (strategy: count x reason):\n")
        for (strategy, reason), n in sorted(errors.items()):
            print(f"- {strategy}: {n} x {reason}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model",
        default="local",
        help='"local" (embedded Gemma 3 270M), "local:/path.gguf", a litellm model, or '
        '"oracle" (replays the ground truth: a harness check)',
    )
    parser.add_argument("--api-base", default=None, help="URL of an OpenAI-compatible server")
    parser.add_argument("--version", default="v1.2.2", help="AgentDojo benchmark version")
    parser.add_argument("--suites", nargs="+", default=list(SUITES), choices=list(SUITES))
    parser.add_argument(
        "--strategies", nargs="+", default=list(STRATEGIES), choices=list(STRATEGIES)
    )
    parser.add_argument(
        "--tasks-per-suite", type=int, default=2, help="user tasks sampled per suite (0: all)"
    )
    parser.add_argument("--seed", type=int, default=0, help="task sampling and model seed")
    parser.add_argument("--k", type=int, default=2, help="candidates per expansion (A*)")
    parser.add_argument("--max-expansions", type=int, default=6)
    parser.add_argument("--max-tool-runs", type=int, default=20)
    parser.add_argument(
        "--max-depth", type=int, default=4, help="steps per plan, the final answer included"
    )
    parser.add_argument("--max-tokens", type=int, default=192, help="per model call")
    parser.add_argument("--task-timeout", type=float, default=240.0, help="seconds per run")
    parser.add_argument("--n-ctx", type=int, default=4096, help="context size (local model)")
    parser.add_argument(
        "--threads", type=int, default=None, help="llama.cpp threads (default: every core)"
    )
    parser.add_argument("--out", default=None, help="write each run as it ends (JSON lines)")
    anyio.run(run, parser.parse_args())


if __name__ == "__main__":
    main()
