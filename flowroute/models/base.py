"""The `Model` interface every LLM node calls, with its request and response types."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Literal

from flowroute.structured.constraint import OutputConstraint

__all__ = ["Message", "Model", "ModelRequest", "ModelResponse", "Settings"]

Message = dict[str, Any]
"""A chat message: `{"role": "system" | "user" | "assistant" | "tool", "content": "..."}`
(assistant messages may carry `tool_calls`, tool messages a `tool_call_id`)."""


@dataclass(frozen=True)
class Settings:
    """Sampling settings. Defaults are deterministic (greedy) decoding."""

    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = 0
    stop: tuple[str, ...] = ()
    logprobs: bool = False


@dataclass(frozen=True)
class ModelRequest:
    """A completion `prompt` or chat `messages`, and an optional output constraint."""

    prompt: str | None = None
    messages: tuple[Message, ...] = ()
    constraint: OutputConstraint | None = None
    settings: Settings = field(default_factory=Settings)
    tools: tuple[dict[str, Any], ...] = ()
    """Tools offered for native tool calling (`{"name", "description", "parameters"}`), for
    models with `native_tools`; the reply's calls come back in `ModelResponse.tool_calls`."""
    tool_choice: Any = None
    """`"auto"` (default), or a provider-specific forced choice."""

    def as_messages(self) -> list[Message]:
        if self.messages:
            return [dict(m) for m in self.messages]
        return [{"role": "user", "content": self.prompt or ""}]

    def as_prompt(self) -> str:
        """A completion prompt; chat messages are flattened for base (non-chat) models."""
        if self.prompt is not None and not self.messages:
            return self.prompt
        parts = [f"{m['role'].capitalize()}: {m.get('content') or ''}" for m in self.messages]
        return "\n\n".join(parts) + "\n\nAssistant: "


@dataclass
class ModelResponse:
    """What a model returned; `value` is the parsed, validated output when constrained."""

    text: str
    model: str
    value: Any = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency: float = 0.0
    cost: float | None = None
    """In USD; None when unknown."""
    logprobs: list[float] | None = None
    """Log-probability of each generated token, where the backend provides them."""
    constrained: bool = False
    """True only when a grammar constraint was verifiably applied while decoding."""
    finish_reason: Literal["stop", "length", "other"] = "stop"
    attempts: int = 1
    """Calls made, including repair retries."""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    """Native tool calls: `{"id", "name", "arguments"}` (arguments decoded from JSON)."""
    raw: Any = None


class Model(ABC):
    """A language model backend. Implement `generate`; everything else has defaults.

    `max_concurrency` bounds how many calls the engine sends to this model at once.
    """

    name: str = "model"
    max_concurrency: int | None = None

    @property
    def native_tools(self) -> bool:
        """Whether `generate` honours `ModelRequest.tools` (provider-native tool calling)."""
        return False

    @abstractmethod
    async def generate(self, request: ModelRequest) -> ModelResponse:
        """Generate a response; when `request.constraint` is set, `value` must satisfy it."""

    def check(self) -> list[str]:
        """Configuration problems found without calling the model (missing file, missing key)."""
        return []

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"
