"""The FastAPI application: wiring only (routes, errors, static files, lifespan)."""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from app import live, views
from app.model_service import ModelService, ModelUnavailable, ServiceBusy
from app.render import ROOT, templates
from app.routes import live as live_routes
from app.routes import pages
from spyglass import storage
from spyglass.settings import Settings


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    # Read-only; FileNotFoundError if there is no index, storage.DatabaseUnavailable if the
    # database cannot be opened.
    engine = storage.make_read_engine(settings.db)
    service = ModelService(
        settings.device, max_queue=settings.max_queue, timeout=settings.request_timeout
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if settings.preload:
            with engine.connect() as conn:
                service.preload([(m.spec, m.options) for m in storage.list_models(conn)])
        yield
        engine.dispose()

    app = FastAPI(
        title="Spyglass",
        description="Browse the neurons of language models; live activations and steering. "
        "Every HTML page also answers at its path plus `.json`.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.models = service
    app.mount("/static", StaticFiles(directory=ROOT / "static"), name="static")
    app.include_router(live_routes.api)
    app.include_router(live_routes.fragments)
    app.include_router(pages.router)
    _add_error_handlers(app)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(views.NotFound)
    async def not_found(request: Request, exc: views.NotFound):
        return _error(request, 404, str(exc))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        detail = exc.detail if exc.status_code != 404 else f"no page at {request.url.path}"
        return _error(request, exc.status_code, str(detail))

    @app.exception_handler(live.LimitError)
    async def limit_error(request: Request, exc: live.LimitError):
        return _error(request, 422, str(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        parts = []
        for err in exc.errors():
            where = ".".join(str(x) for x in err["loc"] if x not in ("query", "body"))
            parts.append(f"{where}: {err['msg']}" if where else err["msg"])
        return _error(request, 422, "; ".join(parts))

    @app.exception_handler(ModelUnavailable)
    async def unavailable(request: Request, exc: ModelUnavailable):
        return _error(request, 503, str(exc))

    @app.exception_handler(ServiceBusy)
    async def busy(request: Request, exc: ServiceBusy):
        response = _error(request, 503, str(exc))
        response.headers["Retry-After"] = str(exc.retry_after)
        return response


def _error(request: Request, status: int, message: str):
    path = request.url.path
    if path.startswith("/api/") or path.endswith(".json"):
        return JSONResponse({"detail": message}, status_code=status)
    template = "_error.html" if request.headers.get("HX-Request") else "error.html"
    return templates.TemplateResponse(
        request, template, {"status": status, "message": message}, status_code=status
    )
