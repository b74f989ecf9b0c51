"""Long jobs (``app.jobs``): one per key, errors answered once, a bound on those running
and on those kept."""

from __future__ import annotations

import asyncio

import pytest

from app.jobs import Jobs
from app.model_service import ServiceBusy


def run(coro):
    return asyncio.run(coro)


def test_one_job_per_key_with_its_progress():
    async def main():
        jobs, calls, gate = Jobs(), [], asyncio.Event()

        async def work(job):
            calls.append(job.key)
            for _ in range(3):
                await gate.wait()
                job.step()
            return "result"

        a = jobs.start("k", 3, work)
        b = jobs.start("k", 3, work)
        assert a is b and not a.finished and a.done == 0
        gate.set()
        assert await jobs.wait(a) == "result" and await jobs.wait(b) == "result"
        assert calls == ["k"] and a.done == a.total == 3 and jobs.get("k") is a

    run(main())


def test_an_error_is_answered_once_then_the_job_starts_afresh():
    async def main():
        jobs, calls = Jobs(), []

        async def work(job):
            calls.append(1)
            if len(calls) == 1:
                raise ValueError("first try fails")
            return len(calls)

        job = jobs.start("k", 1, work)
        with pytest.raises(ValueError, match="first try"):
            await jobs.wait(job)
        assert jobs.get("k") is None
        assert await jobs.wait(jobs.start("k", 1, work)) == 2

    run(main())


def test_a_waiter_that_goes_away_leaves_the_job_running():
    async def main():
        jobs, gate = Jobs(), asyncio.Event()

        async def work(job):
            await gate.wait()
            return "done"

        job = jobs.start("k", 1, work)
        waiter = asyncio.create_task(jobs.wait(job))
        await asyncio.sleep(0)
        waiter.cancel()
        gate.set()
        assert await jobs.wait(job) == "done"

    run(main())


def test_too_many_running_are_refused_and_finished_ones_are_trimmed():
    async def main():
        jobs, gate = Jobs(keep=2, running=2), asyncio.Event()

        async def work(job):
            await gate.wait()
            return job.key

        first = [jobs.start(k, 1, work) for k in ("a", "b")]
        with pytest.raises(ServiceBusy):
            jobs.start("c", 1, work)
        gate.set()
        for job in first:
            await jobs.wait(job)
        for key in ("c", "d", "e"):
            await jobs.wait(jobs.start(key, 1, work))
        # Trimmed as each starts: "e" found a, b, c and d finished and kept the last two.
        assert [k for k in "abcde" if jobs.get(k) is not None] == ["c", "d", "e"]

    run(main())
