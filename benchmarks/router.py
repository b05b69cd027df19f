"""Query routing on real data: in-domain accuracy, out-of-domain rejection and latency.

In-domain routes are the four AgentDojo suites (workspace, travel, banking, slack); each
route's queries are its suite's user-task prompts (benchmark version v1.2.2 by default).
Out-of-domain queries are the BFCL v4 `irrelevance` and `live_irrelevance` questions (the
user messages of each). Every route, and each out-of-domain source, is split the same
seeded, stratified way into a train and a test part. The router gets the in-domain train
queries as its routes' examples; it is tested on the rest.

Four configurations: method `knn` or `centroid`, with the threshold calibrated against the
out-of-domain train queries (`reject_examples`) or from the in-domain examples alone
(`keep`). Printed: a Markdown table of in-domain accuracy (the right route among in-domain
test queries; a rejection counts as wrong), out-of-domain rejection rate, their harmonic mean
(as GQR-Bench scores it), p50/p95 latency of `RouterNode.classify` per query (after fitting
and a warm-up; it includes embedding the query); the fit time and threshold of each
configuration; train/test counts per route; the out-of-domain test queries scored highest.

Setup (never downloads anything at run time):

    pip install ".[retrieval]"
    pip install --no-deps bfcl-eval agentdojo
    python benchmarks/router.py --seed 0 --train-fraction 0.5

AgentDojo is installed without its dependencies (LLM clients, langchain...) and never
imported: the user tasks' prompts are read from the package's source files (each task class's
`PROMPT`, with the suite versions applied the way `agentdojo` registers them). The tasks
that `TaskCombinator` builds from two others (7 in workspace, 4 in slack at v1.2.2) are left
out: most of their prompts are "Perform the following tasks in the order they are given: 1.
<task a> 2. <task b>", which would put the same text in train and test. This is a benchmark
script, not a test: pytest does not collect it.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib.resources
import importlib.util
import json
import platform
import random
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flowroute.retrieval.embedder import MiniLMEmbedder
from flowroute.routing.router import RouterNode, routes_from

SUITES = ("workspace", "travel", "banking", "slack")
OOD_FILES = {
    "irrelevance": "BFCL_v4_irrelevance.json",
    "live_irrelevance": "BFCL_v4_live_irrelevance.json",
}
REJECT = "reject"
Version = tuple[int, int, int]


@dataclass
class Query:
    group: str  # the route, or the out-of-domain source
    text: str


# -- AgentDojo -------------------------------------------------------------------------------


def agentdojo_dir() -> Path:
    spec = importlib.util.find_spec("agentdojo")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("agentdojo is not installed: pip install --no-deps agentdojo")
    return Path(next(iter(spec.submodule_search_locations)))


def parse_version(text: str) -> Version:
    """`v1.2.2` or a suites folder name (`v1_2_2`, `v1`) as `(1, 2, 2)`."""
    parts = [int(p) for p in re.split(r"[._]", text.lstrip("v"))]
    major, minor, patch = [*parts, 0, 0, 0][:3]
    return (major, minor, patch)


_BUILTINS = {"str": str, "int": int, "float": float, "len": len, "list": list, "tuple": tuple}


def _assign(stmt: ast.stmt, namespace: dict[str, Any]) -> None:
    """Run a plain `NAME = value` statement in `namespace`; anything else, or a value that
    needs more than constants and names already set, is skipped."""
    if isinstance(stmt, ast.Assign):
        if not all(isinstance(t, ast.Name) for t in stmt.targets):
            return
    elif not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
        return
    if isinstance(stmt, ast.AnnAssign) and stmt.value is None:
        return
    code = compile(ast.Module(body=[stmt], type_ignores=[]), "<agentdojo>", "exec")
    with contextlib.suppress(Exception):  # types, datetimes, calls: not needed for a prompt
        exec(code, {"__builtins__": _BUILTINS}, namespace)


def _registration(decorator: ast.expr, namespace: dict[str, Any]) -> Version | None:
    """The benchmark version a user-task decorator registers its class under, if it is one."""
    if isinstance(decorator, ast.Attribute) and decorator.attr == "register_user_task":
        return (1, 0, 0)
    if (
        isinstance(decorator, ast.Call)
        and isinstance(decorator.func, ast.Attribute)
        and decorator.func.attr == "update_user_task"
        and decorator.args
    ):
        value = eval(  # a tuple literal or a module constant such as _NEW_BENCHMARK_VERSION
            compile(ast.Expression(decorator.args[0]), "<agentdojo>", "eval"),
            {"__builtins__": {}},
            dict(namespace),
        )
        return tuple(value)  # type: ignore[return-value]
    return None


def load_agentdojo(version: Version) -> dict[str, list[str]]:
    """Each suite's user-task prompts at benchmark `version`, as `agentdojo` registers them:
    a task's `user_task_N` id comes from its class name `UserTaskN`, and the version used is
    the highest one at most `version` (`update_user_task`)."""
    base = agentdojo_dir() / "default_suites"
    folders = sorted(
        (parse_version(p.name), p) for p in base.iterdir() if re.fullmatch(r"v\d+(_\d+)*", p.name)
    )
    registry: dict[str, dict[str, dict[Version, str]]] = {s: {} for s in SUITES}
    for folder_version, folder in folders:
        if folder_version > version:
            continue
        for suite in SUITES:
            path = folder / suite / "user_tasks.py"
            if not path.exists():
                continue
            module: dict[str, Any] = {}
            for stmt in ast.parse(path.read_text()).body:
                if not isinstance(stmt, ast.ClassDef):
                    _assign(stmt, module)
                    continue
                found = re.fullmatch(r"UserTask(\d+)", stmt.name)
                versions = [_registration(d, module) for d in stmt.decorator_list]
                registered = [v for v in versions if v is not None]
                if not found or not registered:
                    continue
                namespace = dict(module)
                for inner in stmt.body:
                    _assign(inner, namespace)
                prompt = namespace.get("PROMPT")
                if not isinstance(prompt, str):
                    sys.exit(f"{path}: no PROMPT could be read for {stmt.name}")
                task = f"user_task_{int(found.group(1))}"
                registry[suite].setdefault(task, {})[registered[0]] = prompt
    out: dict[str, list[str]] = {}
    for suite, tasks in registry.items():
        prompts = []
        for task in sorted(tasks, key=lambda t: int(t.rsplit("_", 1)[1])):
            usable = [v for v in tasks[task] if v <= version]
            if usable:
                prompts.append(" ".join(tasks[task][max(usable)].split()))
        out[suite] = prompts
    return out


# -- BFCL ------------------------------------------------------------------------------------


def bfcl_dir() -> Path:
    try:
        return Path(str(importlib.resources.files("bfcl_eval") / "data"))
    except ModuleNotFoundError:
        sys.exit("bfcl-eval is not installed: pip install --no-deps bfcl-eval")


def load_bfcl() -> dict[str, list[str]]:
    """The user messages of each question of BFCL v4's irrelevance categories."""
    out: dict[str, list[str]] = {}
    for source, name in OOD_FILES.items():
        texts = []
        for line in (bfcl_dir() / name).read_text().splitlines():
            if not line.strip():
                continue
            turns = json.loads(line)["question"]
            if not turns or not isinstance(turns[0], list):
                continue
            text = "\n".join(m["content"] for m in turns[0] if m.get("role") == "user")
            if text.strip():
                texts.append(text.strip())
        out[source] = texts
    return out


