"""What a unit page shows besides its top examples, computed once at the end of a pass:
activation histograms and interval tables (from indexer.intervals), logit histograms,
and neighbours. Tensors in, JSON-ready dicts out.
"""

from __future__ import annotations

import numpy as np
import torch

from indexer.interval_choice import Intervals
from indexer.intervals import COUNT_BINS, IntervalState
from indexer.logit_kernel import logit_summary

HIST_BARS = 64
"""At most this many bars in an activation histogram (whole grid bins merged)."""
LOGIT_BINS = 40
LOGIT_TOKENS = 10
NEIGHBOURS = 10
COSINE_BYTES = 128 << 20


def activation_histograms(st: IntervalState, max_act: torch.Tensor) -> list[dict | None]:
    """Per unit: exact counts of positive activations in equal bins over (0, max], each bar
    a run of grid bins: ``{"width": w, "counts": [...]}``, bar i = (i·w, (i+1)·w].
    Vectorised by group size (1 to 8 grid bins a bar): a loop per unit cost 20 us each."""
    step = (st.ceiling / COUNT_BINS).cpu().numpy()
    mx = max_act.double().cpu().numpy()
    live = (step > 0) & (mx > 0)
    used = np.where(live, np.ceil(mx / np.where(live, step, 1.0)), 1.0)
    n = np.clip(used, 1, COUNT_BINS).astype(np.int64)
    group = -(-n // HIST_BARS)
    bars = -(-n // group)
    counts = st.counts.cpu().numpy()
    counts = np.where(np.arange(COUNT_BINS) < n[:, None], counts, 0)  # bins past the max
    out: list[dict | None] = [None] * counts.shape[0]
    for g in np.unique(group[live]).tolist():
        units = np.flatnonzero(live & (group == g))
        summed = counts[units, : HIST_BARS * g].reshape(-1, HIST_BARS, g).sum(2).tolist()
        widths = (step[units] * g).tolist()
        for u, row, w, b in zip(units.tolist(), summed, widths, bars[units].tolist(), strict=True):
            out[u] = {"width": w, "counts": row[:b]}
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
    ``{"lo": min, "hi": max, "counts": [...]}`` over ``bins`` equal bins (the tensor
    reference)."""
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


LOGIT_ARRAYS = ("top_i", "top_v", "bottom_i", "bottom_v", "lo", "hi", "counts")
"""A block of units' logit summaries as arrays: [U, k] top and bottom token ids and
effects, [U] min and max effect, [U, LOGIT_BINS] histogram counts."""


def logit_summary_arrays(effects: torch.Tensor) -> dict[str, np.ndarray]:
    """Per unit of ``effects`` [U, d_vocab] its ``logit_tables`` and ``logit_histograms``
    entries, as the arrays ``LOGIT_ARRAYS``: on a CPU from one compiled pass
    (``indexer.logit_kernel``), elsewhere from tensor ops."""
    k = min(LOGIT_TOKENS, effects.shape[1])
    if effects.device.type == "cpu":
        x = effects.detach().float().contiguous().numpy()
        return dict(zip(LOGIT_ARRAYS, logit_summary(x, k, LOGIT_BINS), strict=True))
    up = effects.topk(k, dim=1)
    down = effects.topk(k, dim=1, largest=False)
    hists = logit_histograms(effects)
    arrays = (
        up.indices, up.values, down.indices, down.values,
        [h["lo"] for h in hists], [h["hi"] for h in hists], [h["counts"] for h in hists],
    )  # fmt: skip
    return {
        name: a.cpu().numpy() if torch.is_tensor(a) else np.asarray(a)
        for name, a in zip(LOGIT_ARRAYS, arrays, strict=True)
    }


def logit_summaries_of(arrays: dict[str, np.ndarray]) -> tuple[list[dict], list[dict]]:
    """``logit_summary_arrays`` as the tables and histograms the index stores."""
    # Rounded as ``round(v, 5)`` rounds, at once: a float32 times 10^5 is exact in float64
    # (24 + 17 bits), so ``rint`` rounds the exact value half to even, as ``round`` does,
    # and the quotient is the float nearest the 5-decimal result, as ``round`` gives.
    top_v, bottom_v = (
        np.round(arrays[n].astype(np.float32).astype(np.float64), 5).tolist()
        for n in ("top_v", "bottom_v")
    )
    tables = [
        {"top": _zipped(ti, tv), "bottom": _zipped(bi, bv)}
        for ti, tv, bi, bv in zip(
            arrays["top_i"].tolist(), top_v, arrays["bottom_i"].tolist(), bottom_v, strict=True
        )
    ]
    hists = [
        {"lo": a, "hi": b, "counts": c}
        for a, b, c in zip(*(arrays[n].tolist() for n in ("lo", "hi", "counts")), strict=True)
    ]
    return tables, hists


def logit_summaries(effects: torch.Tensor) -> tuple[list[dict], list[dict]]:
    """Per unit of ``effects`` [U, d_vocab]: its ``logit_tables`` and ``logit_histograms``
    entries."""
    return logit_summaries_of(logit_summary_arrays(effects))


def logit_tables(effects: torch.Tensor, k: int = LOGIT_TOKENS) -> list[dict]:
    """Per unit of ``effects`` [U, d_vocab], the tokens it promotes and suppresses most:
    ``{"top": [[id, value], ...], "bottom": [...]}`` (the tensor reference)."""
    up = effects.topk(k, dim=1)
    down = effects.topk(k, dim=1, largest=False)
    return [
        {"top": _pairs(ui, uv), "bottom": _pairs(di, dv)}
        for ui, uv, di, dv in zip(
            up.indices.tolist(),
            up.values.tolist(),
            down.indices.tolist(),
            down.values.tolist(),
            strict=True,
        )
    ]


def _pairs(ids: list[int], values: list[float]) -> list[list]:
    return _zipped(ids, map(_round5, values))


def _zipped(ids, values) -> list[list]:
    return list(map(list, zip(ids, values, strict=True)))


def _round5(v: float) -> float:
    return round(v, 5)


def cosine_top(a: torch.Tensor, b: torch.Tensor, k: int, *, exclude_self: bool):
    """For each row of ``a`` [n, d], the ``k`` rows of ``b`` [m, d] with the highest cosine
    similarity: ([n, k] indices, [n, k] cosines). ``exclude_self``: ``a`` is ``b``, and a
    row is not its own neighbour. Rows of ``a`` go a block at a time ([block, m] float32
    of at most ``COSINE_BYTES``): the [n, m] matrix of a wide SAE would be tens of GB."""
    same = a is b
    a = torch.nn.functional.normalize(a.float(), dim=1)
    b = a if same else torch.nn.functional.normalize(b.float(), dim=1)
    k = min(k, b.shape[0] - (1 if exclude_self else 0))
    step = max(1, COSINE_BYTES // (4 * max(b.shape[0], 1)))
    indices, values = [], []
    for lo in range(0, a.shape[0], step):
        sims = a[lo : lo + step] @ b.t()
        if exclude_self:
            own = torch.arange(sims.shape[0], device=sims.device)
            sims[own, own + lo] = -torch.inf
        v, i = sims.topk(k, dim=1)
        indices.append(i)
        values.append(v)
    if not indices:
        return torch.zeros(0, k, dtype=torch.long), torch.zeros(0, k)
    return torch.cat(indices), torch.cat(values)


def pairs(indices: torch.Tensor, values: torch.Tensor) -> list[list[list]]:
    """Per row, ``[[index, value], ...]``, leaving out NaN values."""
    return [
        [[i, round(v, 4)] for i, v in zip(ir, vr, strict=True) if v == v]
        for ir, vr in zip(indices.tolist(), values.tolist(), strict=True)
    ]
