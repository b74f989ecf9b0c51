"""Each unit's most correlated units from what ``indexer.correlation`` collected: dense
sources blockwise from their sampled rows (``dense_top``), sparse ones exactly from the
pairs that fire together (``sparse_top``), both in float64 sums, never [U, U] at once."""

from __future__ import annotations

import numba
import numpy as np
import torch

NEIGHBOUR_ROWS = 512
"""Units a side of the [rows, rows] float64 blocks of sums a dense source computes at a
time."""


def _moments(n: int, sums: torch.Tensor, squares: torch.Tensor):
    """Mean, standard deviation and whether each unit varies (float64 [U] each)."""
    n = max(n, 1)
    mean = sums / n
    std = (squares / n - mean * mean).clamp(min=0).sqrt()
    usable = (std > 1e-12 * std.max().clamp(min=1e-30)) if std.numel() else std > 0
    return mean, std, usable


def dense_top(x: torch.Tensor, k: int, *, rows: int = NEIGHBOUR_ROWS):
    """Top ``k`` Pearson r per column of ``x`` [n, U] (float32 values, float64 sums), in
    blocks of ``rows`` columns. The sums are symmetric: only blocks on and above the
    diagonal are computed, each cut to its top k both ways (a third less work at 3 blocks
    a side; the top k of a row is the top k of its blocks' top k)."""
    n, n_units = x.shape
    x = x.double()
    mean, std, usable = _moments(n, x.sum(0), (x * x).sum(0))
    best_v = torch.full((n_units, k), -torch.inf, dtype=torch.float64, device=x.device)
    best_i = torch.zeros((n_units, k), dtype=torch.long, device=x.device)

    def offer(lo: int, values: torch.Tensor, first: int) -> None:
        """Rows ``lo ..`` get the candidates ``values`` [b, m] of columns ``first ..``."""
        hi = lo + values.shape[0]
        v, i = values.topk(min(k, values.shape[1]), dim=1)
        both_v = torch.cat([best_v[lo:hi], v], dim=1)
        both_i = torch.cat([best_i[lo:hi], i + first], dim=1)
        top_v, at = both_v.topk(k, dim=1)
        best_v[lo:hi], best_i[lo:hi] = top_v, both_i.gather(1, at)

    starts = list(range(0, n_units, rows))
    for a in starts:
        for b in (s for s in starts if s >= a):
            ra, rb = slice(a, min(n_units, a + rows)), slice(b, min(n_units, b + rows))
            cov = (x[:, ra].t() @ x[:, rb]) / max(n, 1) - torch.outer(mean[ra], mean[rb])
            corr = cov / torch.outer(std[ra], std[rb])
            corr = corr.masked_fill(~(usable[ra, None] & usable[None, rb]), -torch.inf)
            if a == b:
                corr.fill_diagonal_(-torch.inf)
            offer(a, corr, b)
            if a != b:
                offer(b, corr.t(), a)
    values = best_v.clamp(-1, 1).masked_fill(best_v == -torch.inf, torch.nan)
    return best_i.cpu(), values.float().cpu()


