"""Tools from typed Python callables: JSON Schema from hints and docstring, validated calls."""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import anyio
from pydantic import create_model

from flowroute.errors import OutputValidationError, ToolError
from flowroute.graph.types import ANY, TypeSpec

__all__ = ["Tool", "parse_docstring"]


def parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """Summary and per-parameter descriptions from a Google-style docstring."""
    if not doc:
        return "", {}
    doc = inspect.cleandoc(doc)
    sections = re.split(
        r"^(Args|Arguments|Parameters|Returns|Raises|Example|Examples):\s*$", doc, flags=re.M
    )
    summary = sections[0].strip()
    params: dict[str, str] = {}
    for i in range(1, len(sections) - 1, 2):
        if sections[i] in ("Args", "Arguments", "Parameters"):
            current = None
            for line in sections[i + 1].splitlines():
                m = re.match(r"^\s{0,8}(\*{0,2}\w+)\s*(\([^)]*\))?\s*:\s*(.*)$", line)
                if m:
                    current = m.group(1).lstrip("*")
                    params[current] = m.group(3).strip()
                elif current and line.strip():
                    params[current] += " " + line.strip()
    return summary, params


@dataclass(frozen=True, eq=False)
class Tool:
    """A callable with a typed signature, usable as a tool node or by an agent.

    Arguments are validated before the call and the return value after it.
    """

    fn: Callable[..., Any]
    name: str
    description: str = ""
    timeout: float | None = None
    param_docs: dict[str, str] = field(default_factory=dict)
    examples: tuple[str, ...] = ()
    """Requests this tool serves, for tool retrieval (`retrieve=` on agents)."""
    pure: bool = False
    """Free of side effects: plan search may run it while exploring (others are simulated)."""

    @classmethod
    def from_function(
        cls,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        timeout: float | None = None,
        examples: Sequence[str] = (),
        pure: bool = False,
    ) -> Tool:
        summary, params = parse_docstring(fn.__doc__)
        return cls(
            fn=fn,
            name=name or fn.__name__,
            description=description or summary,
            timeout=timeout,
            param_docs=params,
            examples=tuple(examples),
            pure=pure,
        )

    @cached_property
    def _hints(self) -> dict[str, Any]:
        return typing.get_type_hints(self.fn)

    @cached_property
    def signature(self) -> inspect.Signature:
        return inspect.signature(self.fn)

    @cached_property
    def parameters(self) -> dict[str, TypeSpec]:
        """The type of each parameter."""
        return {
            n: TypeSpec.of(self._hints.get(n, Any))
            for n, p in self.signature.parameters.items()
            if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        }

    @cached_property
    def required(self) -> frozenset[str]:
        return frozenset(
            n
            for n, p in self.signature.parameters.items()
            if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        )

    @cached_property
    def return_type(self) -> TypeSpec:
        hint = self._hints.get("return", Any)
        return ANY if hint is None else TypeSpec.of(hint)

    @cached_property
    def _args_model(self) -> type[Any]:
        from pydantic import Field

        fields: dict[str, Any] = {}
        for n, p in self.signature.parameters.items():
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            default = ... if p.default is p.empty else p.default
            fields[n] = (
                self._hints.get(n, Any),
                Field(default, description=self.param_docs.get(n)),
            )
        model: type[Any] = create_model(f"{self.name}_args", **fields)
        return model

    @cached_property
    def json_schema(self) -> dict[str, Any]:
        """JSON Schema of the arguments object (as shown to models)."""
        schema: dict[str, Any] = self._args_model.model_json_schema()
        schema.pop("title", None)
        return schema

    def validate_args(self, args: dict[str, Any]) -> dict[str, Any]:
        from pydantic import ValidationError

        try:
            model = self._args_model.model_validate(args)
        except ValidationError as exc:
            errors = [
                f"{'.'.join(map(str, e['loc'])) or '<root>'}: {e['msg']}" for e in exc.errors()
            ]
            raise ToolError(
                self.name, "invalid arguments:\n" + "\n".join(f"  - {e}" for e in errors)
            ) from exc
        return {n: getattr(model, n) for n in type(model).model_fields}

    async def call(self, args: dict[str, Any]) -> Any:
        """Validate `args`, call the function (sync in a worker thread), validate the result."""
        kwargs = self.validate_args(args)
        try:
            with anyio.fail_after(self.timeout) if self.timeout else nullcontext():
                if inspect.iscoroutinefunction(self.fn):
                    value = await self.fn(**kwargs)
                else:
                    value = await anyio.to_thread.run_sync(
                        lambda: self.fn(**kwargs), abandon_on_cancel=True
                    )
        except TimeoutError as exc:
            raise ToolError(self.name, f"timed out after {self.timeout:g}s") from exc
        except ToolError:
            raise
        except Exception as exc:
            raise ToolError(self.name, f"raised {type(exc).__name__}: {exc}") from exc
        try:
            return self.return_type.validate(value, "return value")
        except OutputValidationError as exc:
            raise ToolError(self.name, str(exc)) from exc
