"""Every row of an index database, in a form two databases can be compared by."""

from __future__ import annotations

import json

from sqlalchemy import select

from spyglass import storage

VOLATILE = {"models": {"id", "seconds", "created"}}
"""Columns that say when and how fast, not what."""


def dump(db: str) -> dict[str, list[tuple]]:
    """Each table's rows, sorted, with volatile columns left out and ids replaced by names;
    correlation lists are split off (see ``correlations``)."""
    engine = storage.make_engine(db)
    out: dict[str, list[tuple]] = {}
    try:
        with engine.connect() as conn:
            source_names = {r.id: r.name for r in conn.execute(select(storage.sources))}
            for table in storage.metadata.sorted_tables:
                drop = VOLATILE.get(table.name, set())
                rows = []
                for row in conn.execute(select(table)).mappings():
                    row = {k: v for k, v in row.items() if k not in drop}
                    if "source_id" in row:
                        row["source_id"] = source_names[row["source_id"]]
                    if table.name == "sources":
                        row.pop("id")
                    if table.name == "units" and row.get("stats"):
                        stats = json.loads(row["stats"])
                        stats.pop("correlated", None)
                        row["stats"] = json.dumps(stats, sort_keys=True)
                    rows.append(tuple(sorted(row.items(), key=lambda kv: kv[0])))
                out[table.name] = sorted(rows, key=repr)
    finally:
        engine.dispose()
    return out


def correlations(db: str) -> dict[tuple[str, int], list[list]]:
    """Each unit's most correlated units ``[[index, r], ...]``."""
    engine = storage.make_engine(db)
    try:
        with engine.connect() as conn:
            names = {r.id: r.name for r in conn.execute(select(storage.sources))}
            return {
                (names[r.source_id], r.idx): json.loads(r.stats).get("correlated", [])
                for r in conn.execute(select(storage.units))
            }
    finally:
        engine.dispose()


def assert_same_index(a: str, b: str) -> None:
    """The two databases hold the same index: every row equal, the correlations too (a
    merge sorts the tokens back into one pass's order, so their sums are the same
    float64 sums)."""
    da, db_ = dump(a), dump(b)
    assert da.keys() == db_.keys()
    for table in da:
        assert len(da[table]) == len(db_[table]), table
        assert da[table] == db_[table], table
    assert correlations(a) == correlations(b)
