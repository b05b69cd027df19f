"""Tool retrieval on BFCL v4: recall and latency of flowroute's hybrid tool index.

The corpus pools every distinct function document in the BFCL v4 data shipped in the
`bfcl-eval` PyPI package (single-turn, live and multi-turn function docs: thousands of
tools). Each question that has a ground truth becomes a query; its relevant tools are the
functions its ground-truth calls name (among the docs offered with that question).

Printed, for BM25 only, dense concatenation, dense TDWA and the hybrid (RRF of BM25 with the
index's default dense scoring): recall@1/5/10 and nDCG@10; p50/p95 query latency; index build
time; single-tool update time; peak memory.

Setup (never downloads anything at run time):

    pip install ".[retrieval]"
    pip install --no-deps bfcl-eval
    python benchmarks/tool_retrieval.py

`--weights name=0.2,description=0.4,...` sets TDWA weights; `--sweep` tries a small grid of
weights (tuned on the even-numbered queries, reported on the odd ones). This is a benchmark
script, not a test: pytest does not collect it.
"""

from __future__ import annotations

import argparse
import importlib.resources
import json
import math
import platform
import random
import resource
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flowroute.retrieval.embedder import MiniLMEmbedder
from flowroute.retrieval.index import DEFAULT_WEIGHTS, FIELDS, ToolDocument, ToolIndex

MODES = ("bm25", "concat", "tdwa", "hybrid")


@dataclass
class Query:
    id: str
    text: str
    relevant: frozenset[str]


def data_dir() -> Path:
    try:
        return Path(str(importlib.resources.files("bfcl_eval") / "data"))
    except ModuleNotFoundError:
        sys.exit("bfcl-eval is not installed: pip install --no-deps bfcl-eval")


def _doc_id(doc: dict[str, Any]) -> str:
    return json.dumps(
        [doc.get("name"), doc.get("description", ""), doc.get("parameters", {})], sort_keys=True
    )


def _document(key: str, doc: dict[str, Any]) -> ToolDocument:
    props = (doc.get("parameters") or {}).get("properties", {}) or {}
    return ToolDocument(
        key=key,
        name=str(doc["name"]),
        description=str(doc.get("description", "")),
        parameters=tuple(
            (str(p), str(s.get("description", "")) if isinstance(s, dict) else "")
            for p, s in props.items()
        ),
    )


def _lines(path: Path) -> list[dict[str, Any]]:
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except json.JSONDecodeError:  # format_sensitivity holds templates, not questions
        return []


def load_corpus(per_document: bool = False) -> tuple[list[ToolDocument], list[Query]]:
    """Every distinct BFCL v4 function, and every question with a ground truth.

    BFCL repeats many functions under one name with small changes of wording (it has 55
    `get_current_weather` docs). A tool registry holds one tool per name, so by default the
    corpus has one document per function name (its first doc); `per_document=True` keeps
    every distinct doc as its own tool (`name#2`, `name#3`...), so a query is only right when
    it finds the very variant it was asked with.
    """
    data = data_dir()
    keys: dict[str, str] = {}  # doc identity -> corpus key
    docs: list[ToolDocument] = []
    names: dict[str, int] = {}

    def add(doc: dict[str, Any]) -> str:
        ident = _doc_id(doc) if per_document else str(doc["name"])
        if ident not in keys:
            name = str(doc["name"])
            names[name] = names.get(name, 0) + 1
            # the same function name recurs with different docs: each is its own tool
            key = name if names[name] == 1 else f"{name}#{names[name]}"
            keys[ident] = key
            docs.append(_document(key, doc))
        return keys[ident]

    for path in sorted((data / "multi_turn_func_doc").glob("*.json")):
        for doc in _lines(path):
            add(doc)
    queries: list[Query] = []
    for path in sorted(data.glob("BFCL_v4_*.json")):
        answers_file = data / "possible_answer" / path.name
        answers = (
            {row["id"]: row["ground_truth"] for row in _lines(answers_file)}
            if answers_file.exists()
            else {}
        )
        for row in _lines(path):
            offered = {str(f["name"]): add(f) for f in row.get("function", [])}
            truth = answers.get(row["id"])
            if not offered or not isinstance(truth, list):
                continue
            called = {name for call in truth if isinstance(call, dict) for name in call}
            relevant = frozenset(offered[n] for n in called if n in offered)
            turns = row["question"]
            if not relevant or not turns or not isinstance(turns[0], list):
                continue
            text = "\n".join(m["content"] for m in turns[0] if m.get("role") == "user")
            if text.strip():
                queries.append(Query(row["id"], text, relevant))
    return docs, queries


