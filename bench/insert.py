"""Bulk inserts of examples: Spyglass's path beside the database engine's own rate.

    python bench/insert.py [--rows 400000] [--pg URL | --pg start]

Examples like an index's top examples (a unit, its rank, a sequence, a position, a value
and a 33-value float32 window), 20 per unit, into the ``examples`` table of a fresh
database (one row per unit, its examples packed: ``storage.pack_examples``), in one
transaction each:

- SQLite, engine: ``executemany`` of the packed rows built beforehand (not timed),
  through the ``sqlite3`` module, with the pragmas Spyglass sets: the floor for any
  Python writer;
- SQLite, Spyglass: ``storage.add_examples`` from the indexer's columns, packing inside
  the timing;
- PostgreSQL (``--pg URL``, or ``--pg start`` for a throwaway server made as the postgres
  test tier makes one), engine: ``COPY ... FROM STDIN`` of text written beforehand;
- PostgreSQL, Spyglass: ``storage.add_examples`` (COPY through psycopg).

Prints examples/s for each and Spyglass's share of the engine's rate.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from sqlalchemy import text

from spyglass import storage

WINDOW = 33


def columns(n: int, seed: int = 0) -> storage.ExampleColumns:
    """``n`` example rows: 20 per unit, windows of 33 float32 values (a few cut short)."""
    rng = np.random.default_rng(seed)
    windows = rng.standard_normal((n, WINDOW), dtype=np.float32)
    first = np.where(rng.random(n) < 0.05, rng.integers(0, 24, n), 0)
    return storage.ExampleColumns(
        unit=np.arange(n) // 20,
        rank=np.arange(n) % 20,
        sequence_id=rng.integers(0, 1024, n),
        position=rng.integers(24, 120, n),
        value=rng.random(n, dtype=np.float32) * 5,
        windows=windows,
        first=first,
        last=np.full(n, WINDOW),
        before=24,
    )


def fresh_source(engine) -> int:
    with engine.begin() as conn:
        model_id = storage.replace_model(
            conn, "bench", spec="x", corpus="x", n_layers=1, d_model=1, d_vocab=1,
            seq_len=128, skip_first=1, top_k=20,
        )  # fmt: skip
        return storage.add_source(
            conn, model_id, name="0-mlp", kind="mlp", layer=0, hook="h", n_units=1, sae=None,
            info=None,
        )  # fmt: skip


def raw_rows(ex: storage.ExampleColumns, source_id: int) -> list[tuple]:
    return storage.pack_examples(source_id, ex)


COLUMNS = ", ".join(storage.EXAMPLE_COLUMNS)


def sqlite_rates(ex: storage.ExampleColumns) -> tuple[float, float]:
    import sqlite3

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "engine.db"
        engine = storage.make_engine(str(path), create=True)
        rows = raw_rows(ex, fresh_source(engine))
        engine.dispose()
        db = sqlite3.connect(path, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA foreign_keys=ON")
        t0 = time.perf_counter()
        db.execute("BEGIN")
        db.executemany(f"INSERT INTO examples ({COLUMNS}) VALUES (?,?,?,?,?,?)", rows)
        db.execute("COMMIT")
        raw = len(ex.unit) / (time.perf_counter() - t0)
        db.close()

        engine = storage.make_engine(str(Path(tmp) / "spyglass.db"), create=True)
        source_id = fresh_source(engine)
        t0 = time.perf_counter()
        with engine.begin() as conn:
            storage.add_examples(conn, source_id, ex)
        ours = len(ex.unit) / (time.perf_counter() - t0)
        engine.dispose()
    return raw, ours


def postgres_rates(ex: storage.ExampleColumns, url: str) -> tuple[float, float]:
    engine = storage.make_engine(url, create=True)
    try:
        source_id = fresh_source(engine)
        lines = [
            "\t".join([*(str(v) for v in row[:3]), *("\\\\x" + b.hex() for b in row[3:])])
            for row in raw_rows(ex, source_id)
        ]
        payload = ("\n".join(lines) + "\n").encode()
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM examples"))
        t0 = time.perf_counter()
        with engine.begin() as conn:
            cur = conn.connection.driver_connection.cursor()
            with cur.copy(f"COPY examples ({COLUMNS}) FROM STDIN") as copy:
                copy.write(payload)
            conn.execute(text("DELETE FROM examples WHERE false"))
        raw = len(ex.unit) / (time.perf_counter() - t0)
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM examples"))
        t0 = time.perf_counter()
        with engine.begin() as conn:
            storage.add_examples(conn, source_id, ex)
        ours = len(ex.unit) / (time.perf_counter() - t0)
    finally:
        engine.dispose()
    return raw, ours


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=400_000)
    ap.add_argument("--pg", help="a PostgreSQL URL, or 'start' for a throwaway server")
    args = ap.parse_args()
    ex = columns(args.rows)
    raw, ours = sqlite_rates(ex)
    print(f"{args.rows:,} examples ({args.rows // 20:,} unit rows), one transaction each")
    print(f"SQLite engine (executemany): {raw:10,.0f} examples/s")
    print(f"SQLite Spyglass:             {ours:10,.0f} examples/s ({ours / raw:.0%} of the engine)")
    if not args.pg:
        return
    server = None
    url = args.pg
    if args.pg == "start":
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "postgres"))
        from conftest import start_server

        server = start_server()
        url = server.create_database("bench")
    try:
        raw, ours = postgres_rates(ex, url)
    finally:
        if server is not None:
            server.run("pg_ctl", "-D", str(server.data), "-m", "immediate", "-w", "stop")
    print(f"PostgreSQL engine (COPY):    {raw:10,.0f} examples/s")
    print(f"PostgreSQL Spyglass:         {ours:10,.0f} examples/s ({ours / raw:.0%} of the engine)")


if __name__ == "__main__":
    main()
