"""The interval state's grid (``indexer.intervals``), and its compiled parts: each unit's
ceiling, its fine count bins, and its sample bins' slots, bars and key levels.

A ceiling that rises merges 2^d fine bins into one and the sample bins likewise, each
keeping its r smallest keys (``raise_ceiling``). Keys are split into levels by their top
bits, so that a row whose key is high skips the bins it cannot enter (``unit_levels``).
"""

from __future__ import annotations

import math

import numba
import numpy as np

from indexer.kernel_ops import NAN16

COUNT_BINS = 512
"""Fine count bins under each unit's ceiling."""
SAMPLE_BINS = 64
"""Sample bins under each unit's ceiling, each a run of COUNT_BINS / SAMPLE_BINS fine bins."""
COUNT_BINS_LOG2 = COUNT_BINS.bit_length() - 1
SAMPLE_BINS_LOG2 = SAMPLE_BINS.bit_length() - 1
assert 1 << COUNT_BINS_LOG2 == COUNT_BINS and 1 << SAMPLE_BINS_LOG2 == SAMPLE_BINS
EMPTY = np.iinfo(np.int64).max
"""Key of an empty sample slot: sorts after every real key."""
LOW_LOG2 = 57  # keys (uniform on [0, 2^63)) below 2^57: 1 row in 64
LEVELS = 63 - LOW_LOG2 + 1  # key levels: below 2^57, then [2^(56+l), 2^(57+l)), l = 1..6


@numba.njit(cache=True, inline="always")
def largest_slot(keys) -> int:
    m = 0
    for q in range(1, keys.shape[0]):
        if keys[q] > keys[m]:
            m = q
    return m


@numba.njit(parallel=True, cache=True, nogil=True)
def grow(
    batch_max, exp, started, counts, fresh, keys, values, windows
):  # pragma: no cover - compiled
    """Raise each unit's ceiling to cover ``batch_max`` (``raise_ceiling``)."""
    for u in numba.prange(batch_max.shape[0]):
        if batch_max[u] > 0:
            raise_ceiling(u, batch_max[u], exp, started, counts, fresh, keys, values, windows)


@numba.njit(cache=True, inline="always")
def raise_ceiling(
    u, x, exp, started, counts, fresh, keys, values, windows
):  # pragma: no cover - compiled
    """Raise unit ``u``'s ceiling 2^exp to cover ``x`` > 0 (the first positive value sets
    it): 2^d fine bins merge into one, and the sample bins likewise, each keeping its r
    smallest keys. Exact at any point of the stream: a value in fine bin i lands in bin
    ceil(i / 2^d) either way, and the r smallest keys of a union do not depend on order."""
    n_sample, r = keys.shape[1], keys.shape[2]
    totals = counts.shape[1] > 0  # int64 totals beside the int32 counts (``fresh``)
    n_fine = (counts.shape[1] if totals else fresh.shape[1]) - 1
    mantissa, target = math.frexp(x)
    if mantissa == 0.5:
        target -= 1
    if not started[u]:
        exp[u] = target
        started[u] = True
        return
    if target <= exp[u]:
        return
    d = min(target - exp[u], 62)
    exp[u] = target
    # In place, bins ascending: bin i >= 2 lands in a lower bin ceil(i / 2^d), which by
    # then has handed its own content down, so it holds only what was merged into it.
    # Counts: fine bin i (1-based) lands in ceil(i / 2^d).
    if totals:
        for i in range(fresh.shape[1]):
            counts[u, i] += fresh[u, i]
            fresh[u, i] = 0
        _merge_bins(counts[u], n_fine, d)
    else:
        _merge_bins(fresh[u], n_fine, d)
    # Samples: every kept entry moves to bin ceil(s / 2^d), which keeps its r smallest
    # keys; the slot it leaves is emptied (key EMPTY, value 0, NaN window).
    for s in range(2, n_sample):
        new = min(((s - 1) >> d) + 1, n_sample - 1)
        for q in range(r):
            key = keys[u, s, q]
            if key == EMPTY:
                continue
            m = largest_slot(keys[u, new])
            if key < keys[u, new, m]:
                keys[u, new, m] = key
                values[u, new, m] = values[u, s, q]
                windows[u, new, m] = windows[u, s, q]
            keys[u, s, q] = EMPTY
            values[u, s, q] = 0.0
            windows[u, s, q] = NAN16


