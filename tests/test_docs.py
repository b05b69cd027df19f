"""The documentation is executed, so it cannot drift from the code.

Runnable examples. Every ```python block in `docs/*.md` and `README.md` whose first line is
the comment `# test: run` is executed; other blocks are illustrative (they may need the real
local model, a server or an API key). Runnable blocks must not need the real local model:
they use `flowroute.models.testing.TestModel` / `FunctionModel`.

Namespaces: each page gets a fresh namespace, and the runnable blocks of one page share it in
page order, so a page can define a tool in one block and use it in the next, like a tutorial.
There is one test per block; it first re-runs the page's earlier runnable blocks (as setup), so
any single block can be selected with `-k` and still runs in the state the page describes.
Code is compiled with the Markdown file's name and line numbers, so tracebacks (and the
call-site locations flowroute puts in its messages) point into the page. Blocks run with the
repository root as the working directory, so examples can use `examples/...` paths.

Also checked: `docs/workflow.schema.json` is exactly `flowroute.frontends.yaml.file_schema()`
(regenerate it with `flowroute schema -o docs/workflow.schema.json`), the install/test
commands on the home page match the README's, and `mkdocs build --strict` passes.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from flowroute.frontends.yaml import file_schema

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
MARKER = "# test: run"

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^\n`]*)$")


@dataclass(frozen=True)
class Block:
    """One fenced code block of a Markdown page."""

    page: Path
    line: int
    """Line number (1-based) of the block's first code line."""
    lang: str
    code: str

    @property
    def runnable(self) -> bool:
        return self.lang == "python" and self.code.lstrip("\n").startswith(MARKER)

    @property
    def id(self) -> str:
        return f"{self.page.name}:{self.line}"


def code_blocks(page: Path) -> list[Block]:
    """Fenced code blocks of `page` (indentation of indented fences removed)."""
    blocks: list[Block] = []
    lines = page.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if m is None:
            i += 1
            continue
        indent, fence = m.group("indent"), m.group("fence")
        lang = m.group("info").strip().split(" ")[0].lstrip(".").lower()
        start = i + 1
        j = start
        while j < len(lines) and not (
            lines[j].strip().startswith(fence) and lines[j].strip().strip(fence[0]) == ""
        ):
            j += 1
        body = [ln[len(indent) :] if ln.startswith(indent) else ln for ln in lines[start:j]]
        blocks.append(Block(page, start + 1, lang, "\n".join(body) + "\n"))
        i = j + 1
    return blocks


def pages() -> list[Path]:
    found = sorted(DOCS.glob("*.md"))
    readme = ROOT / "README.md"
    return [*found, readme] if readme.is_file() else found


def runnable_blocks() -> list[Block]:
    return [b for page in pages() for b in code_blocks(page) if b.runnable]


def run_block(block: Block, namespace: dict[str, Any]) -> None:
    # Leading newlines make line numbers in tracebacks those of the Markdown file.
    source = "\n" * (block.line - 1) + block.code
    exec(compile(source, str(block.page.relative_to(ROOT)), "exec"), namespace)


def _fresh_namespace(page: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A new module's namespace for `page`, registered in `sys.modules` for the test.

    Classes defined by the examples (pydantic models, dataclasses) look up their module there.
    """
    module = types.ModuleType(f"docs_{page.stem}")
    module.__file__ = str(page)
    monkeypatch.setitem(sys.modules, module.__name__, module)
    return module.__dict__


@pytest.mark.parametrize("block", runnable_blocks(), ids=lambda b: b.id)
def test_runnable_example(block: Block, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    namespace = _fresh_namespace(block.page, monkeypatch)
    for earlier in [b for b in code_blocks(block.page) if b.runnable]:
        if earlier.line == block.line:
            break
        try:
            run_block(earlier, namespace)
        except Exception as exc:  # pragma: no cover - reported as the setup that broke
            pytest.fail(f"setup block {earlier.id} failed: {type(exc).__name__}: {exc}")
    run_block(block, namespace)


def test_main_pages_have_runnable_examples() -> None:
    runnable = {b.page.name for b in runnable_blocks()}
    for name in ("python.md", "yaml.md", "models.md", "structured.md"):
        assert name in runnable, f"docs/{name} has no '{MARKER}' example"


def test_code_block_parser_finds_fences_and_markers(tmp_path: Path) -> None:
    page = tmp_path / "sample.md"
    text = (
        "# t\n\n```python\n# test: run\nx = 1\n```\n\n"
        "!!! note\n    ```python\n    # test: run\n    y = 2\n    ```\n\n"
        "```bash\necho hi\n```\n\n```python\nz = 3\n```\n"
    )
    page.write_text(text, encoding="utf-8")
    blocks = code_blocks(page)
    assert [(b.lang, b.line, b.runnable) for b in blocks] == [
        ("python", 4, True),
        ("python", 10, True),
        ("bash", 15, False),
        ("python", 19, False),
    ]
    assert blocks[1].code == "# test: run\ny = 2\n"


def test_workflow_schema_file_is_current() -> None:
    path = DOCS / "workflow.schema.json"
    assert path.is_file(), "run: flowroute schema -o docs/workflow.schema.json"
    on_disk = json.loads(path.read_text(encoding="utf-8"))
    assert on_disk == file_schema(), (
        "docs/workflow.schema.json is stale; run: flowroute schema -o docs/workflow.schema.json"
    )


def _first_bash_block(page: Path) -> list[str] | None:
    for b in code_blocks(page):
        if b.lang in ("bash", "sh", "shell", "console"):
            return [ln for ln in b.code.splitlines() if ln.strip()]
    return None


def test_home_page_commands_match_readme() -> None:
    readme = ROOT / "README.md"
    theirs = _first_bash_block(readme) if readme.is_file() else None
    if theirs is None:
        pytest.skip("README.md has no ```bash block yet")
    ours = _first_bash_block(DOCS / "index.md")
    assert ours is not None, "docs/index.md lost its quick-start commands"
    assert ours[:2] == theirs[:2], "docs/index.md and README.md give different set-up commands"


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None, reason="mkdocs not installed")
def test_mkdocs_build_strict(tmp_path: Path) -> None:
    pytest.importorskip("material", reason="mkdocs-material not installed")
    pytest.importorskip("mkdocstrings", reason="mkdocstrings not installed")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "site" / "workflow.schema.json").is_file()
