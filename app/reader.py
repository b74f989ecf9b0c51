"""Reading the index from request handlers without starving the thread pool.

Database work is blocking, so it runs on worker threads. Each call takes a thread slot and
a connection together and gives both back before it returns: no request ever holds a
connection while it waits for a thread, or a thread while it waits for a connection. The
engine's pool holds exactly as many connections as there are slots, so a slot always finds
one free; requests beyond the slots wait as coroutines, which cost nothing but memory.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Concatenate, ParamSpec, TypeVar

import anyio
from sqlalchemy import Connection, Engine

from spyglass import storage

P = ParamSpec("P")
T = TypeVar("T")


class IndexReader:
    def __init__(self, engine: Engine, slots: int):
        self.engine = engine
        self.slots = slots
        self._limiter: anyio.CapacityLimiter | None = None
        self._watch = storage.sqlite_watch(engine)
        self._version: int | None = None
        self._identity: str | None = None

    async def run(
        self, fn: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """``fn(conn, *args, **kwargs)`` on a worker thread, with a connection of its own
        (one read snapshot) for the length of the call."""
        if self._limiter is None:  # made on first use, inside the event loop
            self._limiter = anyio.CapacityLimiter(self.slots)

        def call() -> T:
            with self.engine.connect() as conn:
                return fn(conn, *args, **kwargs)

        return await anyio.to_thread.run_sync(call, limiter=self._limiter)

    async def identity(self) -> str:
        """A token that changes whenever any model in the index is replaced or added.

        Every cached page view asks for it, so on SQLite it is read on the event loop from
        a connection of its own, and worked out again only when ``PRAGMA data_version``
        says another connection has committed since (exact, and a few microseconds). Other
        databases are asked on a worker thread each time."""
        if self._watch is None:
            return await self.run(storage.index_identity)
        version = self._watch.execute("PRAGMA data_version").fetchone()[0]
        if version != self._version or self._identity is None:
            self._identity = storage.sqlite_identity(self._watch)
            self._version = version
        return self._identity


def make_reader(target: str, slots: int) -> IndexReader:
    """The server's reader over the index at ``target`` (read-only engine, ``slots``
    connections)."""
    return IndexReader(storage.make_read_engine(target, pool_size=slots), slots)