# -- split and evaluation --------------------------------------------------------------------


def dedupe(groups: dict[str, list[str]], seen: set[str]) -> dict[str, list[str]]:
    """Each text once, in the first group that has it (`seen` is updated)."""
    out: dict[str, list[str]] = {}
    for group, texts in groups.items():
        out[group] = []
        for text in texts:
            if text not in seen:
                seen.add(text)
                out[group].append(text)
    return out


def split(
    groups: dict[str, list[str]], fraction: float, seed: int
) -> tuple[list[Query], list[Query]]:
    """A seeded split of every group: about `fraction` of it (at least one query, and one
    left to test) goes to train."""
    train: list[Query] = []
    test: list[Query] = []
    for group, texts in groups.items():
        shuffled = sorted(texts)
        random.Random(f"{seed}:{group}").shuffle(shuffled)
        n = min(max(1, round(len(shuffled) * fraction)), len(shuffled) - 1)
        train += [Query(group, t) for t in shuffled[:n]]
        test += [Query(group, t) for t in shuffled[n:]]
    return train, test


def quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def harmonic(a: float, b: float) -> float:
    return 2 * a * b / (a + b) if a + b > 0 else 0.0


@dataclass
class Result:
    config: str
    accuracy: float
    rejection: float
    fit_s: float
    threshold: float
    p50_ms: float
    p95_ms: float
    accepted_ood: list[tuple[float, str, Query]]  # (best score, route, query)
    confusion: dict[str, dict[str, int]]  # in-domain: true route -> decided route -> count


