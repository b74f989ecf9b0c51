"""The compiled interval choice: ``indexer.interval_choice.choose_intervals`` one unit at a
time, for the CPU.

The tensor code is the specification; this kernel gives the very same intervals (tested
equal, field for field). It differs only in the work it does: the tensor code compares
every kept entry with every interval and sorts all of a slice's entries twice, while a
unit here visits each sample bin once per interval it overlaps and each kept entry once,
keeping each interval's ``per_interval`` smallest keys by insertion. Units run in parallel.
"""

from __future__ import annotations

import numba
import numpy as np

from indexer.sample_bins import COUNT_BINS, EMPTY, SAMPLE_BINS

_PER = COUNT_BINS // SAMPLE_BINS


@numba.njit(cache=True)
def _grid_point(x):  # pragma: no cover - compiled
    """A whole number of grid steps, as an index into the count grid (0 .. COUNT_BINS)."""
    return np.int64(min(max(x, 0.0), float(COUNT_BINS)))


@numba.njit(parallel=True, cache=True)
def choose_picks(ceiling, counts, keys, values, max_act, n, per_interval):  # pragma: no cover
    """For units [U] with ``ceiling`` [U] float64, ``counts`` [U, COUNT_BINS] int64,
    kept ``keys`` [U, S, r] int64 and ``values`` [U, S, r] float32 and ``max_act`` [U]
    float64: ([U, n + 1] float64 edges, [U, n] int64 counts, [U, n, per_interval] int64
    picks), each pick the kept entry's flat index ``s * r + i`` (-1: no sample), smallest
    keys first."""
    n_units, n_bins, per_bin = keys.shape
    edges = np.zeros((n_units, n + 1))
    out_counts = np.zeros((n_units, n), dtype=np.int64)
    picks = np.full((n_units, n, per_interval), -1, dtype=np.int64)
    for u in numba.prange(n_units):
        step = ceiling[u] / COUNT_BINS
        safe_step = step if step > 0 else 1.0
        live = ceiling[u] > 0 and max_act[u] > 0
        mx = max_act[u] if live else 0.0
        grid = np.empty(n + 1, dtype=np.int64)
        for k in range(n):
            grid[k] = _grid_point(np.rint(k * (mx / n) / safe_step))
        grid[n] = _grid_point(np.ceil(mx / safe_step))
        for k in range(n):
            edges[u, k] = grid[k] * step
        edges[u, n] = mx
        cum = np.zeros(COUNT_BINS + 1, dtype=np.int64)
        for i in range(COUNT_BINS):
            cum[i + 1] = cum[i] + counts[u, i]
        for k in range(n):
            out_counts[u, k] = cum[grid[k + 1]] - cum[grid[k]]

        # theta[k]: the smallest threshold of the sample bins interval k cuts through
        # whose part in it is not known entry for entry.
        theta = np.full(n, EMPTY, dtype=np.int64)
        for k in range(n):
            first_bin = grid[k] // _PER
            end_bin = min(n_bins, (grid[k + 1] + _PER - 1) // _PER)
            for s in range(first_bin, end_bin):
                bin_lo = s * _PER
                bin_hi = bin_lo + _PER
                lo = max(grid[k], bin_lo)
                hi = min(grid[k + 1], bin_hi)
                if hi <= lo or (lo <= bin_lo and hi >= bin_hi):
                    continue  # no overlap, or the whole bin
                in_part = cum[hi] - cum[lo]
                known = 0
                for i in range(per_bin):
                    if keys[u, s, i] != EMPTY:
                        fine = np.int64(np.ceil(np.float64(values[u, s, i]) / safe_step))
                        if lo < fine <= hi:
                            known += 1
                if known < in_part and keys[u, s, per_bin - 1] < theta[k]:
                    theta[k] = keys[u, s, per_bin - 1]

        if not live:
            continue
        best = np.full((n, per_interval), EMPTY, dtype=np.int64)
        for s in range(n_bins):
            for i in range(per_bin):
                key = keys[u, s, i]
                if key == EMPTY:
                    continue
                fine = np.int64(np.ceil(np.float64(values[u, s, i]) / safe_step))
                if fine <= 0 or fine > grid[n]:
                    continue
                k = 0  # the first of grid[1:n] at or above fine
                while k < n - 1 and grid[k + 1] < fine:
                    k += 1
                if key >= theta[k] or key >= best[k, per_interval - 1]:
                    continue
                j = per_interval - 1  # insert, keys ascending
                while j > 0 and best[k, j - 1] > key:
                    best[k, j] = best[k, j - 1]
                    picks[u, k, j] = picks[u, k, j - 1]
                    j -= 1
                best[k, j] = key
                picks[u, k, j] = s * per_bin + i
    return edges, out_counts, picks