def ndcg_at(ranked: Sequence[str], relevant: frozenset[str], k: int) -> float:
    dcg = sum(1 / math.log2(i + 2) for i, key in enumerate(ranked[:k]) if key in relevant)
    ideal = sum(1 / math.log2(i + 2) for i in range(min(k, len(relevant))))
    return dcg / ideal


def recall_at(ranked: Sequence[str], relevant: frozenset[str], k: int) -> float:
    return len(set(ranked[:k]) & relevant) / len(relevant)


def quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def evaluate(index: ToolIndex, queries: Sequence[Query], mode: str) -> dict[str, float]:
    rows: dict[str, list[float]] = {"r1": [], "r5": [], "r10": [], "ndcg10": [], "lat": []}
    index._queries.clear()  # latency includes embedding each query
    for q in queries:
        start = time.perf_counter()
        hits = index.search(q.text, 10, mode=mode)  # type: ignore[arg-type]
        rows["lat"].append(time.perf_counter() - start)
        ranked = [h.key for h in hits]
        rows["r1"].append(recall_at(ranked, q.relevant, 1))
        rows["r5"].append(recall_at(ranked, q.relevant, 5))
        rows["r10"].append(recall_at(ranked, q.relevant, 10))
        rows["ndcg10"].append(ndcg_at(ranked, q.relevant, 10))
    out = {k: statistics.fmean(v) for k, v in rows.items() if k != "lat"}
    out["p50_ms"] = quantile(rows["lat"], 0.5) * 1e3
    out["p95_ms"] = quantile(rows["lat"], 0.95) * 1e3
    return out


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def parse_weights(text: str) -> dict[str, float]:
    out = {}
    for part in text.split(","):
        field, _, value = part.partition("=")
        if field.strip() not in FIELDS:
            sys.exit(f"--weights: unknown field {field!r} (fields: {', '.join(FIELDS)})")
        out[field.strip()] = float(value)
    return out


def sweep(index: ToolIndex, queries: Sequence[Query]) -> None:
    """Set the TDWA weights, dense kind and lexical weight with the best recall@10 on the
    even-numbered queries (query vectors are cached across the grid)."""
    tune = list(queries[::2])
    index.query_cache_size = len(tune) + 1
    evaluate_cached = _cached_evaluate(index)
    grid = [
        {"name": n, "description": d, "parameters": p, "examples": 0.0}
        for n in (0.1, 0.2, 0.3, 0.5)
        for d in (0.3, 0.5, 0.7)
        for p in (0.0, 0.1, 0.2, 0.4)
    ]
    best: tuple[float, dict[str, float]] = (-1.0, dict(DEFAULT_WEIGHTS))
    for weights in grid:
        index.weights = weights
        index._snapshot = None  # the TDWA matrix depends on the weights
        score = evaluate_cached(tune, "tdwa")["r10"]
        print(f"  sweep {weights}: tdwa recall@10 {score:.3f}", flush=True)
        if score > best[0]:
            best = (score, weights)
    index.weights = best[1]
    index._snapshot = None
    choice: tuple[float, str, float] = (-1.0, "concat", 1.0)
    for dense in ("concat", "tdwa"):
        for lexical in (0.25, 0.5, 0.75, 1.0):
            index.dense, index.lexical_weight = dense, lexical  # type: ignore[assignment]
            score = evaluate_cached(tune, "hybrid")["r10"]
            print(f"  sweep hybrid {dense} lexical {lexical}: recall@10 {score:.3f}", flush=True)
            if score > choice[0]:
                choice = (score, dense, lexical)
    index.dense, index.lexical_weight = choice[1], choice[2]  # type: ignore[assignment]
    index.query_cache_size = 512


