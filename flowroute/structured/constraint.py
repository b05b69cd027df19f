"""Output constraints: what a model's output must be, as a schema, a choice or a regex.

One object serves every backend: local models compile it to a grammar (`regex()`),
remote models get its JSON Schema, and every output is checked with `parse()`.
"""

from __future__ import annotations

import enum
import json
import re
import typing
from dataclasses import dataclass
from typing import Any, Literal

from flowroute.errors import OutputValidationError
from flowroute.graph.types import TypeSpec

__all__ = ["OutputConstraint"]

WHITESPACE = r"[ ]?"
"""Whitespace allowed between JSON tokens: small models otherwise loop on newlines."""

_NUMBER = r"((-)?(0|[1-9][0-9]*))(\.[0-9]+)?([eE][+-][0-9]+)?"
_BOUNDED_NUMBER = r"((-)?(0|[1-9][0-9]{0,14}))(\.[0-9]{1,8})?([eE][+-][0-9]{1,3})?"
_INTEGER = r"(-)?(0|[1-9][0-9]*)"
_BOUNDED_INTEGER = r"(-)?(0|[1-9][0-9]{0,14})"
MAX_ENUM_RANGE = 1000
"""Integer ranges up to this size compile to an exact enum (outlines ignores minimum/maximum)."""

DEFAULT_MAX_ITEMS = 8
"""Bound added to unbounded arrays when decoding locally.

Small models can repeat a list item until `max_tokens` runs out; a bounded grammar still
admits only outputs valid against the original schema. Strings are left unbounded: a length
bound multiplies the grammar's states and makes compiling it minutes slower.
"""


@dataclass(frozen=True, eq=False)
class OutputConstraint:
    """The shape a model's output must take.

    Example:
        ```python
        OutputConstraint.of(Literal["refund", "question"])   # a choice
        OutputConstraint.of(Ticket)                          # a pydantic model -> JSON Schema
        OutputConstraint.regex(r"[A-Z]{3}-\\d{4}")
        ```
    """

    kind: Literal["json", "choice", "regex"]
    type: TypeSpec
    choices: tuple[str, ...] = ()
    pattern: str = ""

    @classmethod
    def of(cls, tp: Any) -> OutputConstraint | None:
        """The constraint for a Python type; None for `str`/`Any` (free text)."""
        if tp in (str, Any, None):
            return None
        if isinstance(tp, dict):
            return cls.json_schema(tp)
        choices = _string_choices(tp)
        if choices is not None:
            return cls(kind="choice", type=TypeSpec.of(tp), choices=choices)
        return cls(kind="json", type=TypeSpec.of(tp))

    @classmethod
    def json_schema(cls, schema: dict[str, Any]) -> OutputConstraint:
        """Output must be JSON valid against `schema`."""
        spec = TypeSpec.from_schema(schema)
        enum_values = schema.get("enum")
        if (
            schema.get("type") == "string"
            and enum_values
            and all(isinstance(v, str) for v in enum_values)
        ):
            return cls(kind="choice", type=spec, choices=tuple(enum_values))
        annotations = {"type", "pattern", "title", "description", "$schema", "examples"}
        if schema.get("type") == "string" and "pattern" in schema and set(schema) <= annotations:
            return cls(kind="regex", type=spec, pattern=_unanchor(schema["pattern"]))
        return cls(kind="json", type=spec)

    @classmethod
    def regex(cls, pattern: str) -> OutputConstraint:
        """Output must match `pattern` in full."""
        re.compile(pattern)
        return cls(kind="regex", type=TypeSpec.from_schema({"type": "string"}), pattern=pattern)

    @property
    def schema(self) -> dict[str, Any]:
        return self.type.schema

    def to_regex(self) -> str:
        """The regular language outputs must belong to (compiled to a grammar for local models)."""
        # A leading space is allowed: after "Label:" a base model's natural next token has one.
        if self.kind == "choice":
            return WHITESPACE + "(" + "|".join(re.escape(c) for c in self.choices) + ")"
        if self.kind == "regex":
            return self.pattern
        from outlines_core.json_schema import build_regex_from_schema

        bounded = bound_schema(self.schema, DEFAULT_MAX_ITEMS)
        regex = str(build_regex_from_schema(json.dumps(bounded), WHITESPACE))
        # Unbounded digit runs let a small model emit digits until max_tokens runs out.
        regex = regex.replace(_NUMBER, _BOUNDED_NUMBER).replace(_INTEGER, _BOUNDED_INTEGER)
        return WHITESPACE + regex

    def parse(self, text: str, what: str = "model output") -> Any:
        """The validated value for `text`, or `OutputValidationError` saying what is wrong."""
        if self.kind == "choice":
            stripped = text.strip()
            if stripped not in self.choices:
                raise OutputValidationError(
                    what, [f"{stripped!r} is not one of {list(self.choices)}"], text
                )
            return self.type.validate(stripped, what)
        if self.kind == "regex":
            if re.fullmatch(self.pattern, text) is None:
                raise OutputValidationError(what, [f"does not match /{self.pattern}/"], text)
            return text
        try:
            data = json.loads(_strip_fences(text))
        except json.JSONDecodeError as exc:
            raise OutputValidationError(what, [f"not valid JSON: {exc}"], text) from exc
        return self.type.validate(data, what)

    def describe(self) -> str:
        """A one-paragraph description for prompts and repair messages."""
        if self.kind == "choice":
            return "Answer with exactly one of: " + ", ".join(self.choices)
        if self.kind == "regex":
            return f"Answer with text matching the regular expression /{self.pattern}/"
        return "Answer with a JSON value valid against this JSON Schema:\n" + json.dumps(
            self.schema
        )


def bound_schema(schema: Any, max_items: int) -> Any:
    """A copy of `schema` with `maxItems` added to arrays without one (a subset of its language)."""
    if isinstance(schema, list):
        return [bound_schema(s, max_items) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: bound_schema(v, max_items) for k, v in schema.items()}
    types = out.get("type")
    types = types if isinstance(types, list) else [types]
    if "array" in types and "maxItems" not in out:
        out["maxItems"] = max(max_items, out.get("minItems", 0))
    if types == ["integer"] and "enum" not in out:
        lo = out.get("minimum", out["exclusiveMinimum"] + 1 if "exclusiveMinimum" in out else None)
        hi = out.get("maximum", out["exclusiveMaximum"] - 1 if "exclusiveMaximum" in out else None)
        if isinstance(lo, int) and isinstance(hi, int) and 0 <= hi - lo < MAX_ENUM_RANGE:
            return {"enum": list(range(lo, hi + 1))}
    return out


def _string_choices(tp: Any) -> tuple[str, ...] | None:
    if typing.get_origin(tp) is Literal:
        args = typing.get_args(tp)
        if all(isinstance(a, str) for a in args):
            return tuple(args)
        return None
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        values = [m.value for m in tp]
        if all(isinstance(v, str) for v in values):
            return tuple(values)
    return None


def _unanchor(pattern: str) -> str:
    if pattern.startswith("^"):
        pattern = pattern[1:]
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        pattern = pattern[:-1]
    return pattern


def _strip_fences(text: str) -> str:
    """Remote chat models often wrap JSON in Markdown fences; accept that."""
    m = re.fullmatch(r"\s*```(?:json)?\s*(.*?)\s*```\s*", text, re.S)
    return m.group(1) if m else text
