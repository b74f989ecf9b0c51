"""Steering: default and steered completions of a prompt, same seed, side by side; one
unit from its page, or several units at once from the steering page and API."""

from __future__ import annotations

from sqlalchemy import Connection

from app import meaning, urls, views
from app.live.schema import (
    DEFAULT_NEW_TOKENS,
    Completion,
    LimitError,
    MultiSteerRequest,
    MultiSteerResult,
    SteeredUnit,
    SteerRequest,
    SteerResult,
    SteerUnit,
    check_context,
    check_generation,
    check_range,
    check_text,
    check_tokens,
)
from app.live.targets import Target, load_source
from app.model_service import ModelService, deadline
from app.reader import IndexReader
from spyglass import storage
from spyglass.model import Model
from spyglass.settings import Settings


async def steer(
    service: ModelService, settings: Settings, target: Target, req: SteerRequest
) -> SteerResult:
    unit = target.unit
    coefficient = unit.max_act if req.coefficient is None else req.coefficient
    check_range("coefficient", coefficient, -settings.max_coefficient, settings.max_coefficient)
    n_new = check_generation(req.max_new_tokens, req.temperature, req.seed, settings)
    check_text(req.prompt, settings)

    def work(model: Model) -> SteerResult:
        ids = check_tokens(model, req.prompt, settings)
        check_context(model, len(ids), n_new)
        push = load_source(service, target.source, model).steer(unit.idx, coefficient)
        run = dict(
            max_new_tokens=n_new, temperature=req.temperature, seed=req.seed, deadline=deadline()
        )
        return SteerResult(
            model=target.model.slug,
            source=target.source.name,
            index=unit.idx,
            prompt=req.prompt,
            coefficient=coefficient,
            seed=req.seed,
            temperature=req.temperature,
            max_new_tokens=n_new,
            default=model.decode(model.generate(ids, **run)),
            steered=model.decode(model.generate(ids, **run, steer=[push])),
        )

    return await service.run(target.model.spec, work, target.model.options)


async def steer_units(
    service: ModelService,
    settings: Settings,
    reader: IndexReader,
    slug: str,
    req: MultiSteerRequest | None,
) -> MultiSteerResult:
    m = await reader.run(views.require_model, slug)
    if req is None:
        return MultiSteerResult(
            model=slug, max_new_tokens=min(DEFAULT_NEW_TOKENS, settings.max_new_tokens)
        )
    n_new = check_generation(req.max_new_tokens, req.temperature, req.seed, settings)
    if not req.units:
        raise LimitError("name at least one unit to steer", field="units", rule="not_empty")
    if len(req.units) > settings.max_steer_units:
        raise LimitError(
            f"{len(req.units)} units to steer; the limit is {settings.max_steer_units}",
            field="units",
            rule="max_items",
        )
    for i, u in enumerate(req.units):
        limit = settings.max_coefficient
        if not -limit <= u.strength <= limit:
            raise LimitError(
                f"strength of {u.source}/{u.index} must be between {-limit:g} and {limit:g}, "
                f"got {u.strength:g}",
                field=f"units.{i}.strength",
                rule="range",
            )
    check_text(req.prompt, settings)
    rows = await reader.run(_steer_sources, m, req.units)

    def work(model: Model):
        ids = check_tokens(model, req.prompt, settings)
        check_context(model, len(ids), n_new)
        pushes = [
            load_source(service, row, model).steer(
                u.index, u.strength, clamp=u.mode == "clamp", prompt_only=req.positions == "prompt"
            )
            for u, row in zip(req.units, rows, strict=True)
        ]
        run = dict(
            max_new_tokens=n_new, temperature=req.temperature, seed=req.seed, deadline=deadline()
        )
        default, steered = model.generate(ids, **run), model.generate(ids, **run, steer=pushes)
        return _completion(model, default), _completion(model, steered), default, steered

    default, steered, default_ids, steered_ids = await service.run(m.spec, work, m.options)
    diverge = next(
        (i for i, (a, b) in enumerate(zip(default_ids, steered_ids, strict=False)) if a != b),
        None if len(default_ids) == len(steered_ids) else min(len(default_ids), len(steered_ids)),
    )
    steered_units = [
        SteeredUnit(**u.model_dump(), url=urls.unit(slug, u.source, u.index)) for u in req.units
    ]
    steered_units = await reader.run(meaning.labelled, m.id, steered_units)
    return MultiSteerResult(
        model=slug,
        prompt=req.prompt,
        units=steered_units,
        positions=req.positions,
        max_new_tokens=n_new,
        temperature=req.temperature,
        seed=req.seed,
        default=default,
        steered=steered,
        diverge_at=diverge,
        share=_steer_url(slug, req, n_new),
    )


def _completion(model: Model, ids: list[int]) -> Completion:
    return Completion(tokens=model.token_strings(ids), text=model.decode(ids))


def _steer_sources(conn: Connection, m, units: list[SteerUnit]) -> list[storage.SourceRow]:
    rows = []
    for i, u in enumerate(units):
        row = storage.get_source(conn, m.id, u.source)
        if row is None:
            raise LimitError(
                f"unknown source {u.source!r} in {m.slug}",
                field=f"units.{i}.source",
                rule="known_source",
            )
        if not 0 <= u.index < row.n_units:
            raise LimitError(
                f"{u.source} has units 0..{row.n_units - 1}, not {u.index}",
                field=f"units.{i}.index",
                rule="range",
            )
        rows.append(row)
    return rows


def _steer_url(slug: str, req: MultiSteerRequest, n_new: int) -> str:
    query = [("prompt", req.prompt)]
    for u in req.units:
        query += [
            ("unit", f"{u.source}/{u.index}"),
            ("mode", u.mode),
            ("strength", repr(u.strength)),
        ]
    query += [
        ("positions", req.positions),
        ("max_new_tokens", str(n_new)),
        ("temperature", repr(req.temperature)),
        ("seed", str(req.seed)),
    ]
    return urls.steer(slug, query)
