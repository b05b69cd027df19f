"""Resolving model references: `local`, `local:/x.gguf`, litellm strings, declared names."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from flowroute.errors import ModelError
from flowroute.models.base import Model

__all__ = ["check_model_ref", "describe_ref", "resolve_model"]

_shared: dict[str, Model] = {}
_lock = threading.Lock()


def describe_ref(ref: Any) -> str:
    return ref if isinstance(ref, str) else getattr(ref, "name", repr(ref))


def _from_string(ref: str) -> Model:
    if ref == "local" or ref.startswith("local:"):
        from flowroute.models.llamacpp import LocalModel

        path = ref.partition(":")[2] or None
        return LocalModel(path=path)
    if "/" in ref:
        from flowroute.models.litellm_model import LiteLLMModel

        return LiteLLMModel(ref)
    raise ModelError(
        ref,
        "unknown model: use 'local', 'local:/path/model.gguf', a litellm 'provider/model' "
        "string, or a name declared under 'models'",
    )


def resolve_model(ref: Any, declared: Mapping[str, Any] | None = None) -> Model:
    """The `Model` for `ref`. Models named by string are created once per process and shared."""
    if isinstance(ref, Model):
        return ref
    if not isinstance(ref, str):
        raise ModelError(repr(ref), "a model must be a string or a flowroute Model")
    if declared and ref in declared:
        return resolve_model(declared[ref])
    with _lock:
        if ref not in _shared:
            _shared[ref] = _from_string(ref)
        return _shared[ref]


def check_model_ref(ref: Any, declared: Mapping[str, Any] | None = None) -> list[str]:
    """Problems with a model reference, found without loading or calling the model."""
    if ref is None:
        return ["no model given"]
    from flowroute.cascade.cascade import Cascade

    if isinstance(ref, Cascade):
        return ref.check(declared)
    try:
        model = resolve_model(ref, declared)
    except ModelError as exc:
        return [str(exc)]
    return model.check()
