"""Scripted models for tests: no network, no weights, deterministic.

Example:
    ```python
    from flowroute.models.testing import TestModel, FunctionModel

    model = TestModel(["refund", '{"team": "billing"}'])      # replies in order
    echo = FunctionModel(lambda req: req.as_prompt()[-20:])      # computed replies
    ```
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio

from flowroute.errors import ModelError, OutputValidationError
from flowroute.models.base import Model, ModelRequest, ModelResponse

__all__ = ["FunctionModel", "TestModel"]


class FunctionModel(Model):
    """A model whose reply is computed by `fn(request)` (sync or async).

    Replies are parsed against the request's constraint exactly like a real backend's, so
    an invalid scripted reply raises `ModelError` with the validation errors. `fn` may also
    return `(text, logprobs)` to script token log-probabilities (for confidence verifiers).
    """

    __test__ = False

    def __init__(
        self,
        fn: Callable[[ModelRequest], Any],
        *,
        name: str = "function",
        cost_per_call: float | None = 0.0,
        delay: float = 0.0,
        tokens_per_call: int = 10,
        max_concurrency: int | None = None,
    ) -> None:
        self.fn = fn
        self.name = name
        self.cost_per_call = cost_per_call
        self.delay = delay
        self.tokens_per_call = tokens_per_call
        self.max_concurrency = max_concurrency
        self.requests: list[ModelRequest] = []

    async def generate(self, request: ModelRequest) -> ModelResponse:
        start = time.perf_counter()
        self.requests.append(request)
        if self.delay:
            await anyio.sleep(self.delay)
        reply = self.fn(request)
        if isinstance(reply, Awaitable):
            reply = await reply
        logprobs: list[float] | None = None
        if isinstance(reply, tuple):
            reply, logprobs = reply[0], [float(x) for x in reply[1]]
        text: str = reply
        value: Any = text
        if request.constraint is not None:
            try:
                value = request.constraint.parse(text)
            except OutputValidationError as exc:
                raise ModelError(
                    self.name,
                    "output does not match the schema",
                    raw_text=text,
                    validation_errors=exc.errors,
                ) from exc
        return ModelResponse(
            text=text,
            model=self.name,
            value=value,
            prompt_tokens=len(request.as_prompt().split()),
            completion_tokens=self.tokens_per_call,
            latency=time.perf_counter() - start,
            cost=self.cost_per_call,
            logprobs=logprobs if request.settings.logprobs else None,
        )


class TestModel(FunctionModel):
    """A model that replies with `replies` in order (cycling when `cycle=True`)."""

    __test__ = False

    def __init__(self, replies: Sequence[str] | str, *, cycle: bool = False, **kw: Any) -> None:
        self.replies = [replies] if isinstance(replies, str) else list(replies)
        self.cycle = cycle
        self._i = 0
        kw.setdefault("name", "test")
        super().__init__(self._next, **kw)

    def _next(self, request: ModelRequest) -> str:
        if self._i >= len(self.replies) and not self.cycle:
            raise ModelError(
                self.name, f"scripted replies exhausted after {len(self.replies)} call(s)"
            )
        reply = self.replies[self._i % len(self.replies)]
        self._i += 1
        return reply
