"""Reading an index (the app): one function per query, each returning records."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy import (
    Connection,
    Engine,
    Integer,
    Table,
    func,
    select,
)

from spyglass.storage.engine import display_url
from spyglass.storage.explanations import explanation_stamp
from spyglass.storage.records import (
    ExampleRow,
    ModelRow,
    SequenceRow,
    SourceRow,
    SourceSummary,
    UnitRow,
    UnitStats,
)
from spyglass.storage.schema import (
    examples,
    from_int_blob,
    models,
    samples,
    sequences,
    sources,
    units,
    vocab,
)

__all__ = [
    "ping",
    "ping_conn",
    "list_models",
    "index_identity",
    "sqlite_identity",
    "sqlite_watch",
    "get_model",
    "list_sources",
    "get_source",
    "source_summaries",
    "SORTS",
    "list_units",
    "get_unit",
    "get_examples",
    "get_samples",
    "get_sequences",
    "token_texts",
    "all_token_texts",
    "unit_max_acts",
    "unit_densities",
    "PackedExamples",
    "iter_packed_examples",
    "sequence_tokens",
    "unit_logits",
    "iter_units",
    "iter_sequences",
    "model_and_sources",
]


def ping(engine: Engine) -> None:
    """Raises if the database cannot answer a query (for health checks)."""
    with engine.connect() as conn:
        ping_conn(conn)


def ping_conn(conn: Connection) -> None:
    conn.execute(select(1)).scalar()


def list_models(conn: Connection) -> list[ModelRow]:
    return [_model(r) for r in conn.execute(select(models).order_by(models.c.slug))]


def index_identity(conn: Connection) -> str:
    """A token that changes whenever a model is indexed, replaced or removed: the key under
    which the server may keep pages rendered from this index. Every write to an index goes
    through :func:`replace_model` (a fresh row, a new ``created``) in one transaction, so the
    model rows alone tell one index from the next."""
    return _identity(conn.exec_driver_sql(_IDENTITY_SQL).all(), explanation_stamp(conn))


_IDENTITY_SQL = "SELECT id, slug, created, seconds FROM models ORDER BY id"


def _identity(rows, stamp: tuple) -> str:
    """The model rows, and the explanations' count and last id (labels are added to an
    index without indexing it again)."""
    text = repr(([tuple(r) for r in rows], tuple(stamp)))
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def sqlite_identity(conn: sqlite3.Connection) -> str:
    """:func:`index_identity` read through a plain sqlite3 connection."""
    have = conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'explanations'")
    stamp = ()
    if have.fetchone()[0]:
        stamp = conn.execute("SELECT count(*), max(id) FROM explanations").fetchone()
    return _identity(conn.execute(_IDENTITY_SQL).fetchall(), stamp)


def sqlite_watch(engine: Engine) -> sqlite3.Connection | None:
    """For an SQLite index, a read-only autocommit connection of its own whose ``PRAGMA
    data_version`` changes whenever another connection commits; None for other databases."""
    if engine.dialect.name != "sqlite" or not engine.url.database:
        return None
    path = Path(engine.url.database).resolve()
    conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, check_same_thread=False)
    conn.isolation_level = None
    return conn


def get_model(conn: Connection, slug: str) -> ModelRow | None:
    row = conn.execute(select(models).where(models.c.slug == slug)).first()
    return _model(row) if row else None


def _model(row) -> ModelRow:
    m = dict(row._mapping)
    m["options"] = json.loads(m["options"]) if m["options"] else None
    return ModelRow(**m)


def model_and_sources(
    conn: Connection, slug: str, names: list[str] | None = None
) -> tuple[ModelRow, list[SourceRow]]:
    """The model ``slug`` and its sources called ``names`` (all of them when None or
    empty), for commands: ValueError, in one line, for an unknown model or source."""
    m = get_model(conn, slug)
    if m is None:
        raise ValueError(f"no model {slug!r} in {display_url(str(conn.engine.url))}")
    chosen = list_sources(conn, m.id)
    if names:
        unknown = sorted(set(names) - {s.name for s in chosen})
        if unknown:
            raise ValueError(
                f"no source {', '.join(unknown)} in {slug} "
                f"(it has {', '.join(s.name for s in chosen)})"
            )
        chosen = [s for s in chosen if s.name in names]
    return m, chosen


def list_sources(conn: Connection, model_id: int) -> list[SourceRow]:
    q = (
        select(sources)
        .where(sources.c.model_id == model_id)
        .order_by(sources.c.layer, sources.c.id)
    )
    return [_source(r) for r in conn.execute(q)]


def get_source(conn: Connection, model_id: int, name: str) -> SourceRow | None:
    q = select(sources).where(sources.c.model_id == model_id, sources.c.name == name)
    row = conn.execute(q).first()
    return _source(row) if row else None


def _source(row) -> SourceRow:
    m = dict(row._mapping)
    m["info"] = json.loads(m["info"]) if m["info"] else None
    return SourceRow(**m)


def source_summaries(conn: Connection, model_id: int) -> dict[int, SourceSummary]:
    q = (
        select(
            units.c.source_id,
            func.avg(units.c.density),
            func.sum((units.c.density == 0).cast(Integer)),
            func.max(units.c.max_act),
        )
        .join(sources, sources.c.id == units.c.source_id)
        .where(sources.c.model_id == model_id)
        .group_by(units.c.source_id)
    )
    return {
        sid: SourceSummary(mean or 0.0, dead or 0, mx) for sid, mean, dead, mx in conn.execute(q)
    }


SORTS = {
    "index": units.c.idx,
    "max_act": units.c.max_act,
    "density": units.c.density,
    # A latent's share of the SAE's L0 is its density over the sum of densities: the same
    # order as density, shown as a share.
    "l0": units.c.density,
}


def list_units(
    conn: Connection, source_id: int, *, sort: str, descending: bool, offset: int, limit: int
) -> list[UnitRow]:
    col = SORTS[sort]
    order = (col.desc() if descending else col.asc(), units.c.idx.asc())
    q = select(units).where(units.c.source_id == source_id).order_by(*order)
    return [_unit(r) for r in conn.execute(q.offset(offset).limit(limit))]


def iter_units(conn: Connection, source_id: int, lo: int, hi: int):
    """The units ``lo:hi`` of a source, in index order, as ``UnitRow``: for passes over
    whole sources (export)."""
    q = (
        select(units)
        .where(units.c.source_id == source_id, units.c.idx >= lo, units.c.idx < hi)
        .order_by(units.c.idx)
    )
    for row in conn.execute(q):
        yield _unit(row)


def get_unit(conn: Connection, source_id: int, idx: int) -> UnitRow | None:
    q = select(units).where(units.c.source_id == source_id, units.c.idx == idx)
    row = conn.execute(q).first()
    return _unit(row) if row else None


def _unit(row) -> UnitRow:
    m = dict(row._mapping)
    m["logits"] = json.loads(m["logits"])
    m["stats"] = UnitStats.from_json(m["stats"]) if m["stats"] else None
    return UnitRow(**m)


def get_examples(conn: Connection, source_id: int, unit: int) -> list[ExampleRow]:
    return [e for _, e in _examples_of(conn, examples, source_id, unit, "<f4")]


def get_samples(conn: Connection, source_id: int, unit: int) -> dict[int, list[ExampleRow]]:
    """Interval samples by interval, in sampling order."""
    out: dict[int, list[ExampleRow]] = {}
    for interval, e in _examples_of(conn, samples, source_id, unit, "<f2"):
        out.setdefault(interval, []).append(e)
    return out


def _examples_of(conn: Connection, table: Table, source_id: int, unit: int, dtype: str):
    """(interval, example) pairs of one unit's packed row, in their stored order."""
    q = select(table).where(table.c.source_id == source_id, table.c.unit == unit)
    row = conn.execute(q).first()
    if row is None:
        return []
    fields = np.frombuffer(row.fields, dtype="<i4").reshape(row.n, 6).tolist()
    values = np.frombuffer(row.vals, dtype="<f4").astype(np.float64).tolist()
    acts = np.frombuffer(row.acts, dtype=dtype).astype(np.float64)
    at = np.concatenate([[0], np.cumsum([f[5] for f in fields])]).tolist()
    return [
        (interval, ExampleRow(rank, seq, pos, value, start, acts[at[i] : at[i + 1]].tolist()))
        for i, ((interval, rank, seq, pos, start, _), value) in enumerate(
            zip(fields, values, strict=True)
        )
    ]


