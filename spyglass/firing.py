"""Which units fire on a prompt: exact top-k merges across sources. Pure tensor code.

Each source gives activations [T, U] on the same tokens. The top k of the union is a
true merge: every source offers its own top k (the global top k can hold no more from
one source), and the union's top k is taken from those offers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Firing:
    value: float
    source: str
    unit: int
    position: int
    """Where the unit's value is taken: its max over the prompt, or the token asked for."""


def top_over_prompt(acts: dict[str, torch.Tensor], k: int, first: int = 0) -> list[Firing]:
    """The ``k`` units with the highest max over positions ``first..``, across sources."""
    offers = []
    for name, a in acts.items():
        best, where = a[first:].max(dim=0)  # [U]
        values, units = _top(best, k)
        offers += [
            Firing(v, name, u, p + first)
            for v, u, p in zip(values.tolist(), units.tolist(), where[units].tolist(), strict=True)
        ]
    return _best(offers, k)


def top_per_position(acts: dict[str, torch.Tensor], k: int) -> list[list[Firing]]:
    """At each position, the ``k`` units with the highest activation there, across sources."""
    n_pos = next(iter(acts.values())).shape[0]
    offers: list[list[Firing]] = [[] for _ in range(n_pos)]
    for name, a in acts.items():
        values, units = _top(a, k)  # [T, k]
        for p, (vs, us) in enumerate(zip(values.tolist(), units.tolist(), strict=True)):
            offers[p] += [Firing(v, name, u, p) for v, u in zip(vs, us, strict=True)]
    return [_best(o, k) for o in offers]


def _top(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k largest along the last dim, ties to the lower unit (as the merge breaks them)."""
    values, units = x.sort(dim=-1, descending=True, stable=True)
    return values[..., :k], units[..., :k]


def _best(offers: list[Firing], k: int) -> list[Firing]:
    # Ties break by source and unit, so the order does not depend on dictionary order.
    return sorted(offers, key=lambda f: (-f.value, f.source, f.unit))[:k]
