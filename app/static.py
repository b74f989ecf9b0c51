"""Static files, compressed once in memory for clients that take gzip.

The vendored plotly.js is about 4.6 MB; compressing it per request would cost a core for a
good part of a second, so each file is compressed once (per modification time) and kept.
Vendored files carry their version in their name and are cached by browsers for a year.
"""

from __future__ import annotations

import gzip
import os

import anyio
from starlette.responses import FileResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

COMPRESSIBLE = ("text/", "application/javascript", "application/json", "image/svg+xml")


class CompressedStatic(StaticFiles):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._gzipped: dict[tuple[str, int, int], bytes] = {}

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        cache = "public, max-age=31536000, immutable" if path.startswith("vendor/") else "no-cache"
        response.headers["Cache-Control"] = cache
        if not isinstance(response, FileResponse) or response.status_code != 200:
            return response
        response.headers["Vary"] = "Accept-Encoding"
        accepts = dict(scope["headers"]).get(b"accept-encoding", b"")
        media = response.media_type or ""
        if b"gzip" not in accepts or not media.startswith(COMPRESSIBLE):
            return response
        st = os.stat(response.path)
        key = (str(response.path), st.st_mtime_ns, st.st_size)
        body = self._gzipped.get(key)
        if body is None:
            body = await anyio.to_thread.run_sync(_gzip_file, response.path)
            self._gzipped[key] = body
        headers = {
            k: v for k, v in response.headers.items() if k not in ("content-length", "content-type")
        }
        headers["Content-Encoding"] = "gzip"
        return Response(body, media_type=response.media_type, headers=headers)


def _gzip_file(path) -> bytes:
    with open(path, "rb") as f:
        return gzip.compress(f.read(), 9, mtime=0)
