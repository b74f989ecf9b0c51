"""Turning a view model into a response: HTML from a template, or its JSON twin; and the
immutable pages of an index served from the page cache with ETag, 304 and gzip."""

from __future__ import annotations

import functools
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
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

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
        key = _key(await self.reader.identity(), request.url.path, query)
        if not_modified := _not_modified(key, as_json, request.headers):
            return not_modified

        def make(conn: Connection) -> Page:
            return make_page(key, *page_bodies(template, build(conn, *args)))

        page = await self.cache.get(key, lambda: self.reader.run(make))
        return _response(page, as_json, request.headers.get("accept-encoding", ""))

    async def cached(self, path: str, headers: Headers) -> Response | None:
        """The answer to a GET of ``path`` (no query string) if its page is in the cache:
        the same response ``serve`` would give, without routing. None otherwise, and for
        paths that are never pages, and when the index cannot be asked: the app then
        answers, with its own error handling."""
        if path.startswith(NOT_PAGES) or path in ("/healthz", "/openapi.json"):
            return None
        try:
            identity = await self.reader.identity()
        except Exception:  # noqa: BLE001 - the route asks again and answers the error
            return None
        key = _key(identity, path, ())
        as_json = path.endswith(".json")
        if not_modified := _not_modified(key, as_json, headers):
            return not_modified
        page = self.cache.peek(key)
        if page is None:
            return None
        return _response(page, as_json, headers.get("accept-encoding", ""))


NOT_PAGES = ("/static/", "/api/")
"""Path prefixes the page cache never holds."""


def _key(identity: str, path: str, query: tuple) -> tuple:
    """A page's cache key: both forms of a page (HTML and ``.json``) share it."""
    return (identity, path.removesuffix(".json"), query)


def _not_modified(key: tuple, as_json: bool, headers: Headers) -> Response | None:
    """A 304 when the client's If-None-Match names this page's ETag, else None."""
    etag = etag_for(key, as_json)
    if _matches(headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=_headers(etag))
    return None


def _response(page: Page, as_json: bool, accept_encoding: str) -> Response:
    body = page.json if as_json else page.html
    headers = _headers(body.etag)
    if "gzip" in accept_encoding:
        headers["Content-Encoding"] = "gzip"
        return Response(body.gzipped, media_type=body.media_type, headers=headers)
    return Response(gzip.decompress(body.gzipped), media_type=body.media_type, headers=headers)


class CachedPages:
    """ASGI middleware, outermost: a GET without a query string whose page is cached is
    answered here, before routing, dependencies and the other middleware. A hit then
    costs the event loop a fraction of a routed request, which leaves the GIL to the
    threads rendering misses (docs/performance.md). Anything else goes on to the app,
    which answers it exactly as it would have; a 304 is answered here too, since an ETag
    names the index identity and page it was made for."""

    def __init__(self, app: ASGIApp, pages: PageServer):
        self.app, self.pages = app, pages

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and not scope["query_string"]:
            response = await self.pages.cached(scope["path"], Headers(scope=scope))
            if response is not None:
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


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


@functools.lru_cache(maxsize=1 << 16)
def _token_html(token: str) -> str:
    """A token's text as HTML: visible whitespace, escaped (a vocabulary's worth cached)."""
    return str(escape(visible(token)))


def token_spans(
    toks: list[str], acts: list, scale: float, focus: int | None = None, offset: int = 0
) -> Markup:
    """Tokens with their activations: each a ``span.tok`` with its value in ``data-v``
    (None: outside the window, no value). static/spyglass.js shades each token by
    ``value / data-scale`` of its ``span.tokens`` and shows the exact value on hover.
    Shading in the browser rather than here halves a unit page's render time and a third
    of its size: a unit page holds over a thousand tokens (docs/performance.md)."""
    out = [f'<span class="tokens" data-scale="{scale:.6g}">']
    append = out.append
    for i, (t, v) in enumerate(zip(toks, acts, strict=False)):
        cls = "tok focus" if focus is not None and i + offset == focus else "tok"
        if v is None or v != v:  # None or NaN: no value to show
            append(f'<span class="{cls} outside">')
        else:
            append(f'<span class="{cls}" data-v="{fmt(v, 4)}">')
        append(_token_html(t))
        append("</span>")
    append("</span>")
    return Markup("".join(out))


def fmt(value: float | None, digits: int = 3) -> str:
    if value is None:
        return ""
    return f"{value:.{digits}g}" if abs(value) < 1e-3 and value != 0 else f"{value:.{digits}f}"


templates.env.filters.update(shade=shade, visible=visible, fmt=fmt)
templates.env.globals.update(urls=urls, token_spans=token_spans)
