"""Load on a live server: concurrent page views and live requests on loopback.

    python bench/load.py [--db data/spyglass.db] [--seconds 20] [--clients 8]

First, in one run, the latency of live activations on a 128-token prompt beside a bare
forward pass of the same tokens (medians of 10). Then ``--clients`` clients fire a mix of
page views (which need no model) and live requests (which queue for it) for ``--seconds``,
and the script prints p50/p99 per endpoint, the 503s (a full queue or a time limit: the
service refusing rather than falling over) and the errors (anything else not 2xx).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import socket
import statistics
import threading
import time
from collections import defaultdict

import httpx
import torch
import uvicorn

from app.main import create_app
from spyglass import storage
from spyglass.model import load_model
from spyglass.settings import Settings

PROMPT = (
    "To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer "
    "the slings and arrows of outrageous fortune, or to take arms against a sea of troubles "
    "and by opposing end them. def main(argv):\n    parser = argparse.ArgumentParser()\n"
)


def serve(settings: Settings) -> tuple[str, uvicorn.Server]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    threading.Thread(target=server.run, daemon=True).start()
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            httpx.get(url + "/.json", timeout=1)
            return url, server
        except httpx.HTTPError:
            time.sleep(0.1)
    raise SystemExit("the server did not start")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", default="data/spyglass.db")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--clients", type=int, default=8)
    args = ap.parse_args()

    engine = storage.make_engine(args.db)
    with engine.connect() as conn:
        m = storage.list_models(conn)[0]
        sources = storage.list_sources(conn, m.id)
    engine.dispose()
    url, server = serve(Settings(db=args.db, preload=True))
    client = httpx.Client(base_url=url, timeout=120)
    # An SAE's latents if there is one, else a middle layer's neurons.
    target = next((s for s in sources if s.kind == "sae"), sources[len(sources) // 2])
    unit_path = f"/api/{m.slug}/{target.name}/0/activations"
    client.post(unit_path, json={"prompt": "warm up"}).raise_for_status()

    # ---- latency: live activations on 128 tokens beside a bare forward, same run
    model = load_model(m.spec, options=m.options)
    ids = model.encode_prompt(PROMPT * 4)[:128]
    prompt = model.decode(ids)
    ids = model.encode_prompt(prompt)
    live, bare = [], []
    for _ in range(10):
        t0 = time.perf_counter()
        client.post(unit_path, json={"prompt": prompt}).raise_for_status()
        live.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        model.activations(torch.tensor([ids]), [target.hook])
        bare.append(time.perf_counter() - t0)
    del model
    print(f"model {m.slug}; live activations on a {len(ids)}-token prompt (medians of 10):")
    print(f"  bare forward to {target.hook}: {statistics.median(bare) * 1000:7.1f} ms")
    print(f"  POST {unit_path}: {statistics.median(live) * 1000:7.1f} ms")

    # ---- load: page views and live requests from concurrent clients
    names = [s.name for s in sources]
    mix = [
        ("GET /", 4, lambda c, r: c.get("/")),
        ("GET /{model}", 4, lambda c, r: c.get(f"/{m.slug}")),
        ("GET /{model}/{source}", 4, lambda c, r: c.get(f"/{m.slug}/{r.choice(names)}")),
        (
            "GET /{model}/{source}/{index}",
            8,
            lambda c, r: c.get(f"/{m.slug}/{r.choice(names)}/{r.randrange(100)}"),
        ),
        (
            "GET /{model}/{source}/{index}.json",
            4,
            lambda c, r: c.get(f"/{m.slug}/{r.choice(names)}/{r.randrange(100)}.json"),
        ),
        (
            "POST /api/.../activations",
            2,
            lambda c, r: c.post(
                f"/api/{m.slug}/{r.choice(names)}/{r.randrange(100)}/activations",
                json={"prompt": PROMPT[: r.randrange(20, len(PROMPT))]},
            ),
        ),
        (
            "GET /{model}/prompt.json",
            1,
            lambda c, r: c.get(f"/{m.slug}/prompt.json", params={"text": PROMPT[:60]}),
        ),
        (
            "POST /api/{model}/steer",
            1,
            lambda c, r: c.post(
                f"/api/{m.slug}/steer",
                json={
                    "prompt": "The meaning of life is",
                    "units": [{"source": names[0], "index": r.randrange(100), "strength": 5.0}],
                    "max_new_tokens": 8,
                    "temperature": 0,
                },
            ),
        ),
    ]
    weights = [w for _, w, _ in mix]
    latencies: dict[str, list[float]] = defaultdict(list)
    refused: dict[str, int] = defaultdict(int)
    errors: dict[str, int] = defaultdict(int)

    async def worker(seed: int, until: float) -> None:
        r = random.Random(seed)
        async with httpx.AsyncClient(base_url=url, timeout=120) as c:
            while time.perf_counter() < until:
                name, _, call = r.choices(mix, weights)[0]
                t0 = time.perf_counter()
                try:
                    resp = await call(c, r)
                    status = resp.status_code
                except httpx.HTTPError:
                    status = -1
                latencies[name].append(time.perf_counter() - t0)
                if status == 503:
                    refused[name] += 1
                elif not 200 <= status < 300:
                    errors[name] += 1

    async def run() -> None:
        until = time.perf_counter() + args.seconds
        await asyncio.gather(*(worker(i, until) for i in range(args.clients)))

    asyncio.run(run())
    server.should_exit = True
    print(f"\n{args.clients} clients for {args.seconds:g} s:")
    print(f"  {'endpoint':36} {'n':>5} {'p50 ms':>8} {'p99 ms':>8} {'503':>5} {'errors':>6}")
    for name, _, _ in mix:
        lat = latencies[name]
        if lat:
            print(
                f"  {name:36} {len(lat):5d} {percentile(lat, 0.5) * 1000:8.1f} "
                f"{percentile(lat, 0.99) * 1000:8.1f} {refused[name]:5d} {errors[name]:6d}"
            )
    print(f"  errors in all: {sum(errors.values())}")


if __name__ == "__main__":
    main()
