"""Shared fixtures for tool tests: the example MCP servers served over streamable HTTP."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

SERVERS = Path(__file__).resolve().parents[2] / "examples" / "servers"


@pytest.fixture
def port() -> int:
    """A free TCP port on 127.0.0.1."""
    return free_port()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def http_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The faulty and calculator servers serving streamable HTTP; their endpoint URLs."""
    logs = tmp_path_factory.mktemp("http")
    procs: list[subprocess.Popen[bytes]] = []
    urls: dict[str, str] = {}
    try:
        for script in ("faulty.py", "calculator.py"):
            port = free_port()
            with open(logs / f"{script}.log", "wb") as log:
                procs.append(
                    subprocess.Popen(
                        [sys.executable, str(SERVERS / script), "--http", "--port", str(port)],
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
            urls[script.removesuffix(".py")] = f"http://127.0.0.1:{port}/mcp"
        deadline = time.monotonic() + 30
        for proc, url in zip(procs, urls.values(), strict=True):
            while True:
                try:
                    urllib.request.urlopen(url, timeout=1).close()
                    break
                except urllib.error.HTTPError:
                    break  # answering (a bare GET is refused with 4xx)
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        pytest.fail(f"HTTP server for {url} did not come up")
                    time.sleep(0.1)
        yield urls
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=10)