@numba.njit(cache=True, inline="always")
def _merge_bins(row, n_fine, d):  # pragma: no cover - compiled
    """Counts ``row`` [F+1] of fine bins 2^d times as wide: bin i lands in ceil(i / 2^d)."""
    for i in range(2, n_fine + 1):
        j = min(((i - 1) >> d) + 1, n_fine)
        row[j] += row[i]
        row[i] = 0


@numba.njit(cache=True, inline="always")
def fine_bin(v, scale, top):  # pragma: no cover - compiled
    """ceil(v * scale) in [1, top] for v > 0 (1 where the product underflows), else 0
    (NaN too); float32 throughout (``top``: F as a float32), so that rows vectorise."""
    f = v * scale
    f = f if f > np.float32(0.0) else np.float32(0.0)
    f = f if f < top else top
    return max(np.int32(np.ceil(f)), np.int32(v > np.float32(0.0)))


@numba.njit(cache=True, inline="always")
def level_floor(lv) -> np.int64:
    """The smallest key of level ``lv``: 0, then 2^(56+lv) (keys in [2^(56+lv), 2^(57+lv)),
    the last level up to 2^63)."""
    return np.int64(0) if lv == 0 else np.int64(1) << (LOW_LOG2 - 1 + lv)


@numba.njit(cache=True, inline="always")
def key_level(key) -> int:
    lv = 0
    while lv < LEVELS - 1 and key >= np.int64(1) << (LOW_LOG2 + lv):
        lv += 1
    return lv


@numba.njit(cache=True, inline="always")
def bin_bars(u, s_keys, bars, slots):  # pragma: no cover - compiled
    """Unit ``u``'s sample bins' bars (largest key: an entry must be below it to enter)
    and slots (where that key is); bin 0 takes nothing."""
    bars[u, 0] = -EMPTY - 1
    for s in range(1, s_keys.shape[1]):
        m = largest_slot(s_keys[u, s])
        slots[u, s] = m
        bars[u, s] = s_keys[u, s, m]


@numba.njit(parallel=True, cache=True, nogil=True)
def refresh_bars(s_keys, bars, slots):  # pragma: no cover - compiled
    """Every unit's ``bin_bars``: for a state whose keys changed outside the kernels."""
    for u in numba.prange(s_keys.shape[0]):
        bin_bars(u, s_keys, bars, slots)


@numba.njit(cache=True, inline="always")
def unit_levels(
    i, u, exp, started, bars, ceiling, scale, opens, fine_log2, per
):  # pragma: no cover - compiled
    """What ``_fold`` keeps of unit ``u`` (its ``i``-th): ceiling, scale, and ``opens``
    [level, i]: level lv's keys (at least ``level_floor(lv)``) can only enter the sample bins
    whose bar is above that, so its rows test only fine bins above ``opens``, the one
    just below the first such bin (after a few batches, mostly sparse high bins). Floors
    rise with the level, so one pass over the bins sets the levels in order."""
    n_sample = bars.shape[1]
    ceiling[i] = np.float32(math.ldexp(1.0, exp[u])) if started[u] else np.float32(0.0)
    scale[i] = np.float32(math.ldexp(1.0, fine_log2 - exp[u]))
    lv = 0
    for s in range(1, n_sample):
        while lv < LEVELS and bars[u, s] > level_floor(lv):
            opens[lv, i] = (s - 1) * per
            lv += 1
        if lv == LEVELS:
            break
    for rest in range(lv, LEVELS):
        opens[rest, i] = (n_sample - 1) * per


@numba.njit(cache=True, inline="always")
def open_from(s, lv, i, u, bars, opens, per):  # pragma: no cover - compiled
    """Move ``opens`` [lv, i] up to the first bin from ``s`` on whose bar is above
    ``level_floor(lv)`` (see ``unit_levels``): bars only fall, so it only moves up."""
    n_sample = bars.shape[1]
    while s < n_sample and bars[u, s] <= level_floor(lv):
        s += 1
    opens[lv, i] = (s - 1) * per