def get_sequences(conn: Connection, model_id: int, ids: Iterable[int]) -> dict[int, SequenceRow]:
    q = select(sequences).where(sequences.c.model_id == model_id, sequences.c.id.in_(set(ids)))
    return {
        r.id: SequenceRow(r.id, r.document, r.offset, from_int_blob(r.tokens))
        for r in conn.execute(q)
    }


def iter_sequences(conn: Connection, model_id: int, chunk: int = 4096):
    """Every sequence of a model's index, by id, read ``chunk`` rows at a time: for passes
    over the whole corpus (export)."""
    q = (
        select(sequences)
        .where(sequences.c.model_id == model_id)
        .order_by(sequences.c.id)
        .execution_options(yield_per=chunk)
    )
    for r in conn.execute(q):
        yield SequenceRow(r.id, r.document, r.offset, from_int_blob(r.tokens))


def token_texts(conn: Connection, model_id: int, ids: Iterable[int]) -> dict[int, str]:
    q = select(vocab.c.token_id, vocab.c.text).where(
        vocab.c.model_id == model_id, vocab.c.token_id.in_(set(ids))
    )
    return dict(conn.execute(q).all())


def all_token_texts(conn: Connection, model_id: int) -> dict[int, str]:
    """The whole vocabulary of a model's index, id -> display text."""
    q = select(vocab.c.token_id, vocab.c.text).where(vocab.c.model_id == model_id)
    return dict(conn.execute(q).all())


