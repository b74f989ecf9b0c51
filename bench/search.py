"""Full-text search over explanations: latency of ``/{model}/search.json`` on an explained
index, each query distinct (so the page cache never answers), in one run.

    python bench/search.py --db data/spyglass.db [--model embedded] [--queries 400]

Queries are one or two words drawn from the stored explanations themselves (seeded, as
often as they occur there, so common words that match thousands come up often), a
quarter of them filtered to one source and a quarter to a density range, and a tenth ask
for page 2. Prints p50, p95, p99 and max in ms, for the database query alone
(``storage.search_explanations``) and for the whole request through the app.
"""

from __future__ import annotations

import argparse
import random
import time

import numpy as np
from fastapi.testclient import TestClient

from app.main import create_app
from spyglass import storage
from spyglass.settings import Settings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", default="data/spyglass.db")
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--queries", type=int, default=400)
    args = ap.parse_args()

    rng = random.Random(0)
    engine = storage.make_engine(args.db)
    with engine.connect() as conn:
        m = storage.get_model(conn, args.model)
        names = [s.name for s in storage.list_sources(conn, m.id)]
        texts = conn.exec_driver_sql("SELECT text FROM explanations").scalars().all()
    words = [w.lower() for t in sorted(texts) for w in storage.search_terms(t) if len(w) > 1]
    print(f"{len(texts)} explanations, {len(set(words))} distinct words, {len(names)} sources")
    queries, seen = [], set()
    while len(queries) < args.queries:
        q = " ".join(rng.choice(words) for _ in range(rng.choice((1, 1, 2))))
        params: dict = {"q": q}
        if rng.random() < 0.25:
            params["source"] = rng.choice(names)
        if rng.random() < 0.25:
            params |= {"min_density": 0.001, "max_density": 0.5}
        if rng.random() < 0.1:
            params["page"] = 2
        key = tuple(sorted(params.items()))
        if key not in seen:
            seen.add(key)
            queries.append(params)

    db_ms, hits = [], 0
    with engine.connect() as conn:
        for p in queries:
            t0 = time.perf_counter()
            hits += len(
                storage.search_explanations(
                    conn,
                    m.id,
                    p["q"],
                    source=p.get("source"),
                    min_density=p.get("min_density"),
                    max_density=p.get("max_density"),
                    offset=20 * (p.get("page", 1) - 1),
                    limit=21,
                )
            )
            db_ms.append(1000 * (time.perf_counter() - t0))
    engine.dispose()

    http_ms = []
    with TestClient(create_app(Settings(db=args.db))) as client:
        client.get(f"/{args.model}/search.json", params={"q": "warm"})
        for p in queries:
            t0 = time.perf_counter()
            r = client.get(f"/{args.model}/search.json", params=p)
            http_ms.append(1000 * (time.perf_counter() - t0))
            assert r.status_code == 200, r.text[:200]

    print(f"{len(queries)} distinct queries, {hits / len(queries):.1f} hits each on average")
    for name, ms in (("database query", db_ms), ("whole request", http_ms)):
        p50, p95, p99 = np.percentile(ms, [50, 95, 99])
        print(f"{name:15s} p50 {p50:6.1f} ms  p95 {p95:6.1f}  p99 {p99:6.1f}  max {max(ms):6.1f}")


if __name__ == "__main__":
    main()
