"""Rendered pages, kept for as long as the index they were rendered from.

A page of an index never changes, so the server renders it once, compresses it once, and
answers it from memory after that. The key starts with the index's identity
(:func:`spyglass.storage.index_identity`), read at the start of each request, so a page of an
index replaced under the same name is never served: its key is simply never asked for again,
and it ages out of the LRU. Requests for a page being rendered wait for that one rendering
rather than start their own (a shared link opened by many people at once renders once).

A page is kept gzipped only, in both its forms (HTML and the JSON twin, rendered together
from one view: a twin costs a fraction of the database reads behind it). Clients that do not
take gzip get it decompressed, which costs far less than rendering.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

GZIP_LEVEL = 3
"""On a unit page (130 KB of HTML): 1.0 ms and 17.8 KB, against 2.0 ms and 15.1 KB at
zlib's default of 6; a render's cost matters more than 3 KB on the wire."""


@dataclass(frozen=True)
class Body:
    gzipped: bytes
    media_type: str
    etag: str


@dataclass(frozen=True)
class Page:
    html: Body
    json: Body

    @property
    def size(self) -> int:
        return len(self.html.gzipped) + len(self.json.gzipped)


def etag_for(key: tuple, as_json: bool) -> str:
    """A strong ETag: the same index, URL and form give the same tag."""
    raw = repr((key, as_json)).encode()
    return '"' + hashlib.blake2b(raw, digest_size=16).hexdigest() + '"'


def make_page(key: tuple, html: bytes, json: bytes) -> Page:
    return Page(
        Body(
            gzip.compress(html, GZIP_LEVEL, mtime=0),
            "text/html; charset=utf-8",
            etag_for(key, False),
        ),
        Body(gzip.compress(json, GZIP_LEVEL, mtime=0), "application/json", etag_for(key, True)),
    )


class PageCache:
    """An LRU of :class:`Page` bounded in bytes. Used from the event loop only."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.size = 0
        self.hits = self.misses = 0
        self._pages: OrderedDict[tuple, Page] = OrderedDict()
        self._rendering: dict[tuple, asyncio.Future[Page]] = {}

    def __len__(self) -> int:
        return len(self._pages)

    def stats(self) -> dict:
        return {
            "pages": len(self._pages),
            "bytes": self.size,
            "max_bytes": self.max_bytes,
            "hits": self.hits,
            "misses": self.misses,
        }

    def peek(self, key: tuple) -> Page | None:
        """The page under ``key`` if it is kept (a hit), else None; never renders."""
        page = self._pages.get(key)
        if page is not None:
            self._pages.move_to_end(key)
            self.hits += 1
        return page

    async def get(self, key: tuple, render: Callable[[], Awaitable[Page]]) -> Page:
        """The page under ``key``, rendered by ``render()`` if it is not kept yet. A render
        that raises is not kept, and its error reaches every request that waited on it."""
        page = self._pages.get(key)
        if page is not None:
            self._pages.move_to_end(key)
            self.hits += 1
            return page
        pending = self._rendering.get(key)
        if pending is not None:
            self.hits += 1
            return await asyncio.shield(pending)
        self.misses += 1
        future: asyncio.Future[Page] = asyncio.get_running_loop().create_future()
        self._rendering[key] = future
        try:
            page = await render()
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when none waited
            raise
        except BaseException:
            future.cancel()
            raise
        finally:
            del self._rendering[key]
        future.set_result(page)
        self._keep(key, page)
        return page

    def _keep(self, key: tuple, page: Page) -> None:
        if page.size > self.max_bytes:
            return
        self._pages[key] = page
        self.size += page.size
        while self.size > self.max_bytes:
            _, old = self._pages.popitem(last=False)
            self.size -= old.size
