"""Explanations of units: written by ``spyglass explain`` and by people (labels), read by
every page that links a unit, and searched through the database's own full-text index
(SQLite FTS5, PostgreSQL tsvector with a GIN index; see ``schema.explanations``)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson
from sqlalchemy import (
    Connection,
    and_,
    column,
    func,
    insert,
    inspect,
    literal_column,
    or_,
    select,
    table,
    text,
)

from spyglass.storage.schema import (
    TSVECTOR,
    explain_failures,
    explanations,
    models,
    sources,
    unit_key,
    units,
)

__all__ = [
    "ExplanationRow",
    "SearchHit",
    "METHOD_RANK",
    "source_identity",
    "add_explanations",
    "add_explain_failures",
    "supersede_explanations",
    "explained_units",
    "get_explanations",
    "source_explanations",
    "unit_labels",
    "search_explanations",
    "search_terms",
    "explanation_stamp",
]

METHOD_RANK = {"human": 0, "llm": 1, "token-pattern": 2}
"""Which explanation labels a unit where it is linked: a person's first, then an LLM's,
then the token pattern; the newest first among equals."""


_PRESENT: set[tuple[str, str]] = set()


def _has(conn: Connection, table) -> bool:
    """Whether the index has ``table``: one written before it (or before ``spyglass
    explain`` ran on it) has not, and reads as having no rows there. Kept once found."""
    key = (conn.engine.url.render_as_string(hide_password=True), table.name)
    if key in _PRESENT:
        return True
    if inspect(conn).has_table(table.name):
        _PRESENT.add(key)
        return True
    return False


@dataclass(frozen=True)
class ExplanationRow:
    id: int
    source_id: int
    unit: int
    method: str
    text: str
    explainer: str | None
    created: str
    evidence: dict | None = None
    scores: dict = field(default_factory=dict)
    """``{scorer: {"value", "lo", "hi", "n"}}``: each score with its bootstrap 95%
    interval and the held-out examples it was measured on."""
    settings: str = ""
    """What made it (``spyglass explain``'s settings hash; ``human`` for a label)."""
    indexed: str = ""
    """The ``created`` of the index it was made on: an earlier one's, when it was kept
    through a re-index."""
    scored: str | None = None
    """The ``created`` of the index its scores were measured on."""


@dataclass(frozen=True)
class SearchHit:
    source: str
    unit: int
    text: str
    method: str
    density: float
    max_act: float


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _json(value) -> str | None:
    if value is None:
        return None
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY).decode()


def source_identity(conn: Connection, source_id: int) -> dict:
    """What an explanation of the source's units records of it: its model's slug, its name,
    its ``unit_key``, and the ``created`` of its index (as ``indexed``)."""
    q = select(
        models.c.slug, models.c.spec, models.c.created, sources.c.name, sources.c.kind,
        sources.c.hook, sources.c.sae,
    ).join(models, models.c.id == sources.c.model_id).where(sources.c.id == source_id)  # fmt: skip
    r = conn.execute(q).one()
    return {
        "model": r.slug,
        "source": r.name,
        "unit_key": unit_key(r.spec, r.kind, r.hook, r.sae),
        "indexed": r.created,
    }


def add_explanations(
    conn: Connection, source_id: int, rows: Sequence[dict], *, skip_present: bool = False
) -> int:
    """Insert explanations of units of a source: each row a dict with ``unit``, ``method``,
    ``settings``, ``text`` and optionally ``evidence``, ``scores``, ``explainer``,
    ``created``, ``indexed`` (default: this index's) and ``scored`` (default: ``indexed``
    when there are scores). With ``skip_present``, a row the source already has (the same
    unit, method, text, explainer and time: an import of what a re-index kept) is left out.
    Returns how many were inserted."""
    if skip_present and rows:
        rows = _not_present(conn, source_id, rows)
    if not rows:
        return 0
    created = _now()
    who = source_identity(conn, source_id)
    conn.execute(
        insert(explanations),
        [
            {
                **who,
                "source_id": source_id,
                "unit": int(r["unit"]),
                "method": r["method"],
                "settings": r["settings"],
                "text": r["text"],
                "evidence": _json(r.get("evidence")),
                "scores": _json(r.get("scores")),
                "explainer": r.get("explainer"),
                "created": r.get("created") or created,
                "indexed": r.get("indexed") or who["indexed"],
                "scored": r.get("scored") or (who["indexed"] if r.get("scores") else None),
            }
            for r in rows
        ],
    )
    return len(rows)


