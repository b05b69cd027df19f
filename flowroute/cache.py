"""Where flowroute keeps what is slow to rebuild: compiled grammars, the tool index."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["default_cache_dir"]


def default_cache_dir() -> str:
    """`$FLOWROUTE_CACHE_DIR`, else `$XDG_CACHE_HOME/flowroute` or `~/.cache/flowroute`.

    Set `FLOWROUTE_CACHE_DIR=""` to keep everything in memory only.
    """
    env = os.environ.get("FLOWROUTE_CACHE_DIR")
    if env is not None:
        return env
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return str(Path(base) / "flowroute")
