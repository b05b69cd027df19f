"""Tool calls as constrained JSON: the schema of "call these tools" / "final answer" steps.

A local model decoding under `step_schema(...)` can only propose calls that name a real tool
with arguments valid for its schema, so every proposed call is executable.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from flowroute.tools.base import ToolLike

__all__ = ["Step", "ToolCall", "call_schema", "describe_tools", "parse_step", "step_schema"]


@dataclass(frozen=True)
class ToolCall:
    """One proposed call: a tool name and its arguments."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)

    def key(self) -> str:
        """A canonical form, so identical calls can be recognised and merged."""
        return json.dumps([self.name, self.arguments], sort_keys=True, default=str)


@dataclass(frozen=True)
class Step:
    """A model's step: tool calls to make, or the final answer."""

    calls: tuple[ToolCall, ...] = ()
    final: Any = None
    is_final: bool = False


def _prefixed(schema: dict[str, Any], prefix: str, defs: dict[str, Any]) -> dict[str, Any]:
    """Move a tool schema's `$defs` into the shared `defs` under `prefix`, rewriting its refs."""
    schema = copy.deepcopy(schema)
    local = schema.pop("$defs", {})

    def rewrite(node: Any) -> Any:
        if isinstance(node, dict):
            out = {k: rewrite(v) for k, v in node.items()}
            ref = out.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                out["$ref"] = f"#/$defs/{prefix}{ref[len('#/$defs/') :]}"
            return out
        if isinstance(node, list):
            return [rewrite(v) for v in node]
        return node

    for name, sub in local.items():
        defs[f"{prefix}{name}"] = rewrite(sub)
    result: dict[str, Any] = rewrite(schema)
    result.pop("title", None)
    return result


def _arguments_schema(tool: ToolLike, index: int, defs: dict[str, Any]) -> dict[str, Any]:
    schema = _prefixed(tool.json_schema or {"type": "object"}, f"t{index}_", defs)
    schema.setdefault("type", "object")
    if schema.get("type") == "object":
        schema.setdefault("properties", {})
        # a closed object: models cannot invent arguments the tool does not take
        schema["additionalProperties"] = False
    return schema


def call_schema(tools: Sequence[ToolLike], defs: dict[str, Any] | None = None) -> dict[str, Any]:
    """Schema of one call: `{"name": <a tool>, "arguments": <valid for that tool>}`."""
    defs = {} if defs is None else defs
    options = [
        {
            "type": "object",
            "properties": {
                "name": {"const": tool.name},
                "arguments": _arguments_schema(tool, i, defs),
            },
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for i, tool in enumerate(tools)
    ]
    return options[0] if len(options) == 1 else {"anyOf": options}


def step_schema(
    tools: Sequence[ToolLike], final: dict[str, Any] | None, *, max_calls: int = 4
) -> dict[str, Any]:
    """Schema of one agent step: `{"calls": [...]}` (1..max_calls calls) or `{"final": ...}`."""
    defs: dict[str, Any] = {}
    options: list[dict[str, Any]] = []
    if tools:
        options.append(
            {
                "type": "object",
                "properties": {
                    "calls": {
                        "type": "array",
                        "items": call_schema(tools, defs),
                        "minItems": 1,
                        "maxItems": max_calls,
                    }
                },
                "required": ["calls"],
                "additionalProperties": False,
            }
        )
    if final is not None:
        final_schema = _prefixed(final, "final_", defs)
        options.append(
            {
                "type": "object",
                "properties": {"final": final_schema},
                "required": ["final"],
                "additionalProperties": False,
            }
        )
    if not options:
        raise ValueError("a step needs tools or a final answer")
    schema: dict[str, Any] = options[0] if len(options) == 1 else {"anyOf": options}
    if defs:
        schema = {**schema, "$defs": defs}
    return schema


def parse_step(value: Any) -> Step:
    """A `Step` from a validated step value."""
    if isinstance(value, dict) and "final" in value:
        return Step(final=value["final"], is_final=True)
    calls = value.get("calls", []) if isinstance(value, dict) else []
    return Step(calls=tuple(ToolCall(c["name"], dict(c.get("arguments") or {})) for c in calls))


def _param_summary(schema: dict[str, Any]) -> str:
    props = schema.get("properties", {})
    required = set(schema.get("required", []))
    parts = []
    for name, sub in props.items():
        kind = sub.get("type", "any") if isinstance(sub, dict) else "any"
        if isinstance(sub, dict) and "enum" in sub:
            kind = "|".join(json.dumps(v) for v in sub["enum"])
        parts.append(f"{name}{'' if name in required else '?'}: {kind}")
    return ", ".join(parts)


def describe_tools(tools: Sequence[ToolLike]) -> str:
    """One line per tool, for prompts: `- name(a: string, b?: integer): description`."""
    return "\n".join(
        f"- {t.name}({_param_summary(t.json_schema or {})}): "
        f"{(t.description or '').strip().splitlines()[0] if t.description else ''}".rstrip(": ")
        for t in tools
    )
