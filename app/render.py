"""Turning a view model into a response: HTML from a template, or its JSON twin; and the
immutable pages of an index served from the page cache with ETag, 304 and gzip."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel
from sqlalchemy import Connection

from app import urls
from app.page_cache import Page, PageCache, etag_for, make_page
from app.reader import IndexReader

ROOT = Path(__file__).resolve().parent.parent
templates = Jinja2Templates(directory=ROOT / "templates")


def split_json(name: str) -> tuple[str, bool]:
    """``"12.json"`` -> ``("12", True)``: every page answers at its path plus ``.json``."""
    return (name.removesuffix(".json"), True) if name.endswith(".json") else (name, False)


def render(
    request: Request, template: str, view: BaseModel, *, as_json: bool = False, status: int = 200
) -> Response:
    if as_json:
        return JSONResponse(view.model_dump(mode="json"), status_code=status)
    return templates.TemplateResponse(request, template, {"view": view}, status_code=status)


def page_body(template: str, view: BaseModel, as_json: bool) -> tuple[bytes, str]:
    """A page's bytes and media type, rendered without a request (cached pages use no
    request state)."""
    if as_json:
        body = json.dumps(view.model_dump(mode="json"), ensure_ascii=False, allow_nan=False)
        return body.encode(), "application/json"
    html = templates.get_template(template).render(view=view)
    return html.encode(), "text/html; charset=utf-8"


class PageServer:
    """Serves the pages of the index (home, model, source, unit, sequence, example) from
    the page cache; each is rendered once per index and kept compressed."""

    def __init__(self, reader: IndexReader, cache: PageCache):
        self.reader = reader
        self.cache = cache

    async def serve(
        self,
        request: Request,
        template: str,
        build: Callable[..., BaseModel],
        *args,
        as_json: bool,
        query: tuple = (),
    ) -> Response:
        """``build(conn, *args)`` rendered with ``template`` (or as JSON), from the cache.
        ``query`` holds the parsed query parameters the page depends on (part of the key;
        unknown parameters never reach it)."""
        identity = await self.reader.identity()
        key = (identity, request.url.path, query, as_json)
        etag = etag_for(key)
        if _matches(request.headers.get("if-none-match"), etag):
            return Response(status_code=304, headers=_headers(etag))

        def make(conn: Connection) -> Page:
            body, media_type = page_body(template, build(conn, *args), as_json)
            return make_page(key, body, media_type)

        page = await self.cache.get(key, lambda: self.reader.run(make))
        headers = _headers(page.etag)
        if "gzip" in request.headers.get("accept-encoding", ""):
            headers["Content-Encoding"] = "gzip"
            return Response(page.gzipped, media_type=page.media_type, headers=headers)
        return Response(page.body, media_type=page.media_type, headers=headers)


def _headers(etag: str) -> dict[str, str]:
    # no-cache: browsers keep the page but ask again each time (a re-index under the same
    # name must show at once); the answer is then a 304 with no body.
    return {"ETag": etag, "Cache-Control": "no-cache", "Vary": "Accept-Encoding"}


def _matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    tags = {t.strip().removeprefix("W/") for t in header.split(",")}
    return etag in tags or "*" in tags


def shade(value: float | None, scale: float) -> str:
    """Background colour of a token: orange for positive, blue for negative, alpha by |v|/scale."""
    if value is None or scale <= 0 or math.isnan(value):
        return "transparent"
    alpha = min(abs(value) / scale, 1.0)
    rgb = "255,140,0" if value > 0 else "60,120,255"
    return f"rgba({rgb},{alpha:.3f})"


def visible(token: str) -> str:
    """Make whitespace-only pieces of a token visible."""
    return token.replace("\n", "↵").replace("\t", "⇥")


def fmt(value: float | None, digits: int = 3) -> str:
    if value is None:
        return ""
    return f"{value:.{digits}g}" if abs(value) < 1e-3 and value != 0 else f"{value:.{digits}f}"


templates.env.filters.update(shade=shade, visible=visible, fmt=fmt)
templates.env.globals["urls"] = urls
