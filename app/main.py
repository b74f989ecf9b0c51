"""The FastAPI application: wiring only (routes, errors, static files, limits, lifespan)."""

from __future__ import annotations

import sys
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.middleware.gzip import GZipMiddleware

from app import errors
from app.body_limit import BodyLimit
from app.jobs import Jobs
from app.labels import LabelStore
from app.model_service import ModelService
from app.page_cache import PageCache
from app.reader import make_reader
from app.render import ROOT, CachedPages, PageServer
from app.routes import labels as label_routes
from app.routes import live as live_routes
from app.routes import pages
from app.static import CompressedStatic
from app.write_access import WriteGate
from spyglass import storage
from spyglass.settings import Settings

GIL_SWITCH_SECONDS = 0.0005
"""The interpreter's switch interval while the app serves (Python's default is 5 ms).

Cached pages are served on the event loop while misses render on reader threads, and a
render gives up the GIL at every SQLite step (one per row fetched). Each time it needs the
GIL back it waits for the loop to yield, up to a whole switch interval: at the default,
a unit page's ~150 row steps made a miss take about a second under 64 connections of
hits. 0.5 ms keeps the handoffs short (docs/performance.md has the measurements)."""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    # Read-only; FileNotFoundError if there is no index, storage.DatabaseUnavailable if the
    # database cannot be opened.
    reader = make_reader(settings.db, settings.db_threads)
    service = ModelService(
        settings.device,
        max_queue=settings.max_queue,
        timeout=settings.request_timeout,
        threads=settings.model_threads,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if settings.preload:
            with reader.engine.connect() as conn:
                service.preload([(m.spec, m.options) for m in storage.list_models(conn)])
        switch = sys.getswitchinterval()
        sys.setswitchinterval(GIL_SWITCH_SECONDS)
        try:
            yield
        finally:
            app.state.jobs.cancel_all()
            sys.setswitchinterval(switch)
            reader.engine.dispose()
            app.state.labels.close()

    app = FastAPI(
        title="Spyglass",
        description="Browse the neurons and SAE latents of language models; live activations, "
        "steering and attribution. Every HTML page also answers at its path plus `.json`; "
        "those twins are documented here with the `/api` operations. Every error has one "
        "schema, `ErrorResponse`.",
        version="0.1.0",
        lifespan=lifespan,
        # FastAPI's /docs and /redoc load their scripts from a CDN, and Spyglass serves
        # nothing it does not ship; /openapi.json is the contract, for any OpenAPI viewer.
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.reader = reader
    app.state.pages = PageServer(reader, PageCache(settings.page_cache_mb * 2**20))
    app.state.models = service
    app.state.jobs = Jobs(running=max(1, settings.max_queue // 2))
    app.state.labels = LabelStore(settings.db)
    app.state.write_gate = WriteGate(settings)
    app.mount("/static", CompressedStatic(directory=ROOT / "static"), name="static")
    app.include_router(live_routes.api)
    app.include_router(label_routes.api)
    app.include_router(live_routes.twins)
    app.include_router(live_routes.fragments)
    app.include_router(pages.router)
    app.include_router(pages.html)
    errors.install(app)
    # Cached pages arrive compressed already (GZip leaves those alone); this is for the rest.
    app.add_middleware(GZipMiddleware, minimum_size=1024, compresslevel=6)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(CachedPages, pages=app.state.pages)  # outermost: hits skip the rest
    return app
