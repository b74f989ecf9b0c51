"""One loaded model per spec per server process, shared by every live request.

Model work runs on a worker thread behind a capacity limiter of one: requests wait
their turn as coroutines, never holding one of the thread-pool threads that page
views (which need no model) are served from.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import TypeVar

import anyio

from spyglass.model import Model, ModelLoadError, load_model
from spyglass.sae import Sae, SaeLoadError, load_sae

log = logging.getLogger(__name__)
T = TypeVar("T")


class ModelUnavailable(Exception):
    """The model behind an index cannot be loaded here (answered with 503)."""


class ModelService:
    def __init__(self, device: str | None = None) -> None:
        self._device = device
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

    def sae(self, spec: str, device) -> Sae:
        """The SAE loaded from folder ``spec`` onto ``device``, loading it on first use."""
        with self._load_lock:
            if spec not in self._saes:
                try:
                    self._saes[spec] = load_sae(spec).to(device)
                except SaeLoadError as exc:
                    raise ModelUnavailable(f"cannot load the SAE at {spec}: {exc}") from exc
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

    async def run(self, spec: str, fn: Callable[[Model], T], options: dict | None = None) -> T:
        """Run ``fn(model)`` on a worker thread, one model job at a time."""
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(1)
        return await anyio.to_thread.run_sync(
            lambda: fn(self.get(spec, options)), limiter=self._limiter
        )