def sparse_top(state: dict, n_units: int, k: int):
    """Top ``k`` Pearson r per unit from the non-zeros listed by token (CSR)."""
    counts = state["counts"].numpy().astype(np.int64)
    units = state["units"].numpy().astype(np.int64)
    values = state["values"].numpy().astype(np.float64)
    n = state["tokens"].shape[0]
    sums = np.bincount(units, weights=values, minlength=n_units)
    squares = np.bincount(units, weights=values * values, minlength=n_units)
    mean, std, usable = (
        t.numpy() for t in _moments(n, torch.from_numpy(sums), torch.from_numpy(squares))
    )
    if k == 0:
        return torch.zeros(n_units, 0, dtype=torch.long), torch.zeros(n_units, 0)
    ratio = np.where(usable, mean / np.where(usable, std, 1.0), 0.0)
    order = np.flatnonzero(usable)
    order = order[np.argsort(ratio[order], kind="stable")]  # ascending mean / std
    starts = np.concatenate([[0], np.cumsum(counts)])
    chunks = max(1, min(numba.get_num_threads(), n_units // 64))
    idx, r = _sparse_top(
        starts, units, values, n_units, max(n, 1), mean, std, usable, order, k, chunks
    )
    r = np.clip(r, -1.0, 1.0)
    return torch.from_numpy(idx), torch.from_numpy(r).float()


@numba.njit(parallel=True, cache=True, nogil=True)
def _sparse_top(
    starts, units, values, n_units, n, mean, std, usable, order, k, chunks
):  # pragma: no cover - compiled
    """Per unit i, the k units j of highest r = (S_ij / n - m_i m_j) / (s_i s_j), S_ij the
    sum over tokens of v_i v_j (``starts``/``units``/``values``: the non-zeros by token).

    S_ij is summed, token by token in order, over the tokens where i fires (a column
    list built first); the units it never fires with have S_ij = 0, so their r is
    -(m_i / s_i) (m_j / s_j), best first in ``order`` (usable units by ascending
    m_j / s_j, walked from the end that suits the sign of m_i) until it cannot beat the
    k-th best. Unusable units (no variance) take part on neither side."""
    n_entries = units.shape[0]
    n_rows = starts.shape[0] - 1
    # Columns: for each unit, its entries (token rows), in token order.
    col_starts = np.zeros(n_units + 1, np.int64)
    for e in range(n_entries):
        col_starts[units[e] + 1] += 1
    for u in range(n_units):
        col_starts[u + 1] += col_starts[u]
    fill = col_starts[:-1].copy()
    col_entry = np.empty(n_entries, np.int64)
    col_row = np.empty(n_entries, np.int64)
    for t in range(n_rows):
        for e in range(starts[t], starts[t + 1]):
            u = units[e]
            col_entry[fill[u]] = e
            col_row[fill[u]] = t
            fill[u] += 1
    out_idx = np.zeros((n_units, k), np.int64)
    out_r = np.full((n_units, k), np.nan)
    for c in numba.prange(chunks):
        acc = np.zeros(n_units)
        stamp = np.full(n_units, -1, np.int64)
        touched = np.empty(n_units, np.int64)
        best_r = np.empty(k)
        best_j = np.empty(k, np.int64)
        for i in range(c, n_units, chunks):
            if not usable[i]:
                continue
            n_touched = 0
            for p in range(col_starts[i], col_starts[i + 1]):
                vi = values[col_entry[p]]
                t = col_row[p]
                for e in range(starts[t], starts[t + 1]):
                    j = units[e]
                    if stamp[j] != i:
                        stamp[j] = i
                        acc[j] = 0.0
                        touched[n_touched] = j
                        n_touched += 1
                    acc[j] += vi * values[e]
            best_r[:] = -np.inf
            best_j[:] = -1
            for q in range(n_touched):
                j = touched[q]
                if j == i or not usable[j]:
                    continue
                r = (acc[j] / n - mean[i] * mean[j]) / (std[i] * std[j])
                _offer(best_r, best_j, r, j)
            # Units i never fires with: r falls monotonically along ``order``.
            a = mean[i] / std[i]
            m = order.shape[0]
            for q in range(m):
                j = order[q] if a >= 0 else order[m - 1 - q]
                if j == i or stamp[j] == i:
                    continue
                r = (0.0 - mean[i] * mean[j]) / (std[i] * std[j])
                if r <= best_r[k - 1] and best_j[k - 1] >= 0:
                    break
                _offer(best_r, best_j, r, j)
            for q in range(k):
                if best_j[q] >= 0:
                    out_idx[i, q] = best_j[q]
                    out_r[i, q] = best_r[q]
    return out_idx, out_r


@numba.njit(cache=True, inline="always")
def _offer(best_r, best_j, r, j):  # pragma: no cover - compiled
    """Insert (r, j) into the descending list ``best_r``/``best_j`` if it beats its last
    (on a tie, the lower unit first)."""
    k = best_r.shape[0]
    last = k - 1
    if best_j[last] >= 0 and (r < best_r[last] or (r == best_r[last] and j > best_j[last])):
        return
    q = last
    while q > 0 and (
        best_j[q - 1] < 0 or r > best_r[q - 1] or (r == best_r[q - 1] and j < best_j[q - 1])
    ):
        best_r[q] = best_r[q - 1]
        best_j[q] = best_j[q - 1]
        q -= 1
    best_r[q] = r
    best_j[q] = j
