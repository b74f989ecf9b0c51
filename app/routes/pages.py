"""Page routes: each parses input, calls one view builder, renders HTML or its JSON twin."""

from __future__ import annotations

import random
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse
from sqlalchemy.exc import SQLAlchemyError

from app import views
from app.deps import ConnDep, SettingsDep
from app.render import render, split_json
from spyglass import storage

router = APIRouter(include_in_schema=False)
_rng = random.Random()


@router.get("/")
@router.get("/.json")
def home(request: Request, conn: ConnDep):
    return render(request, "home.html", views.home(conn), as_json=request.url.path == "/.json")


@router.get("/healthz")
def healthz(request: Request) -> JSONResponse:
    """For container health checks: 200 while the database answers, else 503."""
    try:
        storage.ping(request.app.state.engine)
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        return JSONResponse({"status": "unavailable", "detail": reason}, 503)
    return JSONResponse({"status": "ok"})


@router.get("/{model}")
def model_page(request: Request, model: str, conn: ConnDep):
    slug, as_json = split_json(model)
    return render(request, "model.html", views.model_page(conn, slug), as_json=as_json)


@router.get("/{model}/sequences/{seq_id}")
def sequence_page(request: Request, model: str, seq_id: str, conn: ConnDep):
    seq_id, as_json = split_json(seq_id)
    return render(
        request, "sequence.html", views.sequence_page(conn, model, seq_id), as_json=as_json
    )


@router.get("/{model}/{source}")
def source_page(
    request: Request,
    model: str,
    source: str,
    conn: ConnDep,
    settings: SettingsDep,
    sort: Literal["max_act", "density", "l0", "index"] = "max_act",
    order: Literal["desc", "asc"] = "desc",
    page: Annotated[int, Query(ge=1)] = 1,
):
    name, as_json = split_json(source)
    view = views.source_page(
        conn, model, name, sort=sort, order=order, page=page, page_size=settings.page_size
    )
    return render(request, "source.html", view, as_json=as_json)


@router.get("/{model}/{source}/random")
def random_unit(model: str, source: str, conn: ConnDep):
    return RedirectResponse(views.random_unit_url(conn, model, source, _rng), status_code=302)


@router.get("/{model}/{source}/{index}")
def unit_page(
    request: Request, model: str, source: str, index: str, conn: ConnDep, prompt: str = ""
):
    """``prompt`` (from the prompt page's links) fills the live box and runs at once."""
    index, as_json = split_json(index)
    view = views.unit_page(conn, model, source, index)
    if prompt:
        view = view.model_copy(update={"prompt": prompt})
    return render(request, "unit.html", view, as_json=as_json)


@router.get("/{model}/{source}/{index}/examples/{rank}")
def expanded_example(
    request: Request, model: str, source: str, index: str, rank: int, conn: ConnDep
):
    view = views.expanded_example(conn, model, source, index, rank)
    return render(request, "_expanded.html", view)
