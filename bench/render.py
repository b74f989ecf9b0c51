"""What a cold unit page costs the server: ms per page to build its view, render its HTML,
dump its JSON and gzip both, over random units of every source of an index.

    python bench/render.py --db data/spyglass.db [--model embedded] [--pages 100]

Run in one process on one connection, so it is the CPU cost of a page-cache miss without
the server around it; `bench/load.py` measures the server.
"""

from __future__ import annotations

import argparse
import gzip
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app import index_cache, views  # noqa: E402
from app.page_cache import GZIP_LEVEL  # noqa: E402
from app.render import templates  # noqa: E402
from spyglass import storage  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--db", default="data/spyglass.db")
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--pages", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    engine = storage.make_read_engine(args.db, pool_size=1)
    rng = random.Random(args.seed)
    times = {"build": 0.0, "html": 0.0, "json": 0.0, "gzip": 0.0}
    html_bytes = json_bytes = 0
    with engine.connect() as conn:
        m = views.require_model(conn, args.model)
        sources = storage.list_sources(conn, m.id)
        index_cache.vocabulary(conn, m)  # read once per index in the server too
        units = [(s.name, rng.randrange(s.n_units)) for s in rng.choices(sources, k=args.pages)]
        for name, unit in units:
            t0 = time.perf_counter()
            view = views.unit_page(conn, args.model, name, unit)
            t1 = time.perf_counter()
            html = templates.get_template("unit.html").render(view=view).encode()
            t2 = time.perf_counter()
            body = view.model_dump_json().encode()
            t3 = time.perf_counter()
            gzip.compress(html, GZIP_LEVEL)
            gzip.compress(body, GZIP_LEVEL)
            t4 = time.perf_counter()
            for k, dt in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
                times[k] += dt
            html_bytes += len(html)
            json_bytes += len(body)
    engine.dispose()
    n = len(units)
    per_page = "  ".join(f"{k} {v / n * 1000:.2f}" for k, v in times.items())
    print(f"{n} unit pages of {args.model}, ms per page: {per_page}")
    print(
        f"  total {sum(times.values()) / n * 1000:.2f} ms; HTML {html_bytes // n:,} bytes, "
        f"JSON {json_bytes // n:,} bytes (before gzip)"
    )


if __name__ == "__main__":
    main()
