"""People's labels of units: the one write the server makes.

The reader's engine refuses writes, so labels go through an engine of their own, opened
on the first label. A label is an explanation with method ``human``, its author and time:
it is added beside the generated ones, never in their place, and labels the unit from then
on (``storage.METHOD_RANK``). The page cache sees the new row at once (the index's
identity counts explanations), so the next view of any page shows it.
"""

from __future__ import annotations

import threading

from pydantic import Field, field_validator
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from app.live.schema import Request
from app.meaning import Explanation, unit_explanations
from app.view_base import require_model, require_source, require_unit
from spyglass import storage

MAX_LABEL = storage.MAX_LABEL
MAX_AUTHOR = storage.MAX_AUTHOR


class LabelRequest(Request):
    text: str = Field(
        description=f"The label, 1 to {MAX_LABEL} characters: stored on one line, with "
        "control and hidden characters (bidi overrides, zero-width space) made spaces."
    )
    author: str = Field(description=f"Who gives it, 1 to {MAX_AUTHOR} characters, as `text`.")

    @field_validator("text", "author")
    @classmethod
    def _cleaned(cls, value: str, info) -> str:
        most = MAX_LABEL if info.field_name == "text" else MAX_AUTHOR
        return storage.clean_text(value, most)


class LabelsUnavailable(Exception):
    """The index cannot take a label here (a read-only file or role), or not now (a re-index
    holds it: ``retry_after`` seconds); answered 503."""

    def __init__(self, message: str, retry_after: int | None = None):
        super().__init__(message)
        self.retry_after = retry_after


LOCK_WAIT_SECONDS = 5
"""How long a label waits for the index while another transaction writes it (a re-index
holds it for minutes): then a 503 with Retry-After, not a request held that long."""
_BUSY = ("database is locked", "lock timeout")


class LabelStore:
    def __init__(self, target: str):
        self.target = target
        self._engine: Engine | None = None
        self._lock = threading.Lock()

    def _writer(self) -> Engine:
        with self._lock:
            if self._engine is None:
                try:  # creates the explanation tables in an index written before them
                    self._engine = storage.make_engine(self.target, create=True)
                except storage.DatabaseUnavailable as exc:
                    raise LabelsUnavailable(f"labels cannot be stored here: {exc}") from None
            return self._engine

    def add(self, slug: str, source: str, index: str, req: LabelRequest) -> Explanation:
        """Store the label (on a worker thread); the unit's newest label comes back."""
        try:
            with self._writer().begin() as conn:
                if conn.dialect.name == "postgresql":  # SQLite's driver waits 5 s itself
                    conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{LOCK_WAIT_SECONDS}s'")
                s = require_source(conn, require_model(conn, slug), source)
                unit = require_unit(conn, s, index).idx
                row = {"unit": unit, "method": "human", "settings": "", "text": req.text}
                storage.add_explanations(conn, s.id, [row | {"explainer": req.author}])
            with self._writer().connect() as conn:
                return unit_explanations(conn, s.id, unit)[0]
        except DBAPIError as exc:
            reason = str(exc.orig or exc).strip().splitlines()[0]
            if any(word in reason for word in _BUSY):
                raise LabelsUnavailable(
                    "the index is being written (a re-index); try the label again shortly",
                    retry_after=30,
                ) from None
            raise LabelsUnavailable(f"labels cannot be stored here: {reason}") from None

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
