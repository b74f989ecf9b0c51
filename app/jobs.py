"""Live work too long for one model job: run in chunks, each its own turn on the model
service's queue, with progress that any number of viewers can poll.

A job is keyed by what it computes (its model and request), so everyone who opens the
same shared URL watches the same job rather than starting another. Finished jobs are kept
(the last ``keep``), so a shared result opens at once while the server runs. A job that
failed answers its error to whoever asks next, then is dropped, so that asking again
starts it afresh. With ``running`` jobs under way a new one is refused
(:class:`~app.model_service.ServiceBusy`, a 503 with Retry-After).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from app.model_service import ServiceBusy

log = logging.getLogger(__name__)


@dataclass
class Job:
    key: str
    total: int
    """Chunks the job takes."""
    done: int = 0
    """Chunks finished."""
    task: asyncio.Task | None = None

    @property
    def finished(self) -> bool:
        return self.task is not None and self.task.done()

    def step(self) -> None:
        """One more chunk finished (called by the job's own work)."""
        self.done = min(self.done + 1, self.total)


class Jobs:
    def __init__(self, *, keep: int = 32, running: int = 4):
        self.keep, self.running = keep, running
        self._jobs: OrderedDict[str, Job] = OrderedDict()

    def get(self, key: str) -> Job | None:
        job = self._jobs.get(key)
        if job is not None:
            self._jobs.move_to_end(key)
        return job

    def start(self, key: str, total: int, work: Callable[[Job], Awaitable[Any]]) -> Job:
        """The job under ``key``, started as ``work(job)`` unless it already is."""
        job = self.get(key)
        if job is not None:
            return job
        if sum(not j.finished for j in self._jobs.values()) >= self.running:
            raise ServiceBusy(
                f"{self.running} long jobs are already running; try again shortly",
                retry_after=5,
            )
        job = Job(key, total)
        job.task = asyncio.get_running_loop().create_task(work(job))
        job.task.add_done_callback(_log_failure)
        self._jobs[key] = job
        self._trim()
        return job

    async def wait(self, job: Job) -> Any:
        """The job's result once it has finished (its error raised, the job dropped). A
        waiter that goes away leaves the job running for the others."""
        await asyncio.wait([job.task])
        return self.result(job)

    def result(self, job: Job) -> Any:
        """A finished job's result; its error is raised once, and the job dropped."""
        assert job.task is not None and job.task.done()
        if job.task.cancelled() or job.task.exception() is not None:
            self._jobs.pop(job.key, None)
        return job.task.result()

    def cancel_all(self) -> None:
        """Cancel the jobs under way (the server is stopping)."""
        for job in self._jobs.values():
            if job.task is not None:
                job.task.cancel()

    def _trim(self) -> None:
        finished = [k for k, j in self._jobs.items() if j.finished]
        for key in finished[: max(0, len(finished) - self.keep)]:
            del self._jobs[key]


def _log_failure(task: asyncio.Task) -> None:
    """A failed job's error, logged (it is answered to whoever asks next, if anyone)."""
    if not task.cancelled() and task.exception() is not None:
        log.info("a long job failed: %s", task.exception())
