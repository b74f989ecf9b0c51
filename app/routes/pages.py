"""Page routes: each parses input and serves one view builder's page, as HTML or as its
JSON twin (documented in the OpenAPI), from the page cache.

The ``.json`` routes come first: ``/{model}`` would match ``/gpt2.json`` too.
"""

from __future__ import annotations

import random
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse
from pydantic import BaseModel, Field, field_validator
from sqlalchemy.exc import SQLAlchemyError

from app import meaning, views
from app.deps import PagesDep, ReaderDep, SettingsDep
from app.errors import PAGE_ERRORS
from spyglass import storage

router = APIRouter(tags=["pages"], responses=PAGE_ERRORS)
html = APIRouter(include_in_schema=False)
_rng = random.Random()

Sort = Literal["max_act", "density", "l0", "index"]
Order = Literal["desc", "asc"]
PageNumber = Annotated[int, Query(ge=1, le=10**9)]
# Strings, as in the HTML routes: a path that names no unit (-1, abc) is a 404, not a 422.
Index = Annotated[str, Path(description="The unit's index in its source, from 0.")]
SeqId = Annotated[str, Path(description="The sequence's id in the index, from 0.")]


class SearchQuery(BaseModel):
    q: str = Field(
        "",
        description="Words to find in explanations (all of them; the last "
        "may be the start of a word). Operators and quotes are read as text.",
    )
    source: str | None = Field(None, description="Only this source's units.")
    min_density: float | None = Field(None, ge=0, le=1)
    max_density: float | None = Field(None, ge=0, le=1)
    page: int = Field(1, ge=1, le=10**6)
    token: str = Field(
        "",
        description="Instead of words: a token's exact text (else matched trimmed and "
        "case-folded); finds the units whose top examples sit on it, or with `effect`, "
        "the units that promote or suppress it most.",
    )
    effect: Literal["fires", "promotes", "suppresses"] = "fires"

    @field_validator("source", "min_density", "max_density", mode="before")
    @classmethod
    def _blank_is_none(cls, value):
        """An HTML form sends an empty field as an empty string: no filter."""
        return None if isinstance(value, str) and not value.strip() else value


SearchDep = Annotated[SearchQuery, Query()]


# ---- JSON twins (documented) ----------------------------------------------------------------


@router.get("/.json", response_model=views.HomePage, summary="The indexed models")
async def home_json(request: Request, pages: PagesDep):
    return await pages.serve(request, "home.html", views.home, as_json=True)


@router.get("/{model}.json", response_model=views.ModelPage, summary="A model and its sources")
async def model_json(request: Request, model: str, pages: PagesDep):
    return await pages.serve(request, "model.html", views.model_page, model, as_json=True)


@router.get(
    "/{model}/sequences/{seq_id}.json",
    response_model=views.SequencePage,
    summary="One indexed sequence, token by token",
)
async def sequence_json(request: Request, model: str, seq_id: SeqId, pages: PagesDep):
    return await pages.serve(
        request, "sequence.html", views.sequence_page, model, seq_id, as_json=True
    )


@router.get(
    "/{model}/search.json",
    response_model=meaning.SearchPage,
    summary="Units whose explanations match a text (full-text search, ranked)",
)
async def search_json(request: Request, model: str, pages: PagesDep, search: SearchDep):
    return await _search(request, model, pages, search, True)


@router.get(
    "/{model}/{source}.json",
    response_model=views.SourcePage,
    summary="A source's units, sorted and paginated",
)
async def source_json(
    request: Request,
    model: str,
    source: str,
    pages: PagesDep,
    settings: SettingsDep,
    sort: Sort = "max_act",
    order: Order = "desc",
    page: PageNumber = 1,
):
    return await _source(request, model, source, pages, settings, sort, order, page, True)


