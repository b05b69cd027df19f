"""A small file-backed notes MCP server: add, list, read and delete notes by title.

Notes live in one JSON file: `$NOTES_FILE`, or `flowroute-notes.json` in the temp directory.

Run it over stdio:

    NOTES_FILE=notes.json python examples/servers/notes.py

or serve streamable HTTP on 127.0.0.1 (endpoint `http://127.0.0.1:PORT/mcp`):

    python examples/servers/notes.py --http --port 8767
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import TypedDict

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

mcp = MCPServer("notes", instructions="A notes store: notes have a unique title and a body.")


class Note(TypedDict):
    title: str
    body: str
    created: str


def notes_file() -> Path:
    return Path(
        os.environ.get("NOTES_FILE") or Path(tempfile.gettempdir()) / "flowroute-notes.json"
    )


def _load() -> dict[str, Note]:
    path = notes_file()
    if not path.exists():
        return {}
    data: dict[str, Note] = json.loads(path.read_text(encoding="utf-8"))
    return data


def _save(notes: dict[str, Note]) -> None:
    path = notes_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(notes, indent=2, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, path)  # atomic: a reader never sees half a file


@mcp.tool()
def add_note(title: str, body: str) -> Note:
    """Add a note. Titles are unique: adding an existing title is an error."""
    notes = _load()
    if title in notes:
        raise ToolError(f"a note titled {title!r} already exists")
    note = Note(title=title, body=body, created=datetime.now(UTC).isoformat(timespec="seconds"))
    notes[title] = note
    _save(notes)
    return note


@mcp.tool()
def list_notes() -> list[str]:
    """The titles of all notes, oldest first."""
    return list(_load())


@mcp.tool()
def get_note(title: str) -> Note:
    """The note with this title."""
    note = _load().get(title)
    if note is None:
        raise ToolError(f"no note titled {title!r}")
    return note


@mcp.tool()
def delete_note(title: str) -> str:
    """Delete the note with this title."""
    notes = _load()
    if notes.pop(title, None) is None:
        raise ToolError(f"no note titled {title!r}")
    _save(notes)
    return f"deleted {title!r}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A file-backed notes MCP server.")
    parser.add_argument("--http", action="store_true", help="serve streamable HTTP, not stdio")
    parser.add_argument("--port", type=int, default=8767, help="HTTP port (with --http)")
    args = parser.parse_args(argv)
    if args.http:
        mcp.run("streamable-http", host="127.0.0.1", port=args.port)
    else:
        mcp.run()


if __name__ == "__main__":
    main()
