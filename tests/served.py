"""The app served for real by uvicorn on a loopback port, for the tests that need a live
server (browser, api, serving under load).

Importable as ``served`` because pytest puts ``tests/`` (no __init__.py) on sys.path.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator

import pytest
import uvicorn

from app.main import create_app
from spyglass.settings import Settings


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.load(resp)


@contextlib.contextmanager
def serve(settings: Settings) -> Iterator[str]:
    """The app with ``settings``, served by uvicorn on 127.0.0.1 in a background thread;
    yields its base URL once it answers, and stops the server on exit."""
    app = create_app(settings)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="spyglass-uvicorn", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(url + "/.json", timeout=2) as resp:
                if resp.status == 200:
                    break
        except OSError:
            pass
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            pytest.fail("uvicorn did not start answering on " + url)
        time.sleep(0.05)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)
