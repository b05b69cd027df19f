"""Typed ports: a value's type as JSON Schema, optionally backed by a Python type.

Both front ends describe node inputs and outputs with `TypeSpec`, so validation and
compatibility checks are written once, here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import jsonschema
from pydantic import TypeAdapter
from pydantic import ValidationError as PydanticValidationError

from flowroute.errors import OutputValidationError

__all__ = ["ANY", "TypeSpec", "schema_compatible"]


@dataclass(frozen=True, eq=False)
class TypeSpec:
    """The type of a port. `python_type` is set when the type came from Python annotations."""

    schema: dict[str, Any] = field(default_factory=dict)
    python_type: Any = None

    @classmethod
    def of(cls, tp: Any) -> TypeSpec:
        """Build from a Python type (pydantic model, dataclass, `Literal`, builtin, ...)."""
        if tp is Any or tp is None:
            return ANY
        adapter = TypeAdapter(tp)
        return cls(schema=adapter.json_schema(), python_type=tp)

    @classmethod
    def from_schema(cls, schema: dict[str, Any]) -> TypeSpec:
        """Build from a JSON Schema (checked to be a valid schema)."""
        jsonschema.Draft202012Validator.check_schema(schema)
        return cls(schema=schema)

    @cached_property
    def _adapter(self) -> TypeAdapter[Any] | None:
        return TypeAdapter(self.python_type) if self.python_type is not None else None

    @cached_property
    def _validator(self) -> jsonschema.Draft202012Validator:
        return jsonschema.Draft202012Validator(self.schema)

    @property
    def name(self) -> str:
        """A short human name for messages."""
        if self.python_type is not None:
            return getattr(self.python_type, "__name__", None) or repr(self.python_type)
        return describe_schema(self.schema)

    def validate(self, value: Any, what: str = "value") -> Any:
        """Return `value` converted to this type, or raise `OutputValidationError`."""
        if self._adapter is not None:
            try:
                if isinstance(value, str | bytes) and not self._accepts_str():
                    return self._adapter.validate_json(value)
                return self._adapter.validate_python(value)
            except PydanticValidationError as exc:
                errors = [
                    f"{'.'.join(map(str, e['loc'])) or '<root>'}: {e['msg']}" for e in exc.errors()
                ]
                raise OutputValidationError(what, errors, value) from exc
        if isinstance(value, str) and self.schema.get("type") not in (None, "string"):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise OutputValidationError(what, [f"not valid JSON: {exc}"], value) from exc
        found = sorted(self._validator.iter_errors(value), key=lambda e: list(e.path))
        if found:
            errors = [f"{'.'.join(map(str, e.path)) or '<root>'}: {e.message}" for e in found]
            raise OutputValidationError(what, errors, value)
        return value

    def _accepts_str(self) -> bool:
        return self.schema.get("type") == "string" or "enum" in self.schema or not self.schema

    def to_jsonable(self, value: Any) -> Any:
        """Plain JSON data for `value` (pydantic models dumped)."""
        if self._adapter is not None:
            return self._adapter.dump_python(value, mode="json")
        return TypeAdapter(Any).dump_python(value, mode="json")

    def field(self, name: str) -> TypeSpec | None:
        """The type of field `name`, or None if this type has no such field.

        An untyped (`{}`) port accepts any field and yields an untyped value.
        """
        schema = resolve(self.schema, self.schema)
        props = schema.get("properties")
        if props is None:
            untyped = _types(schema, self.schema)
            return ANY if untyped is None or untyped == {"object"} else None
        if name not in props:
            return None
        sub = dict(resolve(props[name], self.schema))
        if "$defs" in self.schema and "$defs" not in sub:
            sub["$defs"] = self.schema["$defs"]
        python_type = None
        if self.python_type is not None:
            fields = getattr(self.python_type, "model_fields", None)
            if fields and name in fields:
                python_type = fields[name].annotation
        return TypeSpec(schema=sub, python_type=python_type)


ANY = TypeSpec()


def resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    """Follow a local `$ref` (`#/$defs/X`)."""
    seen = 0
    while "$ref" in schema and seen < 32:
        ref = schema["$ref"]
        if not isinstance(ref, str) or not ref.startswith("#/"):
            return schema
        target: Any = root
        for part in ref[2:].split("/"):
            target = target.get(part, {}) if isinstance(target, dict) else {}
        schema = target
        seen += 1
    return schema


def describe_schema(schema: dict[str, Any]) -> str:
    if "const" in schema:
        return json.dumps(schema["const"])
    if "enum" in schema:
        return "one of " + ", ".join(json.dumps(v) for v in schema["enum"])
    t = schema.get("type")
    if t is None:
        return "any"
    if isinstance(t, list):
        return " | ".join(t)
    if t == "array" and isinstance(schema.get("items"), dict):
        return f"array of {describe_schema(schema['items'])}"
    return str(t)


_JSON_TYPES = {"string", "integer", "number", "boolean", "object", "array", "null"}


def _types(schema: dict[str, Any], root: dict[str, Any]) -> set[str] | None:
    """The set of JSON types a schema admits, or None when it admits anything."""
    schema = resolve(schema, root)
    if "const" in schema:
        return {_json_type(schema["const"])}
    if "enum" in schema:
        return {_json_type(v) for v in schema["enum"]}
    for key in ("anyOf", "oneOf"):
        if key in schema:
            out: set[str] = set()
            for sub in schema[key]:
                t = _types(sub, root)
                if t is None:
                    return None
                out |= t
            return out
    t = schema.get("type")
    if t is None:
        if "properties" in schema:
            return {"object"}
        return None
    return set(t) if isinstance(t, list) else {t}


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def schema_compatible(producer: TypeSpec, consumer: TypeSpec) -> str | None:
    """Why values of `producer` cannot feed `consumer`, or None if they can (or might).

    Deliberately conservative: only definite mismatches are reported.
    """
    return _compatible(producer.schema, producer.schema, consumer.schema, consumer.schema, "")


def _compatible(
    p: dict[str, Any], proot: dict[str, Any], c: dict[str, Any], croot: dict[str, Any], path: str
) -> str | None:
    p, c = resolve(p, proot), resolve(c, croot)
    pt, ct = _types(p, proot), _types(c, croot)
    if ct is None or pt is None:
        return None
    ct_widened = ct | ({"integer"} if "number" in ct else set())
    if not pt & ct_widened:
        where = f" at '{path}'" if path else ""
        return f"produces {describe_schema(p)}{where} but {describe_schema(c)} is expected"
    if "enum" in c and "enum" in p:
        extra = [v for v in p["enum"] if v not in c["enum"]]
        if extra:
            return f"may produce {extra!r}, which is not one of {c['enum']!r}"
    if pt == {"object"} and ct == {"object"}:
        pprops, cprops = p.get("properties", {}), c.get("properties", {})
        if "properties" in p:
            missing = [k for k in c.get("required", []) if k not in pprops]
            if missing:
                return f"lacks required field(s) {', '.join(missing)}"
        for key, csub in cprops.items():
            if key in pprops:
                why = _compatible(pprops[key], proot, csub, croot, f"{path}.{key}".lstrip("."))
                if why:
                    return why
    if pt == {"array"} and ct == {"array"}:
        pi, ci = p.get("items"), c.get("items")
        if isinstance(pi, dict) and isinstance(ci, dict):
            return _compatible(pi, proot, ci, croot, f"{path}[]")
    return None
