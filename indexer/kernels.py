"""Compiled CPU kernels for the streaming statistics: one pass over an activation block.

A chain of tensor ops reads and writes the whole [B, T, U] block once per op, and a
dense ``topk`` sorts it; on a CPU that costs about as much as the forward pass that made
the block. These numba kernels read each activation once (twice in a state's first
batch, whose column max sets the ceilings), each thread a contiguous range of units row by
row, and touch a unit's top-k or sample slots only when a value beats the slot it would
replace, which after the first batches is rare.

The state is the tensor code's (``indexer.core.StreamingTopK``,
``indexer.intervals.StreamingIntervals``), except that slots are unordered: the kernel
finds the slot to replace on entry, and ``result``/``state`` sort. Sample windows are
float16 bit patterns (``indexer.kernel_ops``); the interval state's bins are in
``indexer.sample_bins``. Other devices (CUDA) keep the tensor code, which is fast there.
"""

from __future__ import annotations

import numba
import numpy as np

from indexer.kernel_ops import NAN16, any_set, listed, prefetch, to_half_bits
from indexer.sample_bins import (
    LEVELS,
    bin_bars,
    fine_bin,
    grow,
    key_level,
    largest_slot,
    level_floor,
    open_from,
    raise_ceiling,
    unit_levels,
)

_FLOOR_GROUPS = 4  # groups of rows per top-k slot in a first batch's floor


class TopKArrays:
    """A top-k state as numpy views: ``values``/``tokens`` [U, k], ``windows`` [U, k, W]
    (float32) holding positions ``-before .. W - before - 1`` around each token."""

    def __init__(self, values, tokens, windows, before):
        self.values, self.tokens, self.windows, self.before = values, tokens, windows, before


class IntervalArrays:
    """An interval state as numpy views (see ``StreamingIntervals``): ceiling exponents
    ``exp`` and ``started`` [U], counts ``fresh`` [U, F+1] int32 and int64 totals
    ``counts`` [U, F+1] they are added into before int32 could overflow ([U, 0] until
    then), sample slots ``keys``/``values`` (a key names its token:
    ``indexer.batches.key_tokens``)
    [U, S+1, r] and ``windows`` [U, S+1, r, W] as float16 bit patterns (uint16).
    ``bars``/``slots`` [U, S+1] int64 are each sample bin's largest key and its slot
    (``refresh_bars``), which the kernels keep up to date as they change the keys."""

    def __init__(self, exp, started, counts, fresh, keys, values, windows, before, bars, slots):
        self.exp, self.started, self.counts, self.fresh = exp, started, counts, fresh
        self.keys, self.values, self.windows = keys, values, windows
        self.before, self.bars, self.slots = before, bars, slots


def eligible_rows(n_seq: int, seq_len: int, skip: int, ends=None) -> np.ndarray:
    """The rows ``b * seq_len + t`` of a [n_seq, seq_len] batch with ``skip <= t`` and
    ``t < ends[b]`` (sequence b's real length; None: every sequence fills the batch), in
    order: the positions that enter the statistics."""
    t = np.arange(skip, seq_len)
    rows = np.arange(n_seq)[:, None] * seq_len + t  # [n_seq, seq_len - skip]
    if ends is None:
        return rows.reshape(-1)
    return rows[t[None, :] < np.asarray(ends)[:, None]]  # row-major: still in order


