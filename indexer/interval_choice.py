"""The intervals, once the max is known: (0, max] cut into ``n`` intervals on the count
grid, each with its exact count and the samples a brute-force pass would draw (see
``indexer.intervals`` for the argument).

``choose_intervals`` runs the compiled kernel on a CPU (``indexer.interval_choice_kernel``)
and the tensor code, its specification, elsewhere or with ``backend="torch"``."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from indexer.batches import use_compiled
from indexer.interval_choice_kernel import choose_picks
from indexer.intervals import IntervalState
from indexer.sample_bins import COUNT_BINS, EMPTY, SAMPLE_BINS


@dataclass(frozen=True)
class Intervals:
    """``n`` intervals of (0, max] per unit, each with its count and samples."""

    edges: torch.Tensor
    """[U, n + 1] float64: interval k is (edges[k], edges[k+1]]; edges[n] = max."""
    counts: torch.Tensor
    """[U, n] positive activations in each interval (exact)."""
    tokens: torch.Tensor
    """[U, n, per_interval] global token index; -1 where there is no sample."""
    values: torch.Tensor
    """[U, n, per_interval]"""
    windows: torch.Tensor
    """[U, n, per_interval, W] float32, NaN off the sequence or where there is no sample."""
    keys: torch.Tensor
    """[U, n, per_interval] the samples' keys (ascending); EMPTY where there is none."""


def choose_intervals(
    st: IntervalState,
    max_act: torch.Tensor,
    n: int = 10,
    per_interval: int = 5,
    *,
    backend: str | None = None,
) -> Intervals:
    """Cut (0, max_act] into ``n`` grid-aligned intervals and draw each one's samples.

    ``max_act`` [U] is each unit's max over the same stream (from the top-k); units that
    were never positive get no interval (all counts 0, no samples). ``backend``: as for
    the streamers (``indexer.batches.use_compiled``).
    """
    if not 1 <= per_interval <= st.keys.shape[2]:
        raise ValueError(
            f"per_interval must be in 1..{st.keys.shape[2]} (the samples kept per bin)"
        )
    if n < 1:
        raise ValueError("n must be at least 1")
    if use_compiled(st.counts.device, backend):
        return _compiled(st, max_act, n, per_interval)
    return _tensor(st, max_act, n, per_interval)


def _compiled(st: IntervalState, max_act: torch.Tensor, n: int, per_interval: int):
    n_units, n_bins, per_bin = st.keys.shape
    width = st.windows.shape[-1]
    edges, counts, picks = choose_picks(
        st.ceiling.double().numpy(),
        st.counts.long().numpy(),
        st.keys.numpy(),
        st.values.float().numpy(),
        max_act.double().numpy(),
        n,
        per_interval,
    )
    picks = torch.from_numpy(picks).view(n_units, n * per_interval)
    found = picks >= 0
    at = picks.clamp(min=0)

    def gather(x: torch.Tensor, empty) -> torch.Tensor:
        got = x.reshape(n_units, -1).gather(1, at)
        return got.masked_fill(~found, empty).view(n_units, n, per_interval)

    windows = st.windows.reshape(n_units, n_bins * per_bin, width)
    windows = windows.gather(1, at.unsqueeze(2).expand(-1, -1, width)).float()
    windows = windows.masked_fill_(~found.unsqueeze(2), torch.nan)
    return Intervals(
        edges=torch.from_numpy(edges),
        counts=torch.from_numpy(counts),
        tokens=gather(st.tokens, -1),
        values=gather(st.values.float(), 0.0),
        windows=windows.view(n_units, n, per_interval, width),
        keys=gather(st.keys, EMPTY),
    )


