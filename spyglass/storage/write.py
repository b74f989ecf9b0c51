"""Writing an index (the indexer): models, sources, sequences, units and packed examples,
inserted in bulk (PostgreSQL: COPY)."""

from __future__ import annotations

import json
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import orjson
from sqlalchemy import (
    Connection,
    Table,
    delete,
    insert,
    select,
)
from sqlalchemy.exc import DBAPIError

from spyglass.storage.kept import attach_explanations, detach_explanations
from spyglass.storage.records import UnitStats
from spyglass.storage.schema import (
    _CHILDREN,
    _MODEL_CHILDREN,
    RESERVED,
    SLUG,
    _pg_escape,
    _PgText,
    examples,
    int_blob,
    models,
    samples,
    sequences,
    sources,
    to_blob,
    units,
    vocab,
)

__all__ = [
    "check_slug",
    "replace_model",
    "finish_model",
    "add_sequences",
    "add_vocab",
    "add_source",
    "add_units",
    "ExampleColumns",
    "add_examples",
    "EXAMPLE_COLUMNS",
    "pack_examples",
]


def check_slug(slug: str) -> None:
    if not SLUG.match(slug) or slug in RESERVED or slug.endswith(".json"):
        raise ValueError(
            f"invalid model name {slug!r}: use letters, digits, '.', '_' or '-' "
            f"(not one of {sorted(RESERVED)})"
        )


def replace_model(conn: Connection, slug: str, **fields) -> int:
    """Delete any earlier index called ``slug`` and insert a fresh model row. Its
    explanations and labels are detached, not deleted: each new source takes back those of
    its units (``add_source``; see ``storage.kept``).

    Runs inside the caller's transaction: readers see the old index until commit.
    """
    check_slug(slug)
    earlier = conn.execute(select(models.c.id, models.c.created).where(models.c.slug == slug))
    old, old_created = earlier.one_or_none() or (None, None)
    now = datetime.now(UTC)
    if fields.get("created") is None:
        # `created` tells an index from the one it replaced (explanations record the index
        # they were made on): two in one second differ by their microseconds.
        fields["created"] = now.isoformat(timespec="seconds")
        if fields["created"] == old_created:
            fields["created"] = now.isoformat(timespec="microseconds")
    if old is not None:
        detach_explanations(conn, old)
        source_ids = select(sources.c.id).where(sources.c.model_id == old)
        for table in _CHILDREN:
            conn.execute(delete(table).where(table.c.source_id.in_(source_ids)))
        conn.execute(delete(sources).where(sources.c.model_id == old))
        for table in _MODEL_CHILDREN:
            conn.execute(delete(table).where(table.c.model_id == old))
        conn.execute(delete(models).where(models.c.id == old))
    fields.setdefault("seconds", 0.0)
    fields.setdefault("n_sequences", 0)
    fields.setdefault("n_tokens", 0)
    return conn.execute(insert(models).values(slug=slug, **fields)).inserted_primary_key[0]


def finish_model(
    conn: Connection,
    model_id: int,
    *,
    n_sequences: int,
    seconds: float,
    n_tokens: int | None = None,
) -> None:
    """Record the finished run's counts (``n_tokens``: real tokens; kept as is if None)."""
    counts = {"n_sequences": n_sequences, "seconds": seconds}
    if n_tokens is not None:
        counts["n_tokens"] = n_tokens
    conn.execute(models.update().where(models.c.id == model_id).values(**counts))


def _bulk_insert(conn: Connection, table: Table, columns: Sequence[str], rows: list[tuple]) -> None:
    """Rows straight to the driver: SQLAlchemy's per-row parameter processing costs more
    than the database's own insert for the million example rows of an index. PostgreSQL
    through psycopg gets COPY (3x an executemany there); others, executemany."""
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        rows = _pg_free_text(conn, table, columns, rows)
        if conn.dialect.driver == "psycopg":
            _copy(conn, table, columns, rows)
            return
    compiled = insert(table).compile(dialect=conn.dialect, column_keys=list(columns))
    if conn.dialect.positional:
        order = [columns.index(name) for name in compiled.positiontup]
        if order == list(range(len(columns))):
            params = rows
        else:
            pick = operator.itemgetter(*order)
            params = [pick(r) for r in rows]
    else:
        params = [dict(zip(columns, r, strict=True)) for r in rows]
    conn.exec_driver_sql(str(compiled), params)


def _pg_free_text(
    conn: Connection, table: Table, columns: Sequence[str], rows: list[tuple]
) -> list[tuple]:
    """``rows`` with NUL escaped in `FreeText` columns, as the type does on other paths."""
    free = {
        i
        for i, c in enumerate(columns)
        if isinstance(table.c[c].type.dialect_impl(conn.dialect), _PgText)
    }
    if not free:
        return rows
    return [tuple(_pg_escape(v) if i in free else v for i, v in enumerate(row)) for row in rows]


def _copy(conn: Connection, table: Table, columns: Sequence[str], rows: list[tuple]) -> None:
    quote = conn.dialect.identifier_preparer
    names = ", ".join(quote.quote(c) for c in columns)
    sql = f"COPY {quote.format_table(table)} ({names}) FROM STDIN"
    dbapi = conn.dialect.loaded_dbapi
    try:
        # The transaction's own connection: COPY joins the index's one transaction.
        with conn.connection.dbapi_connection.cursor() as cur, cur.copy(sql) as copy:
            for row in rows:
                copy.write_row(row)
    except dbapi.Error as exc:  # raised as SQLAlchemy raises the other paths' errors
        raise DBAPIError.instance(sql, None, exc, dbapi.Error, dialect=conn.dialect) from exc


