"""Model backends: the embedded local model, litellm, and scripted test models.

```python
import flowroute as fr
small = fr.models.local()                                   # Gemma 3 270M, in-process
big = fr.models.litellm("openai/gpt-4o-mini", api_key_env="OPENAI_API_KEY")
```
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flowroute.models.base import Model, ModelRequest, ModelResponse, Settings

if TYPE_CHECKING:
    from flowroute.models.litellm_model import LiteLLMModel
    from flowroute.models.llamacpp import LocalModel

__all__ = ["Model", "ModelRequest", "ModelResponse", "Settings", "litellm", "local"]


def local(path: str | None = None, **options: Any) -> LocalModel:
    """An in-process llama.cpp model: the embedded Gemma 3 270M, or any GGUF file at `path`.

    Options: `n_ctx`, `n_threads`, `name`. Loaded on first use, once per process.
    """
    from flowroute.models.llamacpp import LocalModel

    return LocalModel(path=path, **options)


def litellm(name: str, **options: Any) -> LiteLLMModel:
    """A model reached through litellm: any provider string, or `api_base` for an
    OpenAI-compatible server. Options: `api_base`, `api_key_env`, `repair_retries`, ..."""
    from flowroute.models.litellm_model import LiteLLMModel

    return LiteLLMModel(name, **options)
