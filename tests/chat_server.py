"""A loopback HTTP server speaking the OpenAI chat-completions protocol, whose answers a
test decides: a judge that knows the truth (to check the scorers' arithmetic), or a
faulty front for a real server (rate limits, errors, malformed bodies) to check the
retries and the failure records. The real LLM path runs against ``transformers serve``
(``tests/llm``); this one stands in for nothing that is under test."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

Reply = tuple[int, str, dict]
"""(HTTP status, body, headers)."""


def completion(content: str, model: str = "judge") -> str:
    """A chat-completions response body carrying ``content``."""
    return json.dumps(
        {
            "id": "x",
            "object": "chat.completion",
            "created": 0,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
    )


class ChatServer:
    """``with ChatServer(reply) as url:`` serves ``reply(request_json) -> Reply`` at
    ``url`` (``http://127.0.0.1:PORT/v1``) and counts the requests."""

    def __init__(self, reply: Callable[[dict], Reply]):
        self.reply = reply
        self.requests = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 -- http.server's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests += 1
                status, text, headers = outer.reply(body)
                data = text.encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)

    def __enter__(self) -> str:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self._server.server_port}/v1"

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
