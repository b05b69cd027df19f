"""Prompt templates (Jinja2): rendering, and finding the data references a template reads."""

from __future__ import annotations

from functools import lru_cache
from typing import Any, cast

import jinja2
from jinja2 import nodes as jn
from jinja2.sandbox import SandboxedEnvironment

from flowroute.errors import FlowrouteError

__all__ = ["TemplateError", "render", "template_paths"]

_env = SandboxedEnvironment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)


class TemplateError(FlowrouteError):
    """A prompt template does not parse or does not render."""


@lru_cache(maxsize=512)
def _compile(text: str) -> jinja2.Template:
    try:
        return _env.from_string(text)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"template syntax error on line {exc.lineno}: {exc.message}") from exc


def template_paths(text: str) -> list[tuple[str, ...]]:
    """Dotted variable paths a template reads, e.g. `{{ a.b.c }}` -> `("a", "b", "c")`.

    Loop variables and names set inside the template are excluded.
    """
    try:
        tree = _env.parse(text)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"template syntax error on line {exc.lineno}: {exc.message}") from exc
    local: set[str] = set()
    for stmt in tree.find_all((jn.For, jn.Assign)):
        target = cast("jn.For | jn.Assign", stmt).target
        for name in target.find_all(jn.Name) if not isinstance(target, jn.Name) else [target]:
            local.add(name.name)
    paths: list[tuple[str, ...]] = []
    chained: set[int] = set()
    for node in tree.find_all(jn.Getattr):
        if id(node) in chained:
            continue
        parts: list[str] = []
        cur: jn.Node = node
        while isinstance(cur, jn.Getattr):
            chained.add(id(cur))
            parts.append(cur.attr)
            cur = cur.node
        if isinstance(cur, jn.Name) and cur.name not in local:
            chained.add(id(cur))
            paths.append((cur.name, *reversed(parts)))
    # inner Getattr nodes of a chain were visited first only when outer ones are; dedupe prefixes
    for name in tree.find_all(jn.Name):
        if id(name) not in chained and name.ctx == "load" and name.name not in local:
            paths.append((name.name,))
    longest: list[tuple[str, ...]] = []
    for p in sorted(set(paths), key=len, reverse=True):
        if not any(q[: len(p)] == p for q in longest):
            longest.append(p)
    return sorted(longest)


def nest(flat: dict[str, Any]) -> dict[str, Any]:
    """`{"a.b": 1, "c": 2}` -> `{"a": {"b": 1}, "c": 2}` (whole values win over fields)."""
    out: dict[str, Any] = {}
    for key in sorted(flat, key=lambda k: k.count(".")):
        parts = key.split(".")
        cur = out
        for p in parts[:-1]:
            nxt = cur.setdefault(p, {})
            if not isinstance(nxt, dict):
                break
            cur = nxt
        else:
            cur.setdefault(parts[-1], flat[key])
    return out


def render(text: str, variables: dict[str, Any]) -> str:
    """Render `text` with `variables` (dotted keys are nested first)."""
    try:
        return _compile(text).render(nest(variables))
    except jinja2.UndefinedError as exc:
        raise TemplateError(f"template refers to an undefined value: {exc.message}") from exc
