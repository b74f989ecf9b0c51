"""Which units fire on a prompt: the top units over it, and the top units at each token."""

from __future__ import annotations

from sqlalchemy import Connection

from app import index_cache, meaning, urls, views
from app.live.schema import (
    PREVIEW_AFTER,
    PREVIEW_BEFORE,
    TOP_PER_TOKEN,
    TOP_UNITS,
    FiringUnit,
    LimitError,
    PromptRequest,
    PromptResult,
    TokenUnits,
    check_text,
    check_tokens,
)
from app.live.targets import load_source, model_and_sources
from app.model_service import ModelService
from app.reader import IndexReader
from spyglass import firing, storage
from spyglass.model import Model
from spyglass.settings import Settings
from spyglass.sources import units_on_prompt


async def prompt_units(
    service: ModelService, settings: Settings, reader: IndexReader, slug: str, req: PromptRequest
) -> PromptResult:
    m, all_sources = await reader.run(model_and_sources, slug)
    names = req.source or [s.name for s in all_sources]
    by_name = {s.name: s for s in all_sources}
    if unknown := [n for n in names if n not in by_name]:
        raise LimitError(
            f"unknown source {unknown[0]!r}; {slug} has {', '.join(sorted(by_name))}",
            field="source",
            rule="known_source",
        )
    chosen = [by_name[n] for n in dict.fromkeys(names)]
    result = PromptResult(
        model=slug,
        text=req.text,
        rank=req.rank,
        sources=[s.name for s in chosen],
        all_sources=[s.name for s in all_sources],
        skip_first=m.skip_first,
    )
    if not req.text:
        return result
    check_text(req.text, settings, field="text")
    scale = None
    if req.rank == "relative":
        scale = await reader.run(
            lambda conn: {s.name: storage.unit_max_acts(conn, s.id) for s in chosen}
        )

    def work(model: Model):
        ids = check_tokens(model, req.text, settings, field="text")
        sources = [load_source(service, s, model) for s in chosen]
        per_source = units_on_prompt(sources, model, ids, m.skip_first)
        first = min(m.skip_first, len(ids) - 1)
        return (
            model.token_strings(ids),
            firing.top_over_prompt(per_source, TOP_UNITS, first, scale),
            firing.top_per_position(per_source, TOP_PER_TOKEN, scale),
        )

    texts, top, per_token = await service.run(m.spec, work, m.options)
    relative = req.rank == "relative"
    top_units = await reader.run(_describe, m, by_name, top, req.text, relative)

    def unit(f: firing.Firing, position: int) -> FiringUnit:
        return FiringUnit(
            source=f.source,
            index=f.unit,
            value=f.value,
            position=position,
            url=urls.unit(slug, f.source, f.unit, prompt=req.text),
            relative=f.score if relative else None,
        )

    tokens = [
        TokenUnits(
            position=p,
            token=texts[p],
            units=[unit(f, p) for f in fired] if p >= m.skip_first else [],
        )
        for p, fired in enumerate(per_token)
    ]
    tokens = await reader.run(_labelled_tokens, m.id, tokens)
    return result.model_copy(update={"top": top_units, "tokens": tokens})


def _labelled_tokens(conn: Connection, model_id: int, tokens: list[TokenUnits]):
    """Each token's units with their labels, read in one pass."""
    flat = meaning.labelled(conn, model_id, [u for t in tokens for u in t.units])
    out, at = [], 0
    for t in tokens:
        out.append(t.model_copy(update={"units": flat[at : at + len(t.units)]}))
        at += len(t.units)
    return out


def _describe(
    conn: Connection, m, by_name, top: list[firing.Firing], text: str, relative: bool
) -> list[FiringUnit]:
    """Density, corpus max and a preview of the top corpus example of each unit."""
    out = []
    for f in top:
        src = by_name[f.source]
        unit = storage.get_unit(conn, src.id, f.unit)
        examples = storage.get_examples(conn, src.id, f.unit)[:1]
        preview = None
        if examples:
            e = examples[0]
            seq = index_cache.sequences(conn, m, [e.sequence_id])[e.sequence_id]
            preview = views.preview(
                m.slug,
                e,
                seq,
                index_cache.vocabulary(conn, m),
                PREVIEW_BEFORE,
                PREVIEW_AFTER,
            )
        out.append(
            FiringUnit(
                source=f.source,
                index=f.unit,
                value=f.value,
                position=f.position,
                url=urls.unit(m.slug, f.source, f.unit, prompt=text),
                relative=f.score if relative else None,
                density=unit.density if unit else None,
                max_act=unit.max_act if unit else None,
                preview=preview,
            )
        )
    return meaning.labelled(conn, m.id, out)
