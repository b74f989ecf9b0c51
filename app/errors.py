"""The one error schema of every JSON answer the server cannot serve, and its handlers.

Every refusal is a 4xx (or a 503 when the model is busy or cannot load) whose JSON body is an
:class:`ErrorResponse`: a one-line ``detail`` and a list of ``errors``, each naming the field
at fault and the rule it broke. HTML pages render the same message in ``error.html``.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from app import views
from app.labels import LabelsUnavailable
from app.live.schema import LimitError
from app.model_service import ModelUnavailable, ServiceBusy
from app.render import templates


class FieldError(BaseModel):
    field: str | None = Field(
        description="The input at fault, dotted from its place: `prompt`, `units.0.strength`, "
        "`temperature`; null when no single field is."
    )
    rule: str = Field(
        description="The rule it broke, a stable short word: `missing`, `range`, `max_tokens`, "
        "`not_empty`, `json`, `not_found`, ... (pydantic's error type for schema checks)."
    )
    message: str


class ErrorResponse(BaseModel):
    status: int = Field(description="The HTTP status, repeated.")
    detail: str = Field(description="What went wrong, in one line.")
    errors: list[FieldError] = Field(description="One entry per broken rule.")


_STATUS_DOC = {
    400: "Malformed request: the body is not valid JSON.",
    404: "No such model, source, unit, sequence or example.",
    401: "The server has a write token and the request sent none (WWW-Authenticate).",
    403: "Writes refused: labels off, a wrong token, no token from off this machine, or a "
    "page of another site.",
    413: "The request body is larger than the server accepts.",
    429: "Too many writes from this client (see Retry-After).",
    422: "An input breaks the schema or a documented cap; `errors` names the field and rule.",
    503: "The model is busy (queue full; see Retry-After) or cannot be loaded here.",
}


def responses(*statuses: int) -> dict:
    """OpenAPI ``responses`` for these error statuses, all with the one schema."""
    return {s: {"model": ErrorResponse, "description": _STATUS_DOC[s]} for s in statuses}


PAGE_ERRORS = responses(404, 422)
LIVE_ERRORS = responses(400, 404, 413, 422, 503)
LABEL_ERRORS = responses(400, 401, 403, 404, 413, 422, 429, 503)


def error(request: Request, status: int, detail: str, errors: list[FieldError], headers=None):
    path = request.url.path
    if path.startswith("/api/") or path.endswith(".json"):
        body = ErrorResponse(status=status, detail=detail, errors=errors)
        return JSONResponse(body.model_dump(), status_code=status, headers=headers)
    template = "_error.html" if request.headers.get("HX-Request") else "error.html"
    return templates.TemplateResponse(
        request,
        template,
        {"status": status, "message": detail},
        status_code=status,
        headers=headers,
    )


_HTTP_RULES = {
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method",
    413: "max_body_bytes",
    429: "rate",
}


def _field(loc) -> str | None:
    parts = [str(x) for x in loc if x not in ("query", "body", "path", "header")]
    return ".".join(parts) or None


def install(app: FastAPI) -> None:
    @app.exception_handler(views.NotFound)
    async def not_found(request: Request, exc: views.NotFound):
        msg = str(exc)
        return error(request, 404, msg, [FieldError(field=None, rule="not_found", message=msg)])

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        msg = f"no page at {request.url.path}" if exc.status_code == 404 else str(exc.detail)
        rule = _HTTP_RULES.get(exc.status_code, "http")
        return error(
            request,
            exc.status_code,
            msg,
            [FieldError(field=None, rule=rule, message=msg)],
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(LimitError)
    async def limit_error(request: Request, exc: LimitError):
        msg = str(exc)
        return error(request, 422, msg, [FieldError(field=exc.field, rule=exc.rule, message=msg)])

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        errors = []
        for err in exc.errors():
            if err["type"] == "json_invalid":
                reason = (err.get("ctx") or {}).get("error", "invalid JSON")
                msg = f"the body is not valid JSON: {reason} at character {err['loc'][-1]}"
                return error(request, 400, msg, [FieldError(field=None, rule="json", message=msg)])
            field = _field(err["loc"])
            message = f"{field}: {err['msg']}" if field else err["msg"]
            errors.append(FieldError(field=field, rule=err["type"], message=message))
        return error(request, 422, "; ".join(e.message for e in errors), errors)

    @app.exception_handler(LabelsUnavailable)
    async def labels_unavailable(request: Request, exc: LabelsUnavailable):
        msg = str(exc)
        if exc.retry_after is not None:
            return error(
                request,
                503,
                msg,
                [FieldError(field=None, rule="busy", message=msg)],
                headers={"Retry-After": str(exc.retry_after)},
            )
        return error(request, 503, msg, [FieldError(field=None, rule="read_only", message=msg)])

    @app.exception_handler(ModelUnavailable)
    async def unavailable(request: Request, exc: ModelUnavailable):
        msg = str(exc)
        return error(request, 503, msg, [FieldError(field=None, rule="unavailable", message=msg)])

    @app.exception_handler(ServiceBusy)
    async def busy(request: Request, exc: ServiceBusy):
        msg = str(exc)
        return error(
            request,
            503,
            msg,
            [FieldError(field=None, rule="busy", message=msg)],
            headers={"Retry-After": str(exc.retry_after)},
        )
