"""The effect on next-token loss, along one top example, of ablating a unit."""

from __future__ import annotations

from sqlalchemy import Connection

from app import index_cache, views
from app.live.schema import AblationResult, LimitError, TokenAblation
from app.live.targets import Target, load_source
from app.model_service import ModelService
from app.reader import IndexReader
from spyglass import ablation, storage
from spyglass.model import Model


async def example_ablation(
    service: ModelService, reader: IndexReader, target: Target, rank: int, mode: str = "zero"
) -> AblationResult:
    """The effect on next-token loss, along one top example's window, of ablating the unit
    at every position: set to 0 (``zero``) or to its mean over the corpus sample
    (``mean``); for a latent, its decoder row times the change is added."""
    unit = target.unit
    value = 0.0
    if mode == "mean":
        if unit.stats is None or unit.stats.mean is None:
            raise LimitError(
                "this index holds no unit means (written before them): index again for "
                "mean ablation",
                field="mode",
                rule="needs_reindex",
            )
        value = unit.stats.mean
    ex, seq = await reader.run(_example_and_sequence, target, rank)
    lo, hi = ex.window_start, ex.window_start + len(ex.acts)

    def work(model: Model):
        push = load_source(service, target.source, model).steer(unit.idx, value, clamp=True)
        clean = model.log_probs(seq.tokens)
        ablated = model.log_probs(seq.tokens, [push])
        effects = ablation.ablation_effects(clean, ablated, seq.tokens, lo, hi)
        ids = {i for e in effects for i, _ in e.up + e.down} | set(seq.tokens[lo:hi])
        return effects, dict(zip(ids, model.token_strings(list(ids)), strict=True))

    effects, text = await service.run(target.model.spec, work, target.model.options)
    tokens = [
        TokenAblation(
            token=text[seq.tokens[e.position]],
            position=e.position,
            loss_delta=e.loss_delta,
            up=[views.LogitToken(token_id=i, token=text[i], value=v) for i, v in e.up],
            down=[views.LogitToken(token_id=i, token=text[i], value=v) for i, v in e.down],
        )
        for e in effects
    ]
    deltas = [abs(t.loss_delta) for t in tokens if t.loss_delta is not None]
    return AblationResult(
        model=target.model.slug,
        source=target.source.name,
        index=unit.idx,
        rank=rank,
        mode=mode,
        value=value,
        sequence_id=ex.sequence_id,
        tokens=tokens,
        scale=max(deltas, default=0.0),
    )


def _example_and_sequence(conn: Connection, target: Target, rank: int):
    examples = storage.get_examples(conn, target.source.id, target.unit.idx)
    ex = next((e for e in examples if e.rank == rank), None)
    if ex is None:
        raise views.NotFound(
            f"unit {target.unit.idx} of {target.source.name!r} has no example {rank}"
        )
    return ex, index_cache.sequences(conn, target.model, [ex.sequence_id])[ex.sequence_id]
