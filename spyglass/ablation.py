"""What ablating a unit does to next-token predictions along a sequence. Pure tensor code.

The effect shown at token p is on predicting it: from position p - 1, the change in its
loss (-log p) when the unit is ablated, and the tokens whose probability there rose and
fell most.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TokenEffect:
    position: int
    loss_delta: float | None
    """Ablated minus clean loss of this token; None for position 0 (nothing predicts it)."""
    up: list[tuple[int, float]]
    """(token id, probability change): the most raised next-token probabilities here."""
    down: list[tuple[int, float]]


def ablation_effects(
    clean: torch.Tensor, ablated: torch.Tensor, ids: list[int], lo: int, hi: int, k: int = 3
) -> list[TokenEffect]:
    """Effects at positions ``lo..hi-1`` from log-probabilities [T, V] of both runs."""
    out = []
    for p in range(lo, hi):
        if p == 0:
            out.append(TokenEffect(0, None, [], []))
            continue
        before, after = clean[p - 1], ablated[p - 1]
        delta = -(after[ids[p]] - before[ids[p]]).item()
        change = after.exp() - before.exp()
        up = change.topk(k)
        down = change.topk(k, largest=False)
        out.append(
            TokenEffect(
                p,
                delta,
                [(i, v) for i, v in zip(up.indices.tolist(), up.values.tolist(), strict=True)],
                [(i, v) for i, v in zip(down.indices.tolist(), down.values.tolist(), strict=True)],
            )
        )
    return out
