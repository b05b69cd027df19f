"""Mermaid flowchart export of a workflow graph."""

from __future__ import annotations

import re
from typing import Any

from flowroute.graph.nodes import INPUTS
from flowroute.graph.workflow import Workflow

__all__ = ["to_mermaid"]

_SHAPES = {
    "llm": ('["', '"]'),
    "tool": ('[/"', '"/]'),
    "mcp_tool": ('[/"', '"/]'),
    "first_of": ('(("', '"))'),
    "map": ('[["', '"]]'),
}


def _id(name: str) -> str:
    return "n_" + re.sub(r"\W", "_", name)


def _text(s: str) -> str:
    return s.replace('"', "#quot;")


def to_mermaid(wf: Workflow[Any]) -> str:
    """Render `wf` as a Mermaid `flowchart TD`; conditional edges carry their condition."""
    lines = ["flowchart TD"]
    if wf.inputs:
        lines.append(f'  {INPUTS}(["inputs: {_text(", ".join(wf.inputs))}"])')
    for name, node in wf.nodes.items():
        left, right = _SHAPES.get(node.kind, ('["', '"]'))
        lines.append(f"  {_id(name)}{left}{_text(node.label())}{right}")
    lines.append('  output(["output"])')
    seen: set[tuple[str, str, str]] = set()
    for name, node in wf.nodes.items():
        conds = {str(c.ref.node): str(c) for c in node.when}
        for _, ref in node.refs():
            src = INPUTS if ref.node == INPUTS else _id(ref.node)
            label = conds.get(ref.node, "")
            key = (src, _id(name), label)
            if key in seen:
                continue
            seen.add(key)
            arrow = f' -- "{_text(label)}" --> ' if label else " --> "
            lines.append(f"  {src}{arrow}{_id(name)}")
    for _, ref in wf.output_refs():
        src = INPUTS if ref.node == INPUTS else _id(ref.node)
        if (src, "output", "") not in seen:
            seen.add((src, "output", ""))
            lines.append(f"  {src} --> output")
    return "\n".join(lines) + "\n"