def unit_max_acts(conn: Connection, source_id: int) -> list[float]:
    """Each unit's max activation over the corpus, by index."""
    q = select(units.c.max_act).where(units.c.source_id == source_id).order_by(units.c.idx)
    return list(conn.execute(q).scalars())


def unit_densities(conn: Connection, source_id: int) -> list[float]:
    """Each unit's density, by index."""
    q = select(units.c.density).where(units.c.source_id == source_id).order_by(units.c.idx)
    return list(conn.execute(q).scalars())


@dataclass(frozen=True)
class PackedExamples:
    """One unit's packed row of examples or samples, as arrays: ``fields`` [n, 6] int32
    (interval, rank, sequence_id, position, window_start, window length), ``values`` [n]
    and ``acts``, the windows one after another (float64)."""

    unit: int
    fields: np.ndarray
    values: np.ndarray
    acts: np.ndarray


def iter_packed_examples(conn: Connection, source_id: int, lo: int, hi: int, *, interval: bool):
    """The packed examples of units ``lo:hi`` of a source (``interval``: their interval
    samples), in unit order, as ``PackedExamples``: for passes over whole sources."""
    table, dtype = (samples, "<f2") if interval else (examples, "<f4")
    q = (
        select(table)
        .where(table.c.source_id == source_id, table.c.unit >= lo, table.c.unit < hi)
        .order_by(table.c.unit)
    )
    for row in conn.execute(q):
        yield PackedExamples(
            row.unit,
            np.frombuffer(row.fields, dtype="<i4").reshape(row.n, 6),
            np.frombuffer(row.vals, dtype="<f4").astype(np.float64),
            np.frombuffer(row.acts, dtype=dtype).astype(np.float64),
        )


def unit_logits(conn: Connection, source_id: int, lo: int, hi: int):
    """``(index, max_act, logits)`` of units ``lo:hi`` of a source, in order."""
    q = (
        select(units.c.idx, units.c.max_act, units.c.logits)
        .where(units.c.source_id == source_id, units.c.idx >= lo, units.c.idx < hi)
        .order_by(units.c.idx)
    )
    return [(i, m, json.loads(lg)) for i, m, lg in conn.execute(q)]


def sequence_tokens(conn: Connection, model_id: int) -> dict[int, np.ndarray]:
    """Every sequence's token ids (int32), by id."""
    q = select(sequences.c.id, sequences.c.tokens).where(sequences.c.model_id == model_id)
    return {i: np.frombuffer(blob, dtype="<i4") for i, blob in conn.execute(q)}