def _not_present(conn: Connection, source_id: int, rows: Sequence[dict]) -> list[dict]:
    e = explanations.c
    q = select(e.unit, e.method, e.text, e.explainer, e.created).where(
        e.source_id == source_id, e.unit.in_(sorted({int(r["unit"]) for r in rows}))
    )
    have = {tuple(r) for r in conn.execute(q)}
    undated = {r[:4] for r in have}  # a row without a time matches one of any time
    out = []
    for r in rows:
        key = (int(r["unit"]), r["method"], r["text"], r.get("explainer"))
        if (key + (r["created"],) if r.get("created") else key) not in (
            have if r.get("created") else undated
        ):
            out.append(r)
    return out


def supersede_explanations(
    conn: Connection,
    source_id: int,
    units: Sequence[int],
    method: str,
    explainer: str | None,
    settings: str,
) -> int:
    """Delete the units' explanations by ``method`` and ``explainer`` other than those made
    with ``settings`` on this index: a run replaces its own earlier explanations of the
    units it writes (another explainer's, and people's labels, stay). Returns how many."""
    if not units or not _has(conn, explanations):
        return 0
    same = (
        explanations.c.explainer.is_(None)
        if explainer is None
        else explanations.c.explainer == explainer
    )
    current = source_identity(conn, source_id)["indexed"]
    q = explanations.delete().where(
        explanations.c.source_id == source_id,
        explanations.c.unit.in_(sorted({int(u) for u in units})),
        explanations.c.method == method,
        or_(explanations.c.settings != settings, explanations.c.indexed != current),
        same,
    )
    return conn.execute(q).rowcount


def add_explain_failures(conn: Connection, source_id: int, rows: Sequence[dict]) -> None:
    """Record units an explainer or scorer failed on (``unit``, ``method``, ``settings``,
    ``error``): never stored as an explanation or a score."""
    if rows:
        created = _now()
        conn.execute(
            insert(explain_failures),
            [{"source_id": source_id, "created": created, **r} for r in rows],
        )


def explained_units(
    conn: Connection, source_id: int, method: str, settings: str, *, this_index: bool = False
) -> set[int]:
    """Units of the source that already have an explanation made with these settings (with
    ``this_index``, made on this index, not kept from an earlier one)."""
    if not _has(conn, explanations):
        return set()
    q = select(explanations.c.unit).where(
        explanations.c.source_id == source_id,
        explanations.c.method == method,
        explanations.c.settings == settings,
    )
    if this_index:
        q = q.where(explanations.c.indexed == source_identity(conn, source_id)["indexed"])
    return set(conn.execute(q).scalars())


def get_explanations(conn: Connection, source_id: int, unit: int) -> list[ExplanationRow]:
    """A unit's explanations, the one that labels it first (``METHOD_RANK``)."""
    if not _has(conn, explanations):
        return []
    q = select(explanations).where(
        explanations.c.source_id == source_id, explanations.c.unit == unit
    )
    rows = [_row(r) for r in conn.execute(q)]
    return sorted(rows, key=lambda e: _label_order(e.method, e.created, e.id))


def source_explanations(conn: Connection, source_id: int, lo: int, hi: int) -> list[ExplanationRow]:
    """Every explanation of the units ``lo:hi`` of a source, by unit, oldest first."""
    if not _has(conn, explanations):
        return []
    q = (
        select(explanations)
        .where(
            explanations.c.source_id == source_id,
            explanations.c.unit >= lo,
            explanations.c.unit < hi,
        )
        .order_by(explanations.c.unit, explanations.c.id)
    )
    return [_row(r) for r in conn.execute(q)]


def _label_order(method: str, created: str, eid: int) -> tuple:
    """Sorts by ``METHOD_RANK``, then newer first (the inverted characters of the ISO
    time, then the larger id)."""
    return (METHOD_RANK.get(method, 9), "".join(chr(0x10FFFF - ord(c)) for c in created), -eid)


def _row(r) -> ExplanationRow:
    m = r._mapping
    return ExplanationRow(
        id=m["id"],
        source_id=m["source_id"],
        unit=m["unit"],
        method=m["method"],
        text=m["text"],
        explainer=m["explainer"],
        created=m["created"],
        evidence=orjson.loads(m["evidence"]) if m["evidence"] else None,
        scores=orjson.loads(m["scores"]) if m["scores"] else {},
        settings=m["settings"],
        indexed=m["indexed"],
        scored=m["scored"],
    )