def fold(
    acts, skip, token0, keys, topk: TopKArrays | None, iv: IntervalArrays | None, ends=None
) -> None:
    """Fold ``acts`` [B, T, U] float32 (tokens ``token0 + b*T + t``, keys ``keys`` [B*T])
    into a top-k and an interval state, either of which may be None. ``ends`` [B]: each
    sequence's real length (None: all T); positions at and after it (padding) are neither
    folded in nor shown in a window, as if the sequence ended there."""
    n_units = acts.shape[2]
    chunks = max(1, min(numba.get_num_threads(), n_units // 16))
    if topk is None:
        topk = TopKArrays(
            np.empty((n_units, 0), np.float32),
            np.empty((n_units, 0), np.int64),
            np.empty((n_units, 0, 0), np.float32),
            0,
        )
    if iv is None:
        s = np.empty((n_units, 0, 0), np.int64)
        iv = IntervalArrays(
            np.zeros(n_units, np.int64),
            np.zeros(n_units, np.bool_),
            np.empty((n_units, 0), np.int64),
            np.empty((n_units, 0), np.int32),
            s,
            np.empty((n_units, 0, 0), np.float32),
            np.empty((n_units, 0, 0, 0), np.uint16),
            0,
            np.empty((n_units, 1), np.int64),
            np.empty((n_units, 1), np.int64),
        )
        keys = np.empty(0, np.int64)
    n_seq, seq_len = acts.shape[0], acts.shape[1]
    rows = eligible_rows(n_seq, seq_len, skip, ends)
    ends = np.full(n_seq, seq_len, np.int64) if ends is None else np.asarray(ends, np.int64)
    by_key = False
    t_floor = np.full(n_units, -np.inf, np.float32)
    if keys.shape[0] and rows.shape[0] and not iv.started.any():
        # A state's first batch: every sample slot is empty, so rows go in key order (a
        # bin then takes its r smallest keys and is closed), and each ceiling is set once
        # from the batch's largest finite value, not raised bin-merge by bin-merge.
        k = topk.values.shape[1] if (topk.tokens < 0).all() else 0  # an empty top-k too
        top, floor = _first_batch_bounds(acts, rows, k, chunks)
        # No unit had started, so growing moves no key: the bars still hold.
        grow(top, iv.exp, iv.started, iv.counts, iv.fresh, iv.keys, iv.values, iv.windows)
        rows = rows[np.argsort(keys[rows], kind="stable")]
        by_key = True
        t_floor = floor
    # Dense blocks (MLP neurons: about half positive) count every value, non-positive ones
    # into the unused bin 0, rather than first listing the positive ones; sparse blocks
    # (SAE latents) list them. Judged on each sequence's last real row; either way is exact.
    last = acts[np.arange(n_seq), np.maximum(ends, 1) - 1]  # [B, U]
    dense = bool(np.count_nonzero(last > 0) * 4 > n_seq * n_units)
    bits = acts.view(np.uint32)
    _fold(
        acts, bits, rows, ends, token0, keys,
        topk.values, topk.tokens, topk.windows, topk.before, t_floor,
        iv.exp, iv.started, iv.counts, iv.fresh, iv.keys, iv.values, iv.windows,
        iv.before, iv.bars, iv.slots, by_key, dense, chunks,
    )  # fmt: skip


@numba.njit(cache=True, inline="always")
def _worst_slot(val, tok) -> int:
    """The worst top-k slot: lowest value, on a tie the later token; empty slots (value
    -inf, token -1) are worst of all."""
    w = 0
    for s in range(1, val.shape[0]):
        if val[s] < val[w] or (val[s] == val[w] and (tok[s] > tok[w] or tok[s] < 0)):
            w = s
    return w


@numba.njit(parallel=True, cache=True, nogil=True)
def _first_batch_bounds(acts, rows, k, chunks):  # pragma: no cover - compiled
    """Per unit, over the ``rows`` (``b * T + t``) of ``acts`` [B, T, U]: [U] the largest
    finite value (-inf if none), and [U] a floor no value of the rows' top ``k`` is below
    (-inf if ``k`` is 0 or there are fewer than ``k`` rows): the k-th largest of the maxima
    of ``_FLOOR_GROUPS * k`` disjoint groups of rows (NaN aside), since k of those maxima,
    values of k different rows, are at least that."""
    seq_len, n_units = acts.shape[1], acts.shape[2]
    top = np.full(n_units, -np.inf, np.float32)
    floor = np.full(n_units, -np.inf, np.float32)
    n_rows = rows.shape[0]
    groups = min(_FLOOR_GROUPS * k, n_rows) if 0 < k <= n_rows else 0
    width = (n_units + chunks - 1) // chunks
    for c in numba.prange(chunks):
        u0 = c * width
        u1 = min(n_units, u0 + width)
        part = top[u0:u1]
        group = np.full(u1 - u0, -np.inf, np.float32)
        # Each unit's k largest group maxima so far, descending: a group's maxima go in by
        # a compare-exchange down the list, vectorised over the units.
        best = np.full((k if groups else 0, u1 - u0), -np.inf, np.float32)
        for o in range(1, n_rows + 1):
            b = rows[o - 1] // seq_len
            row = acts[b, rows[o - 1] - b * seq_len, u0:u1]
            for i in range(row.shape[0]):  # vectorised
                v = row[i]
                x = v if v < np.inf else np.float32(-np.inf)  # NaN, +inf: skipped
                part[i] = x if x > part[i] else part[i]
                group[i] = v if v > group[i] else group[i]  # NaN skipped
            if groups and (o * groups) // n_rows != ((o - 1) * groups) // n_rows:
                for j in range(k):  # a group ends
                    kept = best[j]
                    for i in range(row.shape[0]):  # vectorised
                        x, y = group[i], kept[i]
                        kept[i] = x if x > y else y
                        group[i] = y if x > y else x
                group[:] = -np.inf
        if groups:
            floor[u0:u1] = best[k - 1]
    return top, floor


@numba.njit(cache=True, inline="always")
def _scan_row(row, t_bar, ceiling, scale, fine, flag, over, top, ties):  # pragma: no cover
    """Vectorised over a row: each value's fine bin; ``flag`` 1 where it may beat its top-k
    bar (a tie may where ``ties``: rows out of token order, the earlier token wins it);
    ``over`` 1 where it is above its ceiling. Flags only: a reduction in the loop would
    widen its lanes to 64 bits."""
    for i in range(row.shape[0]):
        v = row[i]
        flag[i] = (v >= t_bar[i]) if ties else (v > t_bar[i])
        over[i] = v > ceiling[i]
        fine[i] = fine_bin(v, scale[i], top)


@numba.njit(parallel=True, cache=True, nogil=True)
def _fold(
    acts, bits, rows, ends, token0, keys,
    t_values, t_tokens, t_windows, t_before, t_floor,
    exp, started, counts, fresh, s_keys, s_values, s_windows, s_before, bars, slots,
    by_key, dense, chunks,
):  # pragma: no cover - compiled  # fmt: skip
    """One pass over the ``rows`` (``b * T + t``, in that order: ascending, or ``by_key``
    ascending key) of ``acts`` [B, T, U], units split into ``chunks`` contiguous ranges,
    one per thread. Sequence b ends at ``ends[b]``: windows read no position past it.

    Top-k: ``t_values``/``t_tokens`` [U, k] keep each unit's k best (value, token) slots,
    unordered: higher value first, on a tie the earlier token. A value enters if it beats
    the worst kept one on that order; rows in token order never win a tie. Values below
    ``t_floor`` [U] (-inf but in an empty state's first batch) are not even tried.

    Intervals: a value v above its unit's ceiling 2^exp first raises it
    (``raise_ceiling``); then a positive v adds 1 to ``fresh`` [U, F+1] (int32, added
    into ``counts`` later) at fine bin ceil(v * F / 2^exp) (exact: a power-of-two scale);
    if ``dense``, the others add 1 to bin 0, which no reader uses.
    Sample bin s = ceil(fine / per) keeps in ``s_keys``/``s_values``
    [U, S+1, r] (unordered) the r entries with the smallest ``keys``; bin 0 takes none.
    ``bars``/``slots`` [U, S+1] (``bin_bars``) are kept up to date.

    A slot that takes a token takes its window (NaN off the sequence) at once.
    """
    n_seq, seq_len, n_units = acts.shape
    k = t_values.shape[1]
    t_width = t_windows.shape[2]
    with_counts = fresh.shape[1] > 0
    n_fine = fresh.shape[1] - 1
    top = np.float32(n_fine)
    n_sample = s_keys.shape[1]
    s_width = s_windows.shape[3]
    per = n_fine // (n_sample - 1) if with_counts else 1
    shift = 0
    while (1 << shift) < per:
        shift += 1
    fine_log2 = 0
    while (1 << fine_log2) < n_fine:
        fine_log2 += 1
    width = (n_units + chunks - 1) // chunks
    for c in numba.prange(chunks):
        u0 = c * width
        u1 = min(n_units, u0 + width)
        n = u1 - u0
        # Per unit the top-k slot an entry would replace, with its value and token, and
        # the bar a value must reach to be tried: that value, or the floor if higher.
        t_bar = np.full(n, np.inf, np.float32)
        t_low = np.full(n, np.inf, np.float32)
        t_tok = np.full(n, -1, np.int64)
        t_slot = np.zeros(n, np.int64)
        for i in range(n):
            if k:
                w = _worst_slot(t_values[u0 + i], t_tokens[u0 + i])
                t_slot[i] = w
                t_low[i] = t_values[u0 + i, w]
                t_bar[i] = max(t_low[i], t_floor[u0 + i])
                t_tok[i] = t_tokens[u0 + i, w]
        ceiling = np.full(n, np.inf, np.float32)  # 2^exp; 0 before the first positive
        scale = np.zeros(n, np.float32)  # F / 2^exp, a power of two
        opens = np.zeros((LEVELS, n), np.int32)
        if with_counts:
            for i in range(n):
                unit_levels(i, u0 + i, exp, started, bars, ceiling, scale, opens, fine_log2,
                             per)  # fmt: skip
        fine = np.zeros(n, np.int32)
        # A row's units that may beat their top-k bar, then those offered its key, flagged
        # one byte each and listed in ``found`` (``listed``; all padded to whole words).
        found = np.zeros((n + 7) // 8 * 8, np.int32)
        flag = np.zeros((n + 7) // 8 * 8, np.uint8)
        flag_words = flag.view(np.uint64)
        over = np.zeros((n + 7) // 8 * 8, np.uint8)
        over_words = over.view(np.uint64)
        slot_windows = s_windows.reshape(n_units * n_sample * s_keys.shape[2], s_width)
        taken = np.zeros(n, np.int64)  # a row's accepted sample slots (rows of slot_windows)
        flat_counts = fresh.reshape(-1)
        count_row = np.uint64(fresh.shape[1])
        for o in range(rows.shape[0]):
            b = rows[o] // seq_len
            t = rows[o] - b * seq_len
            row = acts[b, t, u0:u1]
            token = token0 + rows[o]
            if by_key:  # (a constant in each call: the loop stays vectorised)
                _scan_row(row, t_bar, ceiling, scale, fine, flag, over, top, True)
            else:
                _scan_row(row, t_bar, ceiling, scale, fine, flag, over, top, False)
            if any_set(over_words):
                for i in range(n):
                    if ceiling[i] < row[i] < np.inf:  # infinities: the top bin
                        u = u0 + i
                        raise_ceiling(u, row[i], exp, started, counts, fresh, s_keys,
                                      s_values, s_windows)  # fmt: skip
                        bin_bars(u, s_keys, bars, slots)
                        unit_levels(i, u, exp, started, bars, ceiling, scale, opens,
                                     fine_log2, per)  # fmt: skip
                        fine[i] = fine_bin(row[i], scale[i], top)
            if any_set(flag_words):
                for j in range(listed(flag, flag_words, found)):
                    i = found[j]
                    if row[i] > t_low[i] or (by_key and row[i] == t_low[i] and token < t_tok[i]):
                        u = u0 + i
                        q = t_slot[i]
                        t_values[u, q] = row[i]
                        t_tokens[u, q] = token
                        for j in range(t_width):
                            at = t - t_before + j
                            inside = 0 <= at < ends[b]
                            t_windows[u, q, j] = acts[b, at, u] if inside else np.nan
                        q = _worst_slot(t_values[u], t_tokens[u])
                        t_slot[i] = q
                        t_low[i] = t_values[u, q]
                        t_bar[i] = max(t_low[i], t_floor[u])
                        t_tok[i] = t_tokens[u, q]
            if not with_counts:
                continue
            key = keys[rows[o]]
            level_opens = opens[key_level(key)]
            if dense:
                for i in range(n):
                    flat_counts[np.uint64(u0 + i) * count_row + np.uint64(fine[i])] += 1
                for i in range(n):
                    flag[i] = fine[i] > level_opens[i]
                m = listed(flag, flag_words, found)
            else:  # the positives, counted, then those offered the key
                for i in range(n):
                    flag[i] = fine[i] > 0
                m = listed(flag, flag_words, found)
                offered = 0
                for j in range(m):
                    i = found[j]
                    flat_counts[np.uint64(u0 + i) * count_row + np.uint64(fine[i])] += 1
                    found[offered] = i
                    offered += fine[i] > level_opens[i]
                m = offered
            # The accepted entries: slots first (their cache lines fetched ahead, as the
            # state is far bigger than the caches, so the misses overlap), then windows
            # row by row (each row of the window read once for all of them).
            accepted = 0
            for j in range(m):
                i = found[j]
                u = u0 + i
                s = (fine[i] + per - 1) >> shift
                if key < bars[u, s]:
                    found[accepted] = i
                    q = slots[u, s]
                    taken[accepted] = (u * n_sample + s) * s_keys.shape[2] + q
                    prefetch(s_keys, u, s, q)
                    prefetch(s_values, u, s, q)
                    prefetch(s_windows, u, s, q)
                    accepted += 1
            for jj in range(s_width if accepted else 0):
                at = t - s_before + jj
                if 0 <= at < ends[b]:
                    window_row = bits[b, at, u0:u1]
                    for j in range(accepted):
                        slot_windows[taken[j], jj] = to_half_bits(window_row[found[j]])
                else:
                    for j in range(accepted):
                        slot_windows[taken[j], jj] = NAN16
            for j in range(accepted):
                i = found[j]
                u = u0 + i
                s = (fine[i] + per - 1) >> shift
                q = slots[u, s]
                s_keys[u, s, q] = key
                s_values[u, s, q] = row[i]
                q = largest_slot(s_keys[u, s])
                slots[u, s] = q
                bar = s_keys[u, s, q]
                bars[u, s] = bar
                if by_key:  # bins fill and close fast: skip them at once
                    for lv2 in range(LEVELS):
                        if bar <= level_floor(lv2) and opens[lv2, i] == (s - 1) * per:
                            open_from(s + 1, lv2, i, u, bars, opens, per)
