"""Who may write: the gate in front of every request that changes the index (labels).

- **A key.** With ``SPYGLASS_WRITE_TOKEN`` set, a write needs ``Authorization: Bearer
  <token>``: none is a 401 (with ``WWW-Authenticate: Bearer``), a wrong one a 403. The
  comparison takes the same time whatever the guess (``hmac.compare_digest``).
- **Loopback only without one.** With no token configured, only clients on loopback
  (127.0.0.0/8, ::1) may write; any other gets a 403 saying how to turn writes on. A shared
  deployment on 0.0.0.0 is read-only until it has a key. A request a reverse proxy
  forwarded (``Forwarded``, ``X-Forwarded-For``, ``X-Real-IP``) comes from loopback on
  behalf of someone else, so it is not a loopback client's: it needs the token too.
- **Same origin, without a token.** There a browser's write must come from a page of this
  server (its ``Origin`` naming this host): otherwise any site a researcher visits could
  post labels through the researcher's own loopback access (cross-site request forgery).
  Clients that send no ``Origin`` (curl, scripts) are not browsers. With a token no check
  is needed (another site's page can neither read the key nor send the header without a
  CORS preflight, which this server never grants), and none is made: behind a reverse
  proxy the ``Host`` the server sees need not be the one the browser named.
- **A rate.** Each client (its address) may attempt ``SPYGLASS_WRITE_RATE`` writes (a
  moving window, from the ``limits`` library), refused or not, so a flood or a token guesser
  gets a 429 with ``Retry-After``.

Behind a reverse proxy every client has the proxy's address, so the rate is the proxy's:
rate-limit at the proxy too.
"""

from __future__ import annotations

import hmac
import ipaddress
import math
import time
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, HTTPException, Request
from limits import parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from spyglass.settings import Settings

FORWARDED = ("forwarded", "x-forwarded-for", "x-real-ip")
"""Headers a reverse proxy adds to the requests it forwards."""


class WriteGate:
    """The server's rate limiter and its settings (one per app)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.rate = parse(settings.write_rate)
        self.limiter = MovingWindowRateLimiter(MemoryStorage())

    def check(self, request: Request) -> None:
        """Raise the HTTPException that refuses this write, if any."""
        if not self.settings.labels:
            raise HTTPException(403, "this server does not accept labels (SPYGLASS_LABELS=false)")
        client = request.client.host if request.client else ""
        if not self.limiter.hit(self.rate, client):
            reset = self.limiter.get_window_stats(self.rate, client).reset_time
            wait = max(1, math.ceil(reset - time.time()))
            raise HTTPException(
                429,
                f"too many writes from this client: at most {self.settings.write_rate}; "
                f"try again in {wait} s",
                headers={"Retry-After": str(wait)},
            )
        token = self.settings.write_token
        if token is None:
            _same_origin(request)
            if not is_loopback(client) or any(h in request.headers for h in FORWARDED):
                raise HTTPException(
                    403,
                    "writes are off for clients off this machine: this server has no write "
                    "token (set SPYGLASS_WRITE_TOKEN to accept them with it)",
                )
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            raise HTTPException(
                401,
                "this server takes writes with its write token: send Authorization: Bearer <token>",
                headers={"WWW-Authenticate": 'Bearer realm="spyglass"'},
            )
        expected = token.get_secret_value().encode()
        if not hmac.compare_digest(given.strip().encode(), expected):
            raise HTTPException(403, "the write token is not this server's")


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _same_origin(request: Request) -> None:
    origin = request.headers.get("origin")
    if origin is None:
        return
    host = request.headers.get("host", "")
    if origin == "null" or urlsplit(origin).netloc.lower() != host.lower():
        raise HTTPException(403, f"a write from a page of another site ({origin}) is refused")


async def _writer(request: Request) -> None:
    gate: WriteGate = request.app.state.write_gate
    gate.check(request)


WriteAccess = Annotated[None, Depends(_writer)]
"""A route parameter that refuses writes the gate does not let through."""


def serve_notice(settings: Settings, host: str) -> str | None:
    """The line ``spyglass serve`` prints when it listens beyond loopback without a token."""
    if settings.labels and settings.write_token is None and not _loopback_bind(host):
        return (
            f"writes (labels) are off for clients off this machine: listening on {host} "
            "with no SPYGLASS_WRITE_TOKEN"
        )
    return None


def _loopback_bind(host: str) -> bool:
    return host == "localhost" or is_loopback(host)
