"""The model service under load: a bounded queue answered 503 + Retry-After at once, a time
limit per request, and page views that never wait for model work. Real model, real app."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from app.main import create_app
from app.model_service import ModelService, ServiceBusy, ServiceTimeout
from spyglass.model import load_model
from spyglass.settings import Settings


def slow(seconds: float):
    def fn(model):
        assert model.n_layers == 2  # the real tiny model was loaded and handed over
        time.sleep(seconds)
        return seconds

    return fn


async def timed(coro):
    t0 = time.perf_counter()
    try:
        return await coro, time.perf_counter() - t0
    except ServiceBusy as exc:
        return exc, time.perf_counter() - t0


def test_a_full_queue_refuses_at_once(tiny_index):
    service = ModelService("cpu", max_queue=1, timeout=10)
    spec = str(tiny_index.model_dir)
    service.get(spec)  # loaded up front: the jobs below time only the queue

    async def main():
        return await asyncio.gather(*(timed(service.run(spec, slow(0.4))) for _ in range(4)))

    results = asyncio.run(main())
    done = [r for r, _ in results if r == 0.4]
    refused = [(r, t) for r, t in results if isinstance(r, ServiceBusy)]
    assert len(done) == 2 and len(refused) == 2  # one running, one waiting, two turned away
    for exc, seconds in refused:
        assert seconds < 0.1 and exc.retry_after >= 1 and "limit is 1" in str(exc)


def test_a_request_past_its_time_limit_is_refused_and_stops(tiny_index):
    service = ModelService("cpu", max_queue=4, timeout=0.3)
    spec = str(tiny_index.model_dir)
    service.get(spec)

    async def main():
        return await timed(service.run(spec, slow(2.0)))

    exc, seconds = asyncio.run(main())
    assert isinstance(exc, ServiceTimeout) and 0.25 < seconds < 1.0
    assert "limit of 0.3 s" in str(exc)


def test_generation_stops_at_its_deadline(tiny_index):
    model = load_model(str(tiny_index.model_dir), "cpu")
    ids = model.encode_prompt("the fox")
    with pytest.raises(TimeoutError):
        model.generate(ids, max_new_tokens=5, temperature=0, seed=0, deadline=time.monotonic())
    assert model.generate(
        ids, max_new_tokens=3, temperature=0, seed=0, deadline=time.monotonic() + 60
    )


def test_http_busy_and_timeout_are_503_with_retry_after(tiny_index):
    body = {"prompt": "the quick brown fox", "max_new_tokens": 8, "temperature": 0}

    async def burst(settings: Settings, n: int):
        app = create_app(settings)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await asyncio.gather(
                *(client.post("/api/tiny/0-mlp/3/steer", json=body) for _ in range(n))
            )

    # Nothing may wait: of a burst, the first runs and the rest are turned away.
    replies = asyncio.run(burst(Settings(db=tiny_index.db, max_queue=0), 4))
    codes = sorted(r.status_code for r in replies)
    assert codes[0] == 200 and 503 in codes
    busy = next(r for r in replies if r.status_code == 503)
    assert int(busy.headers["Retry-After"]) >= 1 and "busy" in busy.json()["detail"]
    # A time limit shorter than loading the model: 503 with Retry-After, naming the limit.
    (late,) = asyncio.run(burst(Settings(db=tiny_index.db, request_timeout=0.001), 1))
    assert late.status_code == 503 and "Retry-After" in late.headers
    assert "limit of 0.001 s" in late.json()["detail"]


def test_page_views_do_not_wait_for_model_work(tiny_index):
    async def main():
        app = create_app(Settings(db=tiny_index.db))
        service = app.state.models
        spec = str(tiny_index.model_dir)
        service.get(spec)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            job = asyncio.create_task(service.run(spec, slow(1.0)))
            await asyncio.sleep(0.05)
            t0 = time.perf_counter()
            page = await client.get("/tiny/0-mlp/3")
            seconds = time.perf_counter() - t0
            await job
        return page.status_code, seconds

    status, seconds = asyncio.run(main())
    assert status == 200 and seconds < 0.5
