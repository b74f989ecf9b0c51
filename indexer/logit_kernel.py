"""Each unit's logit summary in one compiled pass over its [d_vocab] effects.

The tensor reference (``indexer.summaries.logit_tables`` and ``logit_histograms``) takes
two ``topk``s, a min, a max and a ``bincount`` over a [units, d_vocab] block, each a full
pass over it; on a CPU they cost more than the GEMM that made the block. This kernel reads
each row twice (its min and max first, then the bins and the two top-10 lists), each thread
its own rows, and rounds exactly as the reference does (float32 throughout).
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(parallel=True, cache=True, nogil=True)
def logit_summary(effects, k, bins):  # pragma: no cover - compiled
    """For ``effects`` [n, V] float32: ([n, k] top indices, [n, k] top values, [n, k]
    bottom indices, [n, k] bottom values, [n] min, [n] max, [n, bins] counts). Top is
    descending, bottom ascending; on a tie the lower index first. Bin of x:
    floor((x - min) / width) clamped to [0, bins - 1], width = max((max - min) / bins,
    1e-12), all in float32."""
    n, v = effects.shape
    top_i = np.zeros((n, k), np.int64)
    top_v = np.zeros((n, k), np.float32)
    bot_i = np.zeros((n, k), np.int64)
    bot_v = np.zeros((n, k), np.float32)
    lows = np.zeros(n, np.float32)
    highs = np.zeros(n, np.float32)
    counts = np.zeros((n, bins), np.int64)
    n_bins = np.float32(bins)
    last = np.float32(bins - 1)
    for r in numba.prange(n):
        row = effects[r]
        lo = row[0]
        hi = row[0]
        for j in range(v):  # vectorised
            x = row[j]
            lo = x if x < lo else lo
            hi = x if x > hi else hi
        lows[r] = lo
        highs[r] = hi
        width = (hi - lo) / n_bins
        width = width if width > np.float32(1e-12) else np.float32(1e-12)
        tv = top_v[r]
        ti = top_i[r]
        bv = bot_v[r]
        bi = bot_i[r]
        for j in range(k):  # the first k fill both lists
            _insert(tv, ti, j, row[j], j, True)
            _insert(bv, bi, j, row[j], j, False)
        # Bins in a vectorised pass, then counted; the lists are tried a block at a time,
        # and only where a block holds a value past the current k-th (rare after the first).
        bins_of = np.empty(v, np.int32)
        for j in range(v):  # vectorised
            b = np.floor((row[j] - lo) / width)
            b = b if b > np.float32(0.0) else np.float32(0.0)
            b = b if b < last else last
            bins_of[j] = np.int32(b)
        for j in range(v):
            counts[r, bins_of[j]] += 1
        for start in range(k, v, 64):
            stop = min(v, start + 64)
            top_bar = tv[k - 1]
            bottom_bar = bv[k - 1]
            hit = False
            for j in range(start, stop):  # vectorised
                hit |= (row[j] > top_bar) | (row[j] < bottom_bar)
            if not hit:
                continue
            for j in range(start, stop):
                x = row[j]
                if x > tv[k - 1]:
                    _insert(tv, ti, k - 1, x, j, True)
                if x < bv[k - 1]:
                    _insert(bv, bi, k - 1, x, j, False)
    return top_i, top_v, bot_i, bot_v, lows, highs, counts


@numba.njit(cache=True, inline="always")
def _insert(vals, idx, at, x, j, descending):  # pragma: no cover - compiled
    """Put (x, j) into the sorted list ``vals``/``idx`` in place of slot ``at`` (the last
    used one, or the first free one), moving the worse entries down. Indices arrive in
    ascending order, so an equal value stays behind the earlier one."""
    q = at
    while q > 0 and ((x > vals[q - 1]) if descending else (x < vals[q - 1])):
        vals[q] = vals[q - 1]
        idx[q] = idx[q - 1]
        q -= 1
    vals[q] = x
    idx[q] = j
