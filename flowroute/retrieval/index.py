"""A hybrid index over tools: BM25 plus dense embeddings, fused by reciprocal rank fusion.

Each tool is a document with fields (name, description, parameters, example queries). Dense
scoring embeds either the fields concatenated (`"concat"`) or each field on its own and takes
a weighted average of the field vectors (`"tdwa"`, ScaleMCP's tool-document weighted average).
Vectors are stored by the hash of the text they embed, so only new or changed text is ever
embedded: an update touches only the tools whose content changed, and a saved index reloads
without embedding anything.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from flowroute.errors import FlowrouteError, MissingExtraError
from flowroute.retrieval.embedder import Embedder, default_embedder

if TYPE_CHECKING:
    from flowroute.tools.base import ToolLike

__all__ = [
    "DEFAULT_WEIGHTS",
    "FIELDS",
    "SyncReport",
    "ToolDocument",
    "ToolHit",
    "ToolIndex",
    "shared_index",
    "tool_key",
]

logger = logging.getLogger("flowroute.retrieval")

FIELDS = ("name", "description", "parameters", "examples")
DEFAULT_WEIGHTS: Mapping[str, float] = {
    "name": 0.2,
    "description": 0.4,
    "parameters": 0.1,
    "examples": 0.3,
}
Mode = Literal["hybrid", "bm25", "dense", "concat", "tdwa"]

_WORD = re.compile(r"[A-Za-z][a-z]*|[A-Z]+(?![a-z])|\d+")


def _words(text: str) -> list[str]:
    """Lower-case words, with identifiers split: `getWeather_v2` -> get, weather, v, 2."""
    return [w.lower() for w in _WORD.findall(text)]


def tool_key(tool: Any) -> str:
    """The index key of a tool: `server.tool` for MCP tools, the tool's name otherwise."""
    server = getattr(tool, "server", None)
    return f"{server}.{tool.name}" if isinstance(server, str) else str(tool.name)


@dataclass(frozen=True)
class ToolDocument:
    """What the index knows of one tool."""

    key: str
    name: str
    description: str = ""
    parameters: tuple[tuple[str, str], ...] = ()
    """(name, description) of each argument."""
    examples: tuple[str, ...] = ()
    """Queries the tool answers: given by the user, or generated once by a model."""

    @classmethod
    def from_tool(cls, tool: ToolLike, examples: Sequence[str] = ()) -> ToolDocument:
        schema = tool.json_schema or {}
        props = schema.get("properties", {}) if isinstance(schema, dict) else {}
        params = tuple(
            (str(p), str(s.get("description", "")) if isinstance(s, dict) else "")
            for p, s in props.items()
        )
        own = tuple(getattr(tool, "examples", ()) or ())
        return cls(
            key=tool_key(tool),
            name=tool.name,
            description=tool.description or "",
            parameters=params,
            examples=own + tuple(e for e in examples if e not in own),
        )

    def field_texts(self) -> dict[str, str]:
        """The text of each non-empty field, as embedded."""
        texts = {
            "name": " ".join(_words(self.name)),
            "description": self.description.strip(),
            "parameters": "; ".join(
                f"{' '.join(_words(p))}: {d}" if d else " ".join(_words(p))
                for p, d in self.parameters
            ),
            "examples": "\n".join(self.examples),
        }
        return {f: t for f, t in texts.items() if t}

    def text(self) -> str:
        """All fields in one text (what `"concat"` embeds and BM25 indexes)."""
        t = self.field_texts()
        parts = [f"{t.get('name', self.name)}: {t.get('description', '')}".strip()]
        if "parameters" in t:
            parts.append(f"Parameters: {t['parameters']}")
        if "examples" in t:
            parts.append(f"Examples: {t['examples']}")
        return "\n".join(parts)

    def digest(self) -> str:
        """A hash of the content: equal digests mean nothing to re-embed."""
        payload = json.dumps(
            [self.name, self.description, self.parameters, self.examples], ensure_ascii=False
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class ToolHit:
    """One retrieved tool: its key, fused score, and the ranks behind it (1-based, or None)."""

    key: str
    score: float
    bm25_rank: int | None = None
    dense_rank: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "tool": self.key,
            "score": round(self.score, 6),
            "bm25_rank": self.bm25_rank,
            "dense_rank": self.dense_rank,
        }


@dataclass
class SyncReport:
    """What an update did: keys added, updated, removed, and texts sent to the embedder."""

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    embedded: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.added or self.updated or self.removed)


