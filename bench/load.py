"""Load on a live server: many concurrent connections of page views and live requests.

    python bench/load.py [--db data/spyglass.db] [--seconds 20] [--connections 64,256]
                         [--live-share 0.1] [--pages 2000] [--latency]

The server runs as it does in production (``uvicorn app.main:create_app --factory``, one
process) in a child process; the load comes from another process, over loopback, through
keep-alive HTTP/1.1 connections written on raw asyncio streams (an HTTP client library
would cost more CPU than the server on a 2-core machine, and measure itself).

Scenarios, each for ``--seconds``, after a ``--warm-up`` of page views from a cold cache
(reported too: it shows what pages cost while they are rendered the first time):

- ``pages`` at each connection count: unit pages (HTML and ``.json`` twins, accepting
  gzip as browsers do) drawn from ``--pages`` distinct units by a Zipf law, as links shared
  in a paper or a thread are: a few very popular, a long tail opened once;
- ``mixed`` at each connection count: the same page views, plus source and model pages,
  with ``--live-share`` of requests live (activations, which units fire, steering), which
  queue for the one model. A live request past the queue gets 503 with Retry-After: counted
  as refused, not as an error.

Printed per scenario: unit pages/s, p50/p99 latency per kind of request, 503s, errors
(anything else not 2xx, and requests with no answer within ``--timeout``). With
``--latency``, first the latency of live activations on 128 tokens beside a bare forward.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROMPT = (
    "To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer "
    "the slings and arrows of outrageous fortune, or to take arms against a sea of troubles "
    "and by opposing end them. def main(argv):\n    parser = argparse.ArgumentParser()\n"
)


# ---- the server ----------------------------------------------------------------------------


def start_server(db: str) -> tuple[subprocess.Popen, int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, SPYGLASS_DB=db, SPYGLASS_PRELOAD="1")
    cmd = [sys.executable, "-m", "uvicorn", "app.main:create_app", "--factory"]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    cmd += ["--backlog", "4096"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env)
    for _ in range(600):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).read()
            return proc, port
        except OSError:
            if proc.poll() is not None:
                raise SystemExit("the server exited at start") from None
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the server did not start")


def get_json(port: int, path: str):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=600) as r:
        return json.load(r)


def post_json(port: int, path: str, body: dict) -> tuple[int, float]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    t0 = time.perf_counter()
    with urllib.request.urlopen(req, timeout=600) as r:
        r.read()
        return r.status, time.perf_counter() - t0


# ---- a lean HTTP/1.1 client -----------------------------------------------------------------


@dataclass
class Request:
    kind: str
    method: str
    path: str
    body: bytes = b""

    def encode(self) -> bytes:
        head = f"{self.method} {self.path} HTTP/1.1\r\nHost: bench\r\nAccept-Encoding: gzip\r\n"
        if self.body:
            head += f"Content-Type: application/json\r\nContent-Length: {len(self.body)}\r\n"
        return head.encode() + b"\r\n" + self.body


class Connection:
    def __init__(self, port: int):
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def send(self, req: Request) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writer.write(req.encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        length, close = 0, False
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.lower()
            if name == "content-length":
                length = int(value)
            elif name == "connection" and value.strip().lower() == "close":
                close = True
            elif name == "transfer-encoding":
                raise RuntimeError("chunked answers are not expected from this server")
        if length:
            await self.reader.readexactly(length)
        if close:
            self.close()
        return status

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


@dataclass
class Tally:
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    refused: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    statuses: dict[int, int] = field(default_factory=lambda: defaultdict(int))


async def drive(port, n_conns, seconds, timeout, next_request, seed) -> Tally:
    tally = Tally()
    until = time.perf_counter() + seconds

    async def one(i: int) -> None:
        rng = random.Random(seed * 100_003 + i)
        conn = Connection(port)
        while time.perf_counter() < until:
            req = next_request(rng)
            t0 = time.perf_counter()
            try:
                status = await asyncio.wait_for(conn.send(req), timeout)
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
                status = -1 if not isinstance(exc, TimeoutError) else -2
                conn.close()
            tally.latencies[req.kind].append(time.perf_counter() - t0)
            tally.statuses[status] += 1
            if status == 503:
                tally.refused[req.kind] += 1
            elif not (200 <= status < 300 or status == 304):
                tally.errors[req.kind] += 1
        conn.close()

    await asyncio.gather(*(one(i) for i in range(n_conns)))
    return tally


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def report(title: str, tally: Tally, seconds: float, cache: tuple[int, int]) -> dict:
    unit_kinds = [k for k in tally.latencies if k.startswith("unit")]
    unit_ok = sum(len(tally.latencies[k]) - tally.errors[k] - tally.refused[k] for k in unit_kinds)
    all_unit = [v for k in unit_kinds for v in tally.latencies[k]]
    errors = sum(tally.errors.values())
    print(f"\n{title}")
    cols = f"{'n':>7} {'per s':>7} {'p50 ms':>8} {'p99 ms':>8} {'503':>6} {'errors':>6}"
    print(f"  {'request':28} {cols}")
    for kind in sorted(tally.latencies):
        lat = tally.latencies[kind]
        print(
            f"  {kind:28} {len(lat):7d} {len(lat) / seconds:7.1f} "
            f"{percentile(lat, 0.5) * 1000:8.1f} {percentile(lat, 0.99) * 1000:8.1f} "
            f"{tally.refused[kind]:6d} {tally.errors[kind]:6d}"
        )
    p99 = percentile(all_unit, 0.99) * 1000 if all_unit else float("nan")
    hits, misses = cache
    share = hits / max(1, hits + misses)
    print(f"  unit pages: {unit_ok / seconds:.1f}/s, p99 {p99:.1f} ms; errors in all: {errors}")
    print(f"  page cache: {hits} hits, {misses} renders ({share:.1%} hits)")
    return {
        "unit_pages_per_s": unit_ok / seconds,
        "unit_p99_ms": p99,
        "errors": errors,
        "hit_share": share,
    }


# ---- the scenarios --------------------------------------------------------------------------


def zipf_weights(n: int, s: float = 1.1) -> list[float]:
    return [1 / (k + 1) ** s for k in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", default="data/spyglass.db")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--connections", default="64,256", help="comma-separated counts")
    ap.add_argument("--live-share", type=float, default=0.1)
    ap.add_argument("--pages", type=int, default=2000, help="distinct unit pages in the draw")
    ap.add_argument(
        "--timeout", type=float, default=30.0, help="seconds before a request counts as hung"
    )
    ap.add_argument(
        "--warm-up",
        type=float,
        default=20.0,
        help="seconds of page views first, from a cold cache, reported on their own (0: none)",
    )
    ap.add_argument("--latency", action="store_true", help="also time live activations")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if not Path(args.db).exists():
        raise SystemExit(f"no index at {args.db}: run `make demo` (or spyglass index) first")
    counts = [int(c) for c in args.connections.split(",")]

    proc, port = start_server(args.db)
    try:
        home = get_json(port, "/.json")
        slug = home["models"][0]["slug"]
        sources = get_json(port, f"/{slug}.json")["sources"]
        names = [s["name"] for s in sources]
        sizes = {s["name"]: s["n_units"] for s in sources}
        rng = random.Random(args.seed)
        population = []
        for _ in range(args.pages):
            name = rng.choice(names)
            population.append((name, rng.randrange(sizes[name])))
        weights = zipf_weights(len(population))
        sae = next((s["name"] for s in sources if s["kind"] == "sae"), names[-1])
        print(
            f"model {slug}: {len(names)} sources; unit pages drawn from {len(population)} "
            f"units (Zipf s=1.1), HTML:JSON 3:1, gzip accepted; server pid {proc.pid}"
        )

        if args.latency:
            live_latency(port, slug, sae)

        def unit_request(r: random.Random) -> Request:
            name, idx = r.choices(population, weights)[0]
            if r.random() < 0.25:
                return Request("unit page .json", "GET", f"/{slug}/{name}/{idx}.json")
            return Request("unit page", "GET", f"/{slug}/{name}/{idx}")

        def live_request(r: random.Random) -> Request:
            x = r.random()
            if x < 0.6:
                body = json.dumps({"prompt": PROMPT[: r.randrange(20, len(PROMPT))]}).encode()
                path = f"/api/{slug}/{sae}/{r.randrange(sizes[sae])}/activations"
                return Request("live: activations", "POST", path, body)
            if x < 0.85:
                q = urllib.parse.urlencode({"text": PROMPT[: r.randrange(20, 80)]})
                return Request("live: prompt.json", "GET", f"/{slug}/prompt.json?{q}")
            body = json.dumps(
                {
                    "prompt": "The meaning of life is",
                    "units": [{"source": names[0], "index": r.randrange(100), "strength": 5.0}],
                    "max_new_tokens": 8,
                    "temperature": 0,
                }
            ).encode()
            return Request("live: steer", "POST", f"/api/{slug}/steer", body)

        def mixed_request(r: random.Random) -> Request:
            x = r.random()
            if x < args.live_share:
                return live_request(r)
            if x < args.live_share + 0.1:
                return Request("source page", "GET", f"/{slug}/{r.choice(names)}")
            if x < args.live_share + 0.15:
                return Request("model page", "GET", f"/{slug}")
            return unit_request(r)

        def cache_counts() -> tuple[int, int]:
            c = get_json(port, "/healthz")["page_cache"]
            return c["hits"], c["misses"]

        results = {}
        scenarios = [("warm-up", counts[0], unit_request)] if args.warm_up else []
        scenarios += [("pages", n, unit_request) for n in counts]
        scenarios += [("mixed", n, mixed_request) for n in counts]
        for i, (kind, n, make) in enumerate(scenarios):
            seconds = args.warm_up if kind == "warm-up" else args.seconds
            before = cache_counts()
            t = asyncio.run(drive(port, n, seconds, args.timeout, make, args.seed + i))
            after = cache_counts()
            what = f"mixed ({args.live_share:.0%} live)" if kind == "mixed" else kind
            results[(kind, n)] = report(
                f"{what}, {n} connections, {seconds:g} s",
                t,
                seconds,
                (after[0] - before[0], after[1] - before[1]),
            )
        print("\nsummary")
        print(f"  {'scenario':24} {'unit pages/s':>13} {'p99 ms':>8} {'errors':>7} {'hits':>7}")
        for (kind, n), r in results.items():
            print(
                f"  {kind + ', ' + str(n) + ' conns':24} {r['unit_pages_per_s']:13.1f} "
                f"{r['unit_p99_ms']:8.1f} {r['errors']:7d} {r['hit_share']:7.1%}"
            )
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def live_latency(port: int, slug: str, sae: str) -> None:
    """Live activations on a 128-token prompt beside a bare forward of the same tokens."""
    import statistics

    import torch

    from spyglass.model import load_model

    meta = get_json(port, f"/{slug}.json")["model"]
    model = load_model(meta["spec"])
    hook = next(s["hook"] for s in get_json(port, f"/{slug}.json")["sources"] if s["name"] == sae)
    ids = model.encode_prompt(PROMPT * 4)[:128]
    prompt = model.decode(ids)
    ids = model.encode_prompt(prompt)
    path = f"/api/{slug}/{sae}/0/activations"
    live, bare = [], []
    for _ in range(10):
        live.append(post_json(port, path, {"prompt": prompt})[1])
        t0 = time.perf_counter()
        model.activations(torch.tensor([ids]), [hook])
        bare.append(time.perf_counter() - t0)
    print(f"live activations on a {len(ids)}-token prompt (medians of 10):")
    print(f"  bare forward to {hook}: {statistics.median(bare) * 1000:7.1f} ms")
    print(f"  POST {path}: {statistics.median(live) * 1000:7.1f} ms")


if __name__ == "__main__":
    main()