def _cached_evaluate(index: ToolIndex) -> Any:
    def run(queries: Sequence[Query], mode: str) -> dict[str, float]:
        out: dict[str, list[float]] = {"r10": []}
        for q in queries:
            ranked = [h.key for h in index.search(q.text, 10, mode=mode)]  # type: ignore[arg-type]
            out["r10"].append(recall_at(ranked, q.relevant, 10))
        return {"r10": statistics.fmean(out["r10"])}

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queries", type=int, default=0, help="sample this many (0: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--weights", type=parse_weights, default=None)
    parser.add_argument("--sweep", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument(
        "--per-document", action="store_true", help="every doc variant is its own tool"
    )
    parser.add_argument("--cache", help="index directory to reuse (skips embedding on rerun)")
    args = parser.parse_args()

    docs, queries = load_corpus(args.per_document)
    if args.queries:
        queries = random.Random(args.seed).sample(queries, min(args.queries, len(queries)))
    print(f"corpus: {len(docs)} distinct tools; {len(queries)} queries", flush=True)
    embedder = MiniLMEmbedder(threads=args.threads)
    start = time.perf_counter()
    embedder.load()
    load_s = time.perf_counter() - start
    mem_before = peak_mb()

    index = ToolIndex(embedder, weights=args.weights, path=None)
    start = time.perf_counter()
    if args.cache and (Path(args.cache) / "index.json").exists():
        index = ToolIndex.load(args.cache, embedder, weights=args.weights)
    index.sync(docs)
    embed_s = time.perf_counter() - start
    start = time.perf_counter()
    index.search("warm up", 1)  # builds BM25 and the dense matrices
    build_s = time.perf_counter() - start
    if args.cache:
        index.save(args.cache)
    if args.sweep:
        sweep(index, queries)
        queries = list(queries[1::2])
        print(
            f"chosen: weights {index.weights}, dense {index.dense}, lexical weight "
            f"{index.lexical_weight}; reporting on {len(queries)} held-out queries"
        )
        index.search("warm up", 1)

    # a single-tool update: change one description, then the next query rebuilds
    victim = docs[len(docs) // 2]
    changed = ToolDocument(
        victim.key, victim.name, victim.description + " (revised)", victim.parameters
    )
    before = embedder.texts_embedded
    start = time.perf_counter()
    report = index.upsert([changed])
    upsert_s = time.perf_counter() - start
    start = time.perf_counter()
    index.search("warm up", 1)
    rebuild_s = time.perf_counter() - start
    update_texts = embedder.texts_embedded - before

    results = {mode: evaluate(index, queries, mode) for mode in MODES}
    print()
    print(f"machine: {platform.machine()}, {platform.python_version()}, weights {index.weights}")
    print(
        f"corpus {len(docs)} tools, {len(queries)} queries; hybrid = BM25 x "
        f"{index.lexical_weight} + {index.dense} (RRF k={index.rrf_k})"
    )
    print()
    print("| scoring | recall@1 | recall@5 | recall@10 | nDCG@10 | p50 ms | p95 ms |")
    print("|---|---|---|---|---|---|---|")
    for mode, r in results.items():
        print(
            f"| {mode} | {r['r1']:.3f} | {r['r5']:.3f} | {r['r10']:.3f} | {r['ndcg10']:.3f} "
            f"| {r['p50_ms']:.1f} | {r['p95_ms']:.1f} |"
        )
    print()
    print(f"embedder load: {load_s:.1f} s")
    print(
        f"index build: embedding {embed_s:.1f} s ({embed_s / max(len(docs), 1) * 1e3:.1f} ms/tool),"
        f" BM25 + matrices {build_s * 1e3:.0f} ms"
    )
    print(
        f"single-tool update: {upsert_s * 1e3:.1f} ms ({update_texts} texts embedded, "
        f"{len(report.updated)} tool updated) + {rebuild_s * 1e3:.0f} ms rebuild at next query"
    )
    print(f"peak memory: {peak_mb():.0f} MB (embedder loaded: {mem_before:.0f} MB)")


if __name__ == "__main__":
    main()
