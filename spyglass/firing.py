"""Which units fire on a prompt: exact top-k merges across sources. Pure tensor code.

Each source gives activations [T, U] on the same tokens. The top k of the union is a
true merge: every source offers its own top k (the global top k can hold no more from
one source), and the union's top k is taken from those offers. Units rank by their
activation, or with ``scale`` by activation / scale (e.g. each unit's corpus max).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Firing:
    value: float
    """The unit's activation."""
    source: str
    unit: int
    position: int
    """Where the unit's value is taken: its best over the prompt, or the token asked for."""
    score: float
    """What it was ranked by: ``value``, or ``value / scale``."""


Scale = dict[str, "torch.Tensor | list[float]"]


def _scored(acts: dict[str, torch.Tensor], scale: Scale | None):
    for name, a in acts.items():
        if scale is None:
            yield name, a, a
        else:
            s = torch.as_tensor(scale[name], dtype=a.dtype, device=a.device)
            yield name, a, torch.where(s > 0, a / s.clamp(min=1e-30), -torch.inf)


def top_over_prompt(
    acts: dict[str, torch.Tensor],
    k: int,
    first: int = 0,
    scale: Scale | None = None,
) -> list[Firing]:
    """The ``k`` units with the highest best score over positions ``first..``, across
    sources."""
    offers = []
    for name, a, score in _scored(acts, scale):
        best, where = score[first:].max(dim=0)  # [U]
        scores, units = _top(best, k)
        at = where[units] + first
        values = a[at, units]
        offers += [
            Firing(v, name, u, p, s)
            for v, u, p, s in zip(
                values.tolist(), units.tolist(), at.tolist(), scores.tolist(), strict=True
            )
        ]
    return _best(offers, k)


def top_per_position(
    acts: dict[str, torch.Tensor], k: int, scale: Scale | None = None
) -> list[list[Firing]]:
    """At each position, the ``k`` units with the highest score there, across sources."""
    n_pos = next(iter(acts.values())).shape[0]
    offers: list[list[Firing]] = [[] for _ in range(n_pos)]
    for name, a, score in _scored(acts, scale):
        scores, units = _top(score, k)  # [T, k]
        values = a.gather(1, units)
        for p, (vs, us, ss) in enumerate(
            zip(values.tolist(), units.tolist(), scores.tolist(), strict=True)
        ):
            offers[p] += [Firing(v, name, u, p, s) for v, u, s in zip(vs, us, ss, strict=True)]
    return [_best(o, k) for o in offers]


def _top(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k largest along the last dim, ties to the lower unit (as the merge breaks them)."""
    values, units = x.sort(dim=-1, descending=True, stable=True)
    return values[..., :k], units[..., :k]


def _best(offers: list[Firing], k: int) -> list[Firing]:
    # Ties break by source and unit, so the order does not depend on dictionary order.
    return sorted(offers, key=lambda f: (-f.score, f.source, f.unit))[:k]