def _tensor(st: IntervalState, max_act: torch.Tensor, n: int, per_interval: int):
    """The specification: every unit at once, in tensor ops (any device)."""
    n_units = st.counts.shape[0]
    device = st.counts.device
    step = st.ceiling / COUNT_BINS  # [U]
    safe_step = torch.where(step > 0, step, 1.0)
    live = (st.ceiling > 0) & (max_act > 0)
    mx = torch.where(live, max_act.double(), 0.0)
    k = torch.arange(n, device=device, dtype=torch.float64)
    inner = torch.round(k.unsqueeze(0) * (mx / n).unsqueeze(1) / safe_step.unsqueeze(1))
    top = torch.ceil(mx / safe_step).unsqueeze(1)
    grid = torch.cat([inner, top], dim=1).long().clamp(0, COUNT_BINS)  # [U, n+1] bin edges
    edges = grid.double() * step.unsqueeze(1)
    edges[:, n] = mx
    cum = torch.nn.functional.pad(st.counts.cumsum(1), (1, 0))  # [U, COUNT_BINS + 1]
    counts = cum.gather(1, grid[:, 1:]) - cum.gather(1, grid[:, :-1])

    # Each interval's bound θ: the smallest threshold among the sample bins it cuts through,
    # leaving out those whose part in the interval is known entry for entry (as the exact
    # counts show). Below θ every entry of a cut bin is known; a bin wholly inside the
    # interval needs no bound, since its kept entries are its smallest keys and per_bin >=
    # per_interval: an unkept one has per_bin known entries with smaller keys before it.
    per = COUNT_BINS // SAMPLE_BINS
    thresholds = st.keys[:, :, -1]  # [U, S]
    bin_lo = torch.arange(SAMPLE_BINS, device=device) * per  # count-grid range (lo, hi]
    bin_hi = bin_lo + per
    kept_fine = torch.ceil(st.values.double() / safe_step.view(-1, 1, 1)).long()  # [U, S, r]
    kept_fine = torch.where(st.keys != EMPTY, kept_fine, -1)
    theta = []
    for j in range(n):
        lo = torch.maximum(grid[:, j : j + 1], bin_lo)  # [U, S]
        hi = torch.minimum(grid[:, j + 1 : j + 2], bin_hi)
        overlap = hi > lo
        in_part = cum.gather(1, hi.clamp(min=0)) - cum.gather(1, lo.clamp(max=COUNT_BINS))
        known = ((kept_fine > lo.unsqueeze(2)) & (kept_fine <= hi.unsqueeze(2))).sum(2)
        partial = (lo > bin_lo) | (hi < bin_hi)
        binding = overlap & partial & (known < in_part)
        theta.append(torch.where(binding, thresholds, EMPTY).amin(1))
    theta = torch.stack(theta, dim=1)  # [U, n]

    # Every kept entry: its interval, and whether its key is below that interval's θ.
    keys = st.keys.reshape(n_units, -1)
    values = st.values.reshape(n_units, -1).double()
    fine = torch.ceil(values / safe_step.unsqueeze(1)).long()
    interval = torch.searchsorted(grid[:, 1:n].contiguous(), fine.contiguous(), side="left")
    interval = interval.clamp(max=n - 1)
    ok = (keys != EMPTY) & (keys < theta.gather(1, interval)) & live.unsqueeze(1)
    ok &= (fine > 0) & (fine <= grid[:, n : n + 1])
    # Smallest keys first within each (unit, interval).
    group = torch.arange(n_units, device=device).unsqueeze(1) * n + interval
    group = torch.where(ok, group, n_units * n)  # rejected entries sort last
    flat_group, flat_keys = group.reshape(-1), keys.reshape(-1)
    by_key = flat_keys.argsort(stable=True)
    order = by_key[flat_group[by_key].argsort(stable=True)]
    sorted_group = flat_group[order]
    rank = torch.arange(order.shape[0], device=device) - torch.searchsorted(
        sorted_group, sorted_group
    )
    keep = (sorted_group < n_units * n) & (rank < per_interval)
    pick, slot, grp = order[keep], rank[keep], sorted_group[keep]
    out_tokens = torch.full((n_units * n, per_interval), -1, dtype=torch.long, device=device)
    out_values = torch.zeros(n_units * n, per_interval, device=device)
    out_keys = torch.full((n_units * n, per_interval), EMPTY, dtype=torch.long, device=device)
    width = st.windows.shape[-1]
    out_windows = torch.full((n_units * n, per_interval, width), torch.nan, device=device)
    out_tokens[grp, slot] = st.tokens.reshape(-1)[pick]
    out_values[grp, slot] = st.values.reshape(-1)[pick]
    out_keys[grp, slot] = flat_keys[pick]
    out_windows[grp, slot] = st.windows.reshape(flat_keys.shape[0], width)[pick].float()
    return Intervals(
        edges=edges,
        counts=counts,
        tokens=out_tokens.view(n_units, n, per_interval),
        values=out_values.view(n_units, n, per_interval),
        windows=out_windows.view(n_units, n, per_interval, width),
        keys=out_keys.view(n_units, n, per_interval),
    )
