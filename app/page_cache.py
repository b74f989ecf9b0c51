"""Rendered pages, kept for as long as the index they were rendered from.

A page of an index never changes, so the server renders it once, compresses it once, and
answers it from memory after that. The key starts with the index's identity
(:func:`spyglass.storage.index_identity`), read at the start of each request, so a page of an
index replaced under the same name is never served: its key is simply never asked for again,
and it ages out of the LRU. Requests for a page being rendered wait for that one rendering
rather than start their own (a shared link opened by many people at once renders once).
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

GZIP_LEVEL = 6
"""zlib's default: most of level 9's ratio on HTML, at a fraction of its time."""


@dataclass(frozen=True)
class Page:
    body: bytes
    gzipped: bytes
    media_type: str
    etag: str

    @property
    def size(self) -> int:
        return len(self.body) + len(self.gzipped)


def etag_for(key: tuple) -> str:
    """A strong ETag for a cache key: the same index and URL give the same tag."""
    return '"' + hashlib.blake2b(repr(key).encode(), digest_size=16).hexdigest() + '"'


def make_page(key: tuple, body: bytes, media_type: str) -> Page:
    return Page(body, gzip.compress(body, GZIP_LEVEL, mtime=0), media_type, etag_for(key))


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