@router.get(
    "/{model}/{source}/{index}.json",
    response_model=views.UnitPage,
    summary="A unit: top examples, samples across its range, histograms, logits, neighbours",
)
async def unit_json(request: Request, model: str, source: str, index: Index, pages: PagesDep):
    return await pages.serve(
        request, "unit.html", views.unit_page, model, source, index, as_json=True
    )


# ---- HTML pages -----------------------------------------------------------------------------


@html.get("/")
async def home(request: Request, pages: PagesDep):
    return await pages.serve(request, "home.html", views.home, as_json=False)


@html.get("/healthz")
async def healthz(reader: ReaderDep, pages: PagesDep) -> JSONResponse:
    """For container health checks: 200 while the database answers, else 503; with the
    page cache's figures."""
    try:
        await reader.run(storage.ping_conn)
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        return JSONResponse({"status": "unavailable", "detail": reason}, 503)
    return JSONResponse({"status": "ok", "page_cache": pages.cache.stats()})


@html.get("/{model}")
async def model_page(request: Request, model: str, pages: PagesDep):
    return await pages.serve(request, "model.html", views.model_page, model, as_json=False)


@html.get("/{model}/sequences/{seq_id}")
async def sequence_page(request: Request, model: str, seq_id: str, pages: PagesDep):
    return await pages.serve(
        request, "sequence.html", views.sequence_page, model, seq_id, as_json=False
    )


@html.get("/{model}/search")
async def search_page(request: Request, model: str, pages: PagesDep, search: SearchDep):
    return await _search(request, model, pages, search, False)


async def _search(request, model, pages, search: SearchQuery, as_json):
    return await pages.serve(
        request,
        "search.html",
        lambda conn: meaning.search_page(
            conn,
            model,
            search.q,
            source=search.source,
            min_density=search.min_density,
            max_density=search.max_density,
            page=search.page,
            token=search.token,
            effect=search.effect,
        ),
        as_json=as_json,
        query=tuple(search.model_dump().values()),
    )


@html.get("/{model}/{source}")
async def source_page(
    request: Request,
    model: str,
    source: str,
    pages: PagesDep,
    settings: SettingsDep,
    sort: Sort = "max_act",
    order: Order = "desc",
    page: PageNumber = 1,
):
    return await _source(request, model, source, pages, settings, sort, order, page, False)


async def _source(request, model, source, pages, settings, sort, order, page, as_json):
    return await pages.serve(
        request,
        "source.html",
        lambda conn: views.source_page(
            conn, model, source, sort=sort, order=order, page=page, page_size=settings.page_size
        ),
        as_json=as_json,
        query=(sort, order, page),
    )


@html.get("/{model}/{source}/random")
async def random_unit(model: str, source: str, reader: ReaderDep):
    url = await reader.run(views.random_unit_url, model, source, _rng)
    return RedirectResponse(url, status_code=302)


@html.get("/{model}/{source}/{index}")
async def unit_page(
    request: Request,
    model: str,
    source: str,
    index: str,
    pages: PagesDep,
    show: Annotated[meaning.EmbedOptions, Query()],
    embed: bool = False,
):
    """``?prompt=`` (from the prompt page's links) fills the live box, and the script runs
    it on load; the page itself is the same for every prompt. ``?embed=true``: the bare
    version for an iframe, its parts chosen as Neuronpedia's embeds choose them."""
    if not embed:
        return await pages.serve(
            request, "unit.html", views.unit_page, model, source, index, as_json=False
        )
    return await pages.serve(
        request,
        "unit_embed.html",
        lambda conn: meaning.UnitEmbed(unit=views.unit_page(conn, model, source, index), show=show),
        as_json=False,
        query=("embed", *show.model_dump().values()),
    )


@html.get("/{model}/{source}/{index}/examples/{rank}")
async def expanded_example(
    request: Request, model: str, source: str, index: str, rank: int, pages: PagesDep
):
    return await pages.serve(
        request, "_expanded.html", views.expanded_example, model, source, index, rank, as_json=False
    )