@dataclass(frozen=True)
class _Snapshot:
    """What queries read: rebuilt after a change, swapped in whole, never mutated."""

    keys: tuple[str, ...]
    position: Mapping[str, int]
    concat: np.ndarray
    tdwa: np.ndarray
    bm25: Any


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class ToolIndex:
    """A hybrid tool index. Thread-safe: queries may run while another thread updates it.

    - `sync(tools)` makes the index hold exactly `tools`; `upsert` and `remove` change some.
    - `search(query, k)` returns the top `k` tools (`among=` restricts the candidates).
    - `watch(pool)` keeps it in step with MCP servers' `tools/list_changed`.
    - `save(path)` / `ToolIndex.load(path)` persist documents and vectors.

    `dense` picks the dense representation for `"dense"` and `"hybrid"` queries; `weights`
    are TDWA's field weights (a tool's missing fields are left out). Hybrid scores are
    `lexical_weight / (rrf_k + bm25_rank) + 1 / (rrf_k + dense_rank)`. The defaults are what
    `benchmarks/tool_retrieval.py` found best on BFCL (see docs/benchmarks.md).
    """

    def __init__(
        self,
        embedder: Embedder | None = None,
        *,
        dense: Literal["concat", "tdwa"] = "concat",
        weights: Mapping[str, float] | None = None,
        lexical_weight: float = 0.5,
        rrf_k: int = 60,
        path: str | os.PathLike[str] | None = None,
    ) -> None:
        self.embedder: Embedder = embedder if embedder is not None else default_embedder()
        self.dense = dense
        self.weights = dict(weights if weights is not None else DEFAULT_WEIGHTS)
        unknown = set(self.weights) - set(FIELDS)
        if unknown:
            raise FlowrouteError(f"unknown TDWA field(s) {sorted(unknown)}; fields: {FIELDS}")
        self.rrf_k = rrf_k
        self.lexical_weight = lexical_weight
        self.path = Path(path) if path is not None else None
        self._docs: dict[str, ToolDocument] = {}
        self._digests: dict[str, str] = {}
        self._vectors: dict[str, np.ndarray] = {}
        self._examples: dict[str, tuple[str, ...]] = {}
        self._lock = threading.RLock()
        self._snapshot: _Snapshot | None = None
        # agents query again at each step, often with the same text
        self._queries: OrderedDict[str, np.ndarray] = OrderedDict()
        self.query_cache_size = 512
        if self.path is not None and (self.path / "index.json").exists():
            self._read(self.path)

    # -- contents ------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._docs)

    def __contains__(self, key: object) -> bool:
        return key in self._docs

    def keys(self) -> list[str]:
        return list(self._docs)

    def document(self, key: str) -> ToolDocument:
        return self._docs[key]

    def add_examples(self, key: str, examples: Sequence[str]) -> SyncReport:
        """Store example queries for a tool, kept across `sync` and `save` (for instance ones a
        model wrote once), and re-embed the tool if it is indexed."""
        with self._lock:
            stored = self._examples.get(key, ())
            self._examples[key] = stored + tuple(e for e in examples if e not in stored)
            doc = self._docs.get(key)
            if doc is None:
                return SyncReport()
            report = self._put([self._document(doc)])
            self._after(report)
            return report

    async def generate_examples(
        self, model: Any, keys: Iterable[str] | None = None, *, n: int = 3
    ) -> dict[str, tuple[str, ...]]:
        """Ask `model` (a `Model`, or a model reference such as `"local"`) for `n` example
        requests for each tool in `keys` (default: all) that has no examples yet, and
        store them (`add_examples`). Generated once: a saved index keeps them.

        The output is constrained to a JSON list of `n` strings, so a base model can do it.
        Returns the examples generated, by key.
        """
        import anyio

        from flowroute.models.base import ModelRequest, Settings
        from flowroute.models.registry import resolve_model
        from flowroute.structured.constraint import OutputConstraint

        resolved = resolve_model(model) if isinstance(model, str) else model
        schema = {
            "type": "array",
            # no string bounds: for a local model they would multiply the grammar's states
            "items": {"type": "string"},
            "minItems": n,
            "maxItems": n,
        }
        constraint = OutputConstraint.json_schema(schema)
        out: dict[str, tuple[str, ...]] = {}
        wanted = list(self._docs) if keys is None else list(keys)
        for key in wanted:
            doc = self._docs.get(key)
            if doc is None:
                raise FlowrouteError(f"no tool '{key}' in the index")
            if doc.examples:  # given by the tool, or generated before
                continue
            params = ", ".join(p for p, _ in doc.parameters) or "none"
            prompt = (
                f"{_EXAMPLES_SHOT}\nTool: {doc.name}\nDescription: {doc.description}\n"
                f"Parameters: {params}\nRequests:"
            )
            request = ModelRequest(
                prompt=prompt,
                constraint=constraint,
                settings=Settings(max_tokens=64 * n, temperature=0.0),
            )
            response = await resolved.generate(request)
            found = tuple(t for e in response.value if (t := str(e).strip()))
            await anyio.to_thread.run_sync(self.add_examples, key, found)
            out[key] = found
        return out

    def _document(self, tool: ToolLike | ToolDocument) -> ToolDocument:
        doc = tool if isinstance(tool, ToolDocument) else ToolDocument.from_tool(tool)
        extra = [e for e in self._examples.get(doc.key, ()) if e not in doc.examples]
        return _with_examples(doc, doc.examples + tuple(extra)) if extra else doc

    def sync(self, tools: Iterable[ToolLike | ToolDocument]) -> SyncReport:
        """Make the index hold exactly `tools`, embedding only what is new or changed."""
        docs = [self._document(t) for t in tools]
        with self._lock:
            keep = {d.key for d in docs}
            report = self._put(docs)
            gone = [k for k in self._docs if k not in keep]
            report.removed = self._drop(gone)
            self._after(report)
            return report

    def upsert(self, tools: Iterable[ToolLike | ToolDocument]) -> SyncReport:
        """Add or update `tools`; tools whose content is unchanged cost nothing."""
        docs = [self._document(t) for t in tools]
        with self._lock:
            report = self._put(docs)
            self._after(report)
            return report

    def remove(self, keys: Iterable[str]) -> SyncReport:
        """Remove tools by key; unknown keys are ignored."""
        with self._lock:
            report = SyncReport(removed=self._drop(list(keys)))
            self._after(report)
            return report

    def _put(self, docs: Sequence[ToolDocument]) -> SyncReport:
        report = SyncReport()
        fresh: list[tuple[ToolDocument, str]] = []
        for doc in docs:
            digest = doc.digest()
            old = self._digests.get(doc.key)
            if old == digest:
                continue
            (report.updated if old is not None else report.added).append(doc.key)
            fresh.append((doc, digest))
        if not fresh:
            return report
        texts: dict[str, str] = {}
        for doc, _ in fresh:
            for text in (*doc.field_texts().values(), doc.text()):
                sha = _sha(text)
                if sha not in self._vectors:
                    texts[sha] = text
        if texts:
            vectors = self.embedder.embed(list(texts.values()))
            for sha, vector in zip(texts, vectors, strict=True):
                self._vectors[sha] = vector
        report.embedded = len(texts)
        for doc, digest in fresh:
            self._docs[doc.key] = doc
            self._digests[doc.key] = digest
        return report

    def _drop(self, keys: Sequence[str]) -> list[str]:
        removed = [k for k in keys if k in self._docs]
        for k in removed:
            del self._docs[k]
            del self._digests[k]
        return removed

    def _after(self, report: SyncReport) -> None:
        if report.changed:
            self._snapshot = None
            if self.path is not None:
                self.save(self.path)

    # -- queries -------------------------------------------------------------------------------

    def _tdwa(self, doc: ToolDocument) -> np.ndarray:
        total = np.zeros(self._dim(), dtype=np.float32)
        texts = doc.field_texts()
        for f, text in texts.items():
            total += self.weights.get(f, 0.0) * self._vectors[_sha(text)]
        norm = float(np.linalg.norm(total))
        return total / norm if norm > 0 else total

    def _dim(self) -> int:
        return next(iter(self._vectors.values())).shape[0] if self._vectors else 384

    def _build(self) -> _Snapshot:
        with self._lock:
            if self._snapshot is not None:
                return self._snapshot
            try:
                import bm25s
            except ImportError as exc:
                raise MissingExtraError("bm25s", "retrieval", "Tool retrieval") from exc
            keys = tuple(self._docs)
            dim = self._dim()
            concat = np.zeros((len(keys), dim), dtype=np.float32)
            tdwa = np.zeros((len(keys), dim), dtype=np.float32)
            for i, k in enumerate(keys):
                doc = self._docs[k]
                concat[i] = self._vectors[_sha(doc.text())]
                tdwa[i] = self._tdwa(doc)
            bm25 = None
            if keys:
                bm25 = bm25s.BM25()
                bm25.index(
                    [_stem(_words(self._docs[k].text())) or ["_"] for k in keys],
                    show_progress=False,
                )
            self._snapshot = _Snapshot(keys, {k: i for i, k in enumerate(keys)}, concat, tdwa, bm25)
            return self._snapshot

    def search(
        self,
        query: str,
        k: int = 5,
        *,
        mode: Mode = "hybrid",
        among: Collection[str] | None = None,
    ) -> list[ToolHit]:
        """The `k` best tools for `query`, best first.

        `mode`: `"hybrid"` (BM25 and dense fused by RRF), `"bm25"`, `"dense"` (the index's
        `dense` setting), `"concat"` or `"tdwa"`. `among` restricts results to those keys.
        """
        snap = self._build()
        n = len(snap.keys)
        if n == 0 or k <= 0:
            return []
        mask: np.ndarray | None = None
        if among is not None:
            mask = np.zeros(n, dtype=bool)
            idx = [snap.position[a] for a in among if a in snap.position]
            if not idx:
                return []
            mask[idx] = True
        lexical = mode in ("hybrid", "bm25")
        dense_kind = self.dense if mode in ("hybrid", "dense") else mode
        bm25_order = dense_order = None
        bm25_scores = dense_scores = None
        if lexical:
            tokens = [t for t in _stem(_words(query)) if t in snap.bm25.vocab_dict]
            bm25_scores = snap.bm25.get_scores(tokens) if tokens else np.zeros(n, dtype=np.float32)
            bm25_order = _ranked(bm25_scores, mask, positive=True)
        if dense_kind in ("concat", "tdwa"):
            q = self._query_vector(query)
            matrix = snap.concat if dense_kind == "concat" else snap.tdwa
            # not `matrix @ q`: BLAS's worker threads would spin against the embedder's, and
            # the next query's embedding took 2-4x longer (measured on 2 cores)
            dense_scores = np.einsum("ij,j->i", matrix, q, optimize=False)
            dense_order = _ranked(dense_scores, mask, positive=False)
        if bm25_order is not None and dense_order is not None:
            fused: dict[int, float] = {}
            depth = max(k * 10, 100)
            bm25_rank = {int(i): r for r, i in enumerate(bm25_order[:depth], 1)}
            dense_rank = {int(i): r for r, i in enumerate(dense_order[:depth], 1)}
            for weight, ranks in ((self.lexical_weight, bm25_rank), (1.0, dense_rank)):
                for i, r in ranks.items():
                    fused[i] = fused.get(i, 0.0) + weight / (self.rrf_k + r)
            best = sorted(fused, key=lambda i: -fused[i])[:k]
            return [
                ToolHit(snap.keys[i], fused[i], bm25_rank.get(i), dense_rank.get(i)) for i in best
            ]
        if bm25_order is not None:
            assert bm25_scores is not None
            return [
                ToolHit(snap.keys[i], float(bm25_scores[i]), bm25_rank=r)
                for r, i in enumerate(bm25_order[:k], 1)
            ]
        assert dense_order is not None and dense_scores is not None
        return [
            ToolHit(snap.keys[i], float(dense_scores[i]), dense_rank=r)
            for r, i in enumerate(dense_order[:k], 1)
        ]

    def _query_vector(self, query: str) -> np.ndarray:
        with self._lock:
            cached = self._queries.get(query)
            if cached is not None:
                self._queries.move_to_end(query)
                return cached
        vector: np.ndarray = self.embedder.embed([query])[0]
        with self._lock:
            self._queries[query] = vector
            while len(self._queries) > self.query_cache_size:
                self._queries.popitem(last=False)
        return vector

    # -- MCP -----------------------------------------------------------------------------------

    def watch(self, pool: Any) -> Any:
        """Follow `pool`'s tool-list changes: removed tools leave the index, added and changed
        ones are (re-)embedded off the event loop. Returns the unsubscribe function."""
        import anyio

        async def changed(
            server: str, added: Sequence[Any], removed: Sequence[Any], updated: Sequence[Any]
        ) -> None:
            gone = [tool_key(t) for t in removed]
            fresh = [*added, *updated]

            def apply() -> None:
                with self._lock:
                    if gone:
                        self.remove(gone)
                    if fresh:
                        self.upsert(fresh)

            await anyio.to_thread.run_sync(apply)

        return pool.on_tools_changed(changed)

    # -- persistence ---------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write documents and their vectors to the directory `path` (atomically per file)."""
        target = Path(path)
        with self._lock:
            needed: dict[str, None] = {}
            for doc in self._docs.values():
                for text in (*doc.field_texts().values(), doc.text()):
                    needed[_sha(text)] = None
            shas = [s for s in needed if s in self._vectors]
            matrix = (
                np.stack([self._vectors[s] for s in shas])
                if shas
                else np.zeros((0, self._dim()), dtype=np.float32)
            )
            meta = {
                "format": 1,
                "embedder": self.embedder.name,
                "documents": [
                    {
                        "key": d.key,
                        "name": d.name,
                        "description": d.description,
                        "parameters": [list(p) for p in d.parameters],
                        "examples": list(d.examples),
                    }
                    for d in self._docs.values()
                ],
                "examples": {k: list(v) for k, v in self._examples.items()},
                "vectors": shas,
            }
        target.mkdir(parents=True, exist_ok=True)
        tmp = target / f"vectors.{os.getpid()}.{threading.get_ident()}.tmp.npy"
        np.save(tmp, matrix)
        os.replace(tmp, target / "vectors.npy")
        tmp_json = target / f"index.{os.getpid()}.{threading.get_ident()}.tmp"
        tmp_json.write_text(json.dumps(meta))
        os.replace(tmp_json, target / "index.json")

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], embedder: Embedder | None = None, **options: Any
    ) -> ToolIndex:
        """An index saved by `save`; nothing is embedded again."""
        index = cls(embedder, **options)
        index._read(Path(path))
        return index

    def _read(self, path: Path) -> None:
        try:
            meta = json.loads((path / "index.json").read_text())
            matrix = np.load(path / "vectors.npy")
        except (OSError, ValueError) as exc:
            raise FlowrouteError(f"cannot read the tool index in {path}: {exc}") from exc
        if meta.get("embedder") != self.embedder.name:
            logger.warning(
                "tool index %s was built with embedder %r, not %r: its vectors are not used",
                path,
                meta.get("embedder"),
                self.embedder.name,
            )
            vectors: dict[str, np.ndarray] = {}
        else:
            vectors = dict(zip(meta["vectors"], matrix, strict=True))
        with self._lock:
            self._vectors.update(vectors)
            self._examples.update({k: tuple(v) for k, v in meta.get("examples", {}).items()})
            docs = [
                ToolDocument(
                    key=d["key"],
                    name=d["name"],
                    description=d["description"],
                    parameters=tuple((p[0], p[1]) for p in d["parameters"]),
                    examples=tuple(d["examples"]),
                )
                for d in meta["documents"]
            ]
            path_before, self.path = self.path, None  # no write-back while loading
            try:
                self._put(docs)
            finally:
                self.path = path_before
            self._snapshot = None


