"""Turning a view model into a response: HTML from a template, or its JSON twin; and the
immutable pages of an index served from the page cache with ETag, 304 and gzip."""

from __future__ import annotations

import gzip
import math
from collections.abc import Callable
from pathlib import Path

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from fastapi.templating import Jinja2Templates
from markupsafe import Markup, escape
from pydantic import BaseModel
from sqlalchemy import Connection

from app import urls
from app.page_cache import Page, PageCache, etag_for, make_page
from app.reader import IndexReader

ROOT = Path(__file__).resolve().parent.parent
templates = Jinja2Templates(directory=ROOT / "templates")
templates.env.auto_reload = False  # templates ship with the code: no stat on every render


def render(
    request: Request, template: str, view: BaseModel, *, as_json: bool = False, status: int = 200
) -> Response:
    if as_json:
        return JSONResponse(view.model_dump(mode="json"), status_code=status)
    return templates.TemplateResponse(request, template, {"view": view}, status_code=status)


def page_bodies(template: str, view: BaseModel) -> tuple[bytes, bytes]:
    """A page's HTML and its JSON twin, rendered without a request (cached pages use no
    request state)."""
    html = templates.get_template(template).render(view=view)
    return html.encode(), view.model_dump_json().encode()


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
        path = request.url.path.removesuffix(".json") if as_json else request.url.path
        key = (identity, path, query)
        etag = etag_for(key, as_json)
        if _matches(request.headers.get("if-none-match"), etag):
            return Response(status_code=304, headers=_headers(etag))

        def make(conn: Connection) -> Page:
            return make_page(key, *page_bodies(template, build(conn, *args)))

        page = await self.cache.get(key, lambda: self.reader.run(make))
        body = page.json if as_json else page.html
        headers = _headers(body.etag)
        if "gzip" in request.headers.get("accept-encoding", ""):
            headers["Content-Encoding"] = "gzip"
            return Response(body.gzipped, media_type=body.media_type, headers=headers)
        return Response(gzip.decompress(body.gzipped), media_type=body.media_type, headers=headers)


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


def token_spans(
    toks: list[str], acts: list, scale: float, focus: int | None = None, offset: int = 0
) -> Markup:
    """Tokens shaded by activation, each a ``span.tok`` with its exact value in ``data-v``
    (static/spyglass.js shows it on hover). Built here rather than in a Jinja macro: a unit
    page holds a few thousand tokens, and the macro took most of the page's render time."""
    out = ['<span class="tokens">']
    for i, (t, v) in enumerate(zip(toks, acts, strict=False)):
        cls = "tok"
        if focus is not None and i + offset == focus:
            cls += " focus"
        if v is None:
            cls += " outside"
            out.append(f'<span class="{cls}" style="background:transparent">')
        else:
            out.append(
                f'<span class="{cls}" style="background:{shade(v, scale)}" data-v="{fmt(v, 4)}">'
            )
        out.append(escape(visible(t)))
        out.append("</span>")
    out.append("</span>")
    return Markup("".join(out))


def fmt(value: float | None, digits: int = 3) -> str:
    if value is None:
        return ""
    return f"{value:.{digits}g}" if abs(value) < 1e-3 and value != 0 else f"{value:.{digits}f}"


templates.env.filters.update(shade=shade, visible=visible, fmt=fmt)
templates.env.globals.update(urls=urls, token_spans=token_spans)