def add_sequences(conn: Connection, model_id: int, rows: Sequence[tuple[int, str, int, list[int]]]):
    """Insert ``(id, document, offset, tokens)`` rows."""
    _bulk_insert(
        conn,
        sequences,
        ("model_id", "id", "document", "offset", "tokens"),
        [(model_id, i, d, o, int_blob(t)) for i, d, o, t in rows],
    )


def add_vocab(conn: Connection, model_id: int, texts: Sequence[str]) -> None:
    _bulk_insert(
        conn,
        vocab,
        ("model_id", "token_id", "text"),
        [(model_id, i, t) for i, t in enumerate(texts)],
    )


def add_source(conn: Connection, model_id: int, *, info: dict | None = None, **fields) -> int:
    """A new source, with the explanations and labels of its units that earlier indexes
    under this model's name kept (``storage.kept``)."""
    info_json = json.dumps(info) if info is not None else None
    q = insert(sources).values(model_id=model_id, info=info_json, **fields)
    source_id = conn.execute(q).inserted_primary_key[0]
    attach_explanations(conn, source_id)
    return source_id


def _dumps(value) -> str:
    """JSON text of a unit's table: orjson, about ten times ``json.dumps``'s speed, reads
    back equal (floats in shortest round-trip form, as ``json`` writes them)."""
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY).decode()


def add_units(
    conn: Connection,
    source_id: int,
    max_act: np.ndarray,
    density: np.ndarray,
    logits: Sequence[dict],
    stats: Sequence[UnitStats | None] | None = None,
    *,
    first: int = 0,
) -> None:
    """One row per unit ``first .. first + n - 1``; ``logits[u]`` is
    ``{"top": [[id, value], ...], "bottom": ...}``."""
    stats = stats if stats is not None else [None] * len(logits)
    _bulk_insert(
        conn,
        units,
        ("source_id", "idx", "max_act", "density", "logits", "stats"),
        [
            (source_id, u, float(m), float(d), _dumps(lg), st.to_json() if st else None)
            for u, (m, d, lg, st) in enumerate(
                zip(max_act, density, logits, stats, strict=True), start=first
            )
        ],
    )


@dataclass(frozen=True)
class ExampleColumns:
    """Top examples of many units, column-wise (one entry per example)."""

    unit: np.ndarray
    rank: np.ndarray
    sequence_id: np.ndarray
    position: np.ndarray
    value: np.ndarray
    windows: np.ndarray
    """[n, W] float32 values around each example, NaN off its sequence."""
    first: np.ndarray
    """[n] the first position of each window inside the sequence (its ``window_start``
    relative to the window's own start)."""
    last: np.ndarray
    """[n] one past the last inside."""
    before: int
    """Positions in a window before its example."""


def add_examples(
    conn: Connection, source_id: int, ex: ExampleColumns, interval: np.ndarray | None = None
) -> None:
    """Top examples; or, with ``interval`` (one entry per example), interval samples,
    whose windows are float16 (as the indexer keeps them). One row per unit; each window
    is stored from ``first`` to ``last``, the part inside its sequence. Units come in
    ascending order, and a unit's examples in the order they are read back."""
    table = examples if interval is None else samples
    _bulk_insert(conn, table, EXAMPLE_COLUMNS, pack_examples(source_id, ex, interval))


EXAMPLE_COLUMNS = ("source_id", "unit", "n", "fields", "vals", "acts")


def pack_examples(
    source_id: int, ex: ExampleColumns, interval: np.ndarray | None = None
) -> list[tuple]:
    """``add_examples``' rows (``EXAMPLE_COLUMNS``), one per unit."""
    dtype = "<f4" if interval is None else "<f2"
    n = ex.unit.shape[0]
    if not n:
        return []
    unit = np.asarray(ex.unit)
    if (np.diff(unit) < 0).any():
        raise ValueError("examples must come unit by unit, in ascending order")
    length = np.asarray(ex.last) - np.asarray(ex.first)
    fields = np.stack(
        [
            np.zeros(n, np.int64) if interval is None else np.asarray(interval),
            ex.rank,
            ex.sequence_id,
            ex.position,
            ex.position - ex.before + ex.first,
            length,
        ],
        axis=1,
    )
    fields_blob = to_blob(fields, "i4")
    vals_blob = to_blob(np.asarray(ex.value), "f4")
    cols = np.arange(ex.windows.shape[1])
    inside = (cols >= np.asarray(ex.first)[:, None]) & (cols < np.asarray(ex.last)[:, None])
    acts_blob = to_blob(ex.windows[inside], dtype)  # row-major: each window's part in turn
    units_at, starts = np.unique(unit, return_index=True)
    ends = np.append(starts[1:], n)
    act_at = np.concatenate([[0], np.cumsum(length)]) * np.dtype(dtype).itemsize
    return [
        (source_id, u, b - a, fields_blob[a * 24 : b * 24], vals_blob[a * 4 : b * 4],
         acts_blob[act_at[a] : act_at[b]])
        for u, a, b in zip(units_at.tolist(), starts.tolist(), ends.tolist(), strict=True)
    ]  # fmt: skip