_EXAMPLES_SHOT = """Write requests a user might make that this tool serves.

Tool: get_weather
Description: Current weather conditions for a city.
Parameters: city, unit
Requests: ["Is it raining in Lisbon right now?", "What's the temperature in Chicago in \
Fahrenheit?", "How windy is it in Wellington today?"]
"""

_shared: ToolIndex | None = None
_shared_lock = threading.Lock()


def shared_index() -> ToolIndex:
    """The process-wide index agents use by default, saved under the cache directory
    (`$FLOWROUTE_CACHE_DIR/tool-index`; in memory only when that variable is empty)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            from flowroute.cache import default_cache_dir

            cache = default_cache_dir()
            path = Path(cache) / "tool-index" if cache else None
            try:
                _shared = ToolIndex(path=path)
            except FlowrouteError as exc:  # an unreadable cache is rebuilt, not fatal
                logger.warning("%s; starting a new tool index", exc)
                _shared = ToolIndex()
                _shared.path = path
        return _shared


def _with_examples(doc: ToolDocument, examples: tuple[str, ...]) -> ToolDocument:
    return ToolDocument(doc.key, doc.name, doc.description, doc.parameters, examples)


def _ranked(scores: np.ndarray, mask: np.ndarray | None, *, positive: bool) -> np.ndarray:
    """Indices by descending score, leaving out masked rows (and, for BM25, zero scores)."""
    valid = scores > 0 if positive else np.ones(scores.shape[0], dtype=bool)
    if mask is not None:
        valid &= mask
    idx = np.flatnonzero(valid)
    return idx[np.argsort(-scores[idx], kind="stable")]


_stemmer: Any = None


def _stem(words: list[str]) -> list[str]:
    global _stemmer
    if _stemmer is None:
        try:
            import Stemmer

            _stemmer = Stemmer.Stemmer("english").stemWords
        except ImportError:  # stemming helps recall but is not required
            _stemmer = lambda ws: ws  # noqa: E731
    out: list[str] = _stemmer([w for w in words if w not in _STOP])
    return out


_STOP = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "for",
        "from",
        "has",
        "have",
        "i",
        "in",
        "is",
        "it",
        "its",
        "me",
        "my",
        "of",
        "on",
        "or",
        "our",
        "please",
        "that",
        "the",
        "this",
        "to",
        "was",
        "what",
        "when",
        "where",
        "which",
        "who",
        "will",
        "with",
        "you",
        "your",
        "can",
        "could",
        "would",
        "should",
        "do",
        "does",
    ]
)