def evaluate(
    name: str, node: RouterNode, in_test: Sequence[Query], ood_test: Sequence[Query], warmup: int
) -> Result:
    start = time.perf_counter()
    fitted = node.fit()
    fit_s = time.perf_counter() - start
    for q in [*in_test, *ood_test][:warmup]:
        node.classify(q.text)
    latencies: list[float] = []
    right = 0
    confusion: dict[str, dict[str, int]] = {}
    for q in in_test:
        start = time.perf_counter()
        decision = node.classify(q.text)
        latencies.append(time.perf_counter() - start)
        right += decision.route == q.group
        row = confusion.setdefault(q.group, {})
        row[decision.route] = row.get(decision.route, 0) + 1
    rejected = 0
    accepted: list[tuple[float, str, Query]] = []
    for q in ood_test:
        start = time.perf_counter()
        decision = node.classify(q.text)
        latencies.append(time.perf_counter() - start)
        if decision.route == REJECT:
            rejected += 1
        else:
            accepted.append((max(decision.scores.values()), decision.route, q))
    accepted.sort(key=lambda a: -a[0])
    return Result(
        name,
        right / len(in_test),
        rejected / len(ood_test),
        fit_s,
        fitted.threshold,
        quantile(latencies, 0.5) * 1e3,
        quantile(latencies, 0.95) * 1e3,
        accepted,
        confusion,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-fraction", type=float, default=0.5)
    parser.add_argument("--k", type=int, default=3, help="neighbours for knn")
    parser.add_argument("--keep", type=float, default=0.95, help="without reject examples")
    parser.add_argument("--agentdojo-version", default="v1.2.2", help="benchmark version")
    parser.add_argument("--warmup", type=int, default=20, help="queries classified first")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--show", type=int, default=5, help="accepted OOD queries to print")
    args = parser.parse_args()
    if not 0 < args.train_fraction < 1:
        sys.exit("--train-fraction must be between 0 and 1")

    seen: set[str] = set()
    in_domain = dedupe(load_agentdojo(parse_version(args.agentdojo_version)), seen)
    ood = dedupe(load_bfcl(), seen)
    in_train, in_test = split(in_domain, args.train_fraction, args.seed)
    ood_train, ood_test = split(ood, args.train_fraction, args.seed)

    embedder = MiniLMEmbedder(threads=args.threads)
    start = time.perf_counter()
    embedder.load()
    load_s = time.perf_counter() - start
    examples = {s: [q.text for q in in_train if q.group == s] for s in SUITES}
    rejects = tuple(q.text for q in ood_train)
    results = []
    for method in ("knn", "centroid"):
        for reject_examples in (rejects, ()):
            node = RouterNode(
                name="router",
                inputs={},
                routes=routes_from(examples),
                reject=REJECT,
                reject_examples=reject_examples,
                method=method,
                k=args.k,
                keep=args.keep,
                embedder=embedder,
            )
            label = f"{method}" + (f" k={args.k}" if method == "knn" else "")
            label += (
                f", threshold from {len(rejects)} reject examples"
                if reject_examples
                else f", threshold from keep={args.keep}"
            )
            print(f"running: {label}", flush=True)
            results.append(evaluate(label, node, in_test, ood_test, args.warmup))

    print()
    print(
        f"machine: {platform.machine()}, Python {platform.python_version()}; "
        f"AgentDojo {args.agentdojo_version}, seed {args.seed}, "
        f"train fraction {args.train_fraction}; embedder load {load_s:.1f} s"
    )
    print()
    print("| route | train | test |")
    print("|---|---:|---:|")
    for group in [*in_domain, *ood]:
        kind = "" if group in in_domain else "out-of-domain: "
        n_train = sum(q.group == group for q in [*in_train, *ood_train])
        n_test = sum(q.group == group for q in [*in_test, *ood_test])
        print(f"| {kind}{group} | {n_train} | {n_test} |")
    print(f"| **in-domain total** | {len(in_train)} | {len(in_test)} |")
    print(f"| **out-of-domain total** | {len(ood_train)} | {len(ood_test)} |")
    print()
    print(
        "| config | in-domain accuracy | OOD rejection | harmonic mean | p50 ms | p95 ms "
        "| threshold | fit s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r.config} | {r.accuracy:.3f} | {r.rejection:.3f} "
            f"| {harmonic(r.accuracy, r.rejection):.3f} | {r.p50_ms:.1f} | {r.p95_ms:.1f} "
            f"| {r.threshold:.3f} | {r.fit_s:.2f} |"
        )
    print()
    print(
        f"in-domain test {len(in_test)} queries, out-of-domain test {len(ood_test)}; latency "
        f"over all {len(in_test) + len(ood_test)} test queries of a configuration; fit time "
        "= embedding the examples (and reject examples) and calibrating"
    )
    for r in results:
        routes = [*SUITES, REJECT]
        cells = "; ".join(
            f"{truth} -> " + ", ".join(f"{d} {r.confusion[truth].get(d, 0)}" for d in routes)
            for truth in SUITES
        )
        print(f"\n{r.config}: in-domain decisions: {cells}")
        for score, route, q in r.accepted_ood[: args.show]:
            text = " ".join(q.text.split())
            short = text[:100] + ("..." if len(text) > 100 else "")
            print(f"  accepted OOD ({q.group}) as {route}, score {score:.3f}: {short}")


if __name__ == "__main__":
    main()
