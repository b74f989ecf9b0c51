"""One loaded model per spec per server process, shared by every live request.

Model work runs on a worker thread behind a capacity limiter of one: requests wait
their turn as coroutines, never holding one of the thread-pool threads that page
views (which need no model) are served from. The wait is bounded: with ``max_queue``
requests already waiting, a new one is refused at once (:class:`ServiceBusy`, a 503 with
Retry-After). Each request has ``timeout`` seconds from arrival to answer; past it the
caller gets :class:`ServiceTimeout`, and work that checks :func:`deadline` (generation,
token by token) stops too.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import anyio
import torch

from spyglass.model import Model, ModelLoadError, load_model
from spyglass.sae import Sae, SaeLoadError
from spyglass.sources import load_unit_model

log = logging.getLogger(__name__)
T = TypeVar("T")


class ModelUnavailable(Exception):
    """The model behind an index cannot be loaded here (answered with 503)."""


class ServiceBusy(Exception):
    """The queue is full (answered with 503 and Retry-After)."""

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


class ServiceTimeout(ServiceBusy):
    """A request ran past its time limit (answered with 503 and Retry-After)."""


_local = threading.local()


def deadline() -> float | None:
    """The ``time.monotonic()`` by which the current model job must finish, if any."""
    return getattr(_local, "deadline", None)


class ModelService:
    def __init__(
        self,
        device: str | None = None,
        *,
        max_queue: int = 8,
        timeout: float = 60.0,
        threads: int | None = None,
    ) -> None:
        self._device = device
        self.threads = threads
        """CPU threads for model work (torch's intra-op pool); None leaves torch's own."""
        self.max_queue = max_queue
        """Requests that may wait behind the running one."""
        self.timeout = timeout
        """Seconds a request may take, from arrival to answer."""
        self._pending = 0
        self._models: dict[str, Model] = {}
        self._saes: dict[str, Sae] = {}
        self._load_lock = threading.Lock()
        self._limiter: anyio.CapacityLimiter | None = None

    def get(self, spec: str, options: dict | None = None) -> Model:
        """The loaded model for ``spec`` (with TransformerLens loading ``options``), loaded
        on first use (blocking)."""
        key = spec + (json.dumps(options, sort_keys=True) if options else "")
        with self._load_lock:
            if key not in self._models:
                try:
                    self._models[key] = load_model(spec, self._device, options)
                except ModelLoadError as exc:
                    raise ModelUnavailable(str(exc)) from exc
            return self._models[key]

    def sae(self, spec: str, model: Model) -> Sae:
        """The SAE (folder ``spec``) or transcoder (``folder#layer``) for ``model``, on its
        device, loaded on first use."""
        with self._load_lock:
            if spec not in self._saes:
                try:
                    self._saes[spec] = load_unit_model(spec, model)
                except (SaeLoadError, ModelLoadError, ValueError) as exc:
                    raise ModelUnavailable(f"cannot load the latents at {spec}: {exc}") from exc
            return self._saes[spec]

    def preload(self, specs: list[tuple[str, dict | None]]) -> threading.Thread:
        """Load ``(spec, options)`` models in the background so the first live request
        does not wait."""

        def work() -> None:
            for spec, options in specs:
                try:
                    self.get(spec, options)
                    log.info("model %s loaded", spec)
                except ModelUnavailable as exc:
                    log.warning("%s", exc)

        thread = threading.Thread(target=work, name="spyglass-preload", daemon=True)
        thread.start()
        return thread

    def refuse_when_full(self) -> None:
        """ServiceBusy when ``max_queue`` requests already wait behind the running one.
        Live routes ask before anything else (``app.deps``), so that a refused request is
        answered at once, not after reading the index under load; ``run`` asks again."""
        if self._pending > self.max_queue:
            raise ServiceBusy(
                f"the model is busy: {self._pending - 1} requests are already waiting "
                f"(the limit is {self.max_queue}); try again shortly",
                retry_after=max(1, math.ceil(self.timeout / 4)),
            )

    async def run(
        self,
        spec: str,
        fn: Callable[[Model], T],
        options: dict | None = None,
        *,
        may_refuse: bool = True,
    ) -> T:
        """Run ``fn(model)`` on a worker thread, one model job at a time. ``may_refuse``
        False: wait for a turn even with the queue full (the next chunk of a long job that
        was admitted already, ``app.jobs``)."""
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(1)
        if may_refuse:
            self.refuse_when_full()
        self._pending += 1
        until = time.monotonic() + self.timeout

        def job() -> T:
            if self.threads is not None and torch.get_num_threads() != self.threads:
                torch.set_num_threads(self.threads)
            _local.deadline = until
            try:
                return fn(self.get(spec, options))
            finally:
                _local.deadline = None

        try:
            with anyio.fail_after(self.timeout):
                return await anyio.to_thread.run_sync(
                    job, limiter=self._limiter, abandon_on_cancel=True
                )
        except TimeoutError:
            raise ServiceTimeout(
                f"the request took longer than its limit of {self.timeout:g} s",
                retry_after=max(1, math.ceil(self.timeout / 4)),
            ) from None
        finally:
            self._pending -= 1