def unit_labels(
    conn: Connection, source_id: int, unit_ids: Iterable[int] | None = None
) -> dict[int, str]:
    """Each unit's label (its first explanation by ``METHOD_RANK``) for the units given,
    or every explained unit of the source."""
    if not _has(conn, explanations):
        return {}
    q = select(
        explanations.c.unit,
        explanations.c.method,
        explanations.c.text,
        explanations.c.created,
        explanations.c.id,
    ).where(explanations.c.source_id == source_id)
    if unit_ids is not None:
        wanted = sorted({int(u) for u in unit_ids})
        if not wanted:
            return {}
        q = q.where(explanations.c.unit.in_(wanted))
    best: dict[int, tuple] = {}
    for unit, method, body, created, eid in conn.execute(q):
        key = _label_order(method, created, eid)
        if unit not in best or key < best[unit][0]:
            best[unit] = (key, body)
    return {u: body for u, (_, body) in best.items()}


_WORD = re.compile(r"\w+", re.UNICODE)
BROAD = 2000


def search_terms(query: str) -> list[str]:
    """The words of a search query: operators, quotes and punctuation are dropped, so no
    query reaches the database's query syntax as anything but quoted words."""
    return _WORD.findall(query)[:32]


def search_explanations(
    conn: Connection,
    model_id: int,
    query: str,
    *,
    source: str | None = None,
    min_density: float | None = None,
    max_density: float | None = None,
    offset: int = 0,
    limit: int = 20,
) -> list[SearchHit]:
    """Explanations matching every word of ``query`` (the last as a prefix), best ranked
    first: BM25 on SQLite, ``ts_rank`` on PostgreSQL. A query that more than ``BROAD``
    explanations match (a word most of them hold, or a one-letter prefix) is listed in
    index order: its ranking would cost a rank per match, and rank nothing. Raises
    ValueError for a query without words."""
    terms = search_terms(query)
    if not terms:
        raise ValueError("the search has no words to look for")
    if not _has(conn, explanations):
        return []
    cols = (
        sources.c.name,
        explanations.c.unit,
        explanations.c.text,
        explanations.c.method,
        units.c.density,
        units.c.max_act,
    )
    join = explanations.join(sources, sources.c.id == explanations.c.source_id).join(
        units,
        and_(units.c.source_id == explanations.c.source_id, units.c.idx == explanations.c.unit),
    )
    where = [sources.c.model_id == model_id]
    if source is not None:
        where.append(sources.c.name == source)
    if min_density is not None:
        where.append(units.c.density >= min_density)
    if max_density is not None:
        where.append(units.c.density <= max_density)
    if conn.dialect.name == "sqlite":
        fts_table = table("explanations_fts", column("rowid"), column("rank"))
        fts = " ".join(f'"{t}"' for t in terms[:-1]) + f' "{terms[-1]}"*'
        match = text("explanations_fts MATCH :fts").bindparams(fts=fts)
        matches = select(fts_table.c.rowid).select_from(fts_table).where(match)
        joined = join.join(fts_table, fts_table.c.rowid == explanations.c.id)
        rank = fts_table.c.rank  # FTS5's rank: BM25
        by_id = fts_table.c.rowid  # the order FTS5 yields its matches in
    else:
        ts_query = func.to_tsquery(
            literal_column("'english'"), " & ".join(terms[:-1] + [terms[-1] + ":*"])
        )
        match = TSVECTOR.op("@@")(ts_query)
        matches = select(explanations.c.id).where(match)
        joined = join
        rank = func.ts_rank(TSVECTOR, ts_query).desc()
        by_id = explanations.c.id
    broad = conn.execute(
        select(func.count()).select_from(matches.limit(BROAD + 1).subquery())
    ).scalar()
    order = (by_id,) if broad > BROAD else (rank, explanations.c.id)
    q = select(*cols).select_from(joined).where(match, *where).order_by(*order)
    rows = conn.execute(q.offset(offset).limit(limit))
    return [SearchHit(*r) for r in rows]


def explanation_stamp(conn: Connection) -> tuple:
    """What changes whenever an explanation or label is added (for the page cache's
    identity of the index): their count and last id; () on an index without the table."""
    if conn.dialect.name == "sqlite":
        have = conn.exec_driver_sql(
            "SELECT count(*) FROM sqlite_master WHERE name = 'explanations'"
        ).scalar()
    else:
        have = conn.exec_driver_sql("SELECT to_regclass('explanations') IS NOT NULL").scalar()
    if not have:
        return ()
    return tuple(conn.exec_driver_sql("SELECT count(*), max(id) FROM explanations").one())
