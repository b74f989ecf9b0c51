"""The index from tokens to the units that fire on or promote them
(``schema.token_units``): written by the indexer, read by the token search."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy import Connection, insert, select

from spyglass.storage.explanations import _has
from spyglass.storage.schema import TOKEN_BLOCK, sources, to_blob, token_units

__all__ = ["TokenHit", "token_units_row", "add_token_units", "units_for_tokens"]


@dataclass(frozen=True)
class TokenHit:
    source: str
    unit: int
    token_id: int
    weight: float
    """``fires``: the share of the unit's top examples on the token; ``promotes`` and
    ``suppresses``: the effect on its logit."""


def token_units_row(effect: str, block: int, tokens, unit_ids, weights) -> dict:
    """A block's entries (sorted by token) as a ``token_units`` row, less its source."""
    return {
        "effect": effect,
        "block": block,
        "tokens": to_blob(tokens, "i4"),
        "units": to_blob(unit_ids, "i4"),
        "weights": to_blob(weights, "f4"),
    }


def add_token_units(conn: Connection, source_id: int, rows: Sequence[dict]) -> None:
    if rows:
        conn.execute(insert(token_units), [{"source_id": source_id, **r} for r in rows])


def units_for_tokens(
    conn: Connection,
    model_id: int,
    token_ids: Iterable[int],
    effect: str,
    *,
    source: str | None = None,
) -> list[TokenHit]:
    """Every unit of the model's sources with an entry for one of ``token_ids`` in
    ``effect``, by weight (``suppresses``: most negative first)."""
    wanted = sorted({int(t) for t in token_ids})
    if not wanted:
        return []
    if not _has(conn, token_units):
        raise LookupError("this index was written before the token index: index it again")
    q = (
        select(sources.c.name, token_units.c.tokens, token_units.c.units, token_units.c.weights)
        .join(sources, sources.c.id == token_units.c.source_id)
        .where(
            sources.c.model_id == model_id,
            token_units.c.effect == effect,
            token_units.c.block.in_(sorted({t // TOKEN_BLOCK for t in wanted})),
        )
    )
    if source is not None:
        q = q.where(sources.c.name == source)
    want = np.array(wanted, dtype=np.int64)
    hits = []
    for name, tok_blob, unit_blob, weight_blob in conn.execute(q):
        tokens = np.frombuffer(tok_blob, "<i4")
        at = np.flatnonzero(np.isin(tokens, want))
        units_ = np.frombuffer(unit_blob, "<i4")[at].tolist()
        weights = np.frombuffer(weight_blob, "<f4")[at].astype(np.float64).tolist()
        hits += [
            TokenHit(name, u, t, w)
            for u, t, w in zip(units_, tokens[at].tolist(), weights, strict=True)
        ]
    sign = 1 if effect == "suppresses" else -1
    return sorted(hits, key=lambda h: (sign * h.weight, h.source, h.unit))
