"""What a unit page shows besides its top examples, computed once at the end of a pass:
activation histograms and interval tables (from indexer.intervals), logit histograms,
and neighbours. Tensors in, JSON-ready dicts out.
"""

from __future__ import annotations

import torch

from indexer.intervals import COUNT_BINS, Intervals, IntervalState

HIST_BARS = 64
"""At most this many bars in an activation histogram (whole grid bins merged)."""
LOGIT_BINS = 40
NEIGHBOURS = 10


def activation_histograms(st: IntervalState, max_act: torch.Tensor) -> list[dict | None]:
    """Per unit: exact counts of positive activations in equal bins over (0, max], each bar
    a run of grid bins: ``{"width": w, "counts": [...]}``, bar i = (i·w, (i+1)·w]."""
    out: list[dict | None] = []
    step = (st.ceiling / COUNT_BINS).tolist()
    used = torch.ceil(max_act.double() / (st.ceiling / COUNT_BINS).clamp(min=1e-300)).long()
    for u, (w, n) in enumerate(zip(step, used.tolist(), strict=True)):
        if w == 0 or max_act[u] <= 0:
            out.append(None)
            continue
        n = max(1, min(n, COUNT_BINS))
        group = -(-n // HIST_BARS)
        bars = -(-n // group)
        counts = torch.zeros(bars * group, dtype=torch.long)
        counts[:n] = st.counts[u, :n].cpu()
        out.append({"width": w * group, "counts": counts.view(bars, group).sum(1).tolist()})
    return out


def interval_tables(iv: Intervals) -> list[list[list[float]] | None]:
    """Per unit: ``[[lo, hi, count], ...]`` for its intervals, or None if never positive."""
    edges, counts = iv.edges.tolist(), iv.counts.tolist()
    return [
        None if e[-1] <= 0 else [[e[k], e[k + 1], c[k]] for k in range(len(c))]
        for e, c in zip(edges, counts, strict=True)
    ]


def logit_histograms(effects: torch.Tensor, bins: int = LOGIT_BINS) -> list[dict]:
    """Per unit, the histogram of its effect on every vocabulary logit [U, d_vocab]:
    ``{"lo": min, "hi": max, "counts": [...]}`` over ``bins`` equal bins."""
    lo = effects.amin(1, keepdim=True)
    hi = effects.amax(1, keepdim=True)
    width = ((hi - lo) / bins).clamp(min=1e-12)
    n_units = effects.shape[0]
    idx = (effects - lo).div_(width).floor_().clamp_(0, bins - 1)
    offsets = torch.arange(n_units, device=effects.device).unsqueeze(1) * bins
    if n_units * bins <= 1 << 24:  # exact in float32
        flat = idx.add_(offsets.float()).view(-1).int()
    else:
        flat = (idx.long() + offsets).view(-1)
    counts = torch.bincount(flat, minlength=n_units * bins).view(-1, bins)
    return [
        {"lo": a, "hi": b, "counts": c}
        for a, b, c in zip(
            lo.squeeze(1).tolist(), hi.squeeze(1).tolist(), counts.tolist(), strict=True
        )
    ]


def cosine_top(a: torch.Tensor, b: torch.Tensor, k: int, *, exclude_self: bool):
    """For each row of ``a`` [n, d], the ``k`` rows of ``b`` [m, d] with the highest cosine
    similarity: ([n, k] indices, [n, k] cosines)."""
    a = torch.nn.functional.normalize(a.float(), dim=1)
    b = torch.nn.functional.normalize(b.float(), dim=1)
    sims = a @ b.t()
    if exclude_self:
        sims.fill_diagonal_(-torch.inf)
    k = min(k, sims.shape[1] - (1 if exclude_self else 0))
    values, indices = sims.topk(k, dim=1)
    return indices, values


def pairs(indices: torch.Tensor, values: torch.Tensor) -> list[list[list]]:
    """Per row, ``[[index, value], ...]``, leaving out NaN values."""
    return [
        [[i, round(v, 4)] for i, v in zip(ir, vr, strict=True) if v == v]
        for ir, vr in zip(indices.tolist(), values.tolist(), strict=True)
    ]
