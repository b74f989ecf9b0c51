"""Pure tensor core of the indexer: streaming per-unit statistics.

No model, no database, no I/O: tensors in, tensors out, so the maths is
property-testable against brute force. Every function is vectorised over units;
nothing loops per unit.

Shapes: ``B`` sequences per batch, ``T`` positions per sequence, ``U`` units,
``k`` top examples kept per unit, ``W`` positions in a context window.
A token's global index is ``sequence_id * T + position``.

Eligible positions. Every statistic sees exactly the positions t of sequence b with
``skip_first <= t < lengths[b]``: the first ``skip_first`` (the attention sink) are left
out, and so is the right padding of a sequence shorter than T (``lengths``, each
sequence's real tokens; None when all are full). Context windows end where the sequence's
real tokens do: a padded position shows as NaN, like one past T. The tensor code and the
compiled kernels take the same rows (``kernels.eligible_rows``), so they stay equal.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

from indexer import kernels
from indexer.intervals import (
    StreamingIntervals,
    as_array,
    batch_keys,
    read_windows,
    real_lengths,
    use_compiled,
)


@dataclass(frozen=True)
class TopKResult:
    """Final top-k of a stream, sorted by value, highest first."""

    values: torch.Tensor
    """[k, U] activation values; ``-inf`` where fewer than k tokens were seen."""
    tokens: torch.Tensor
    """[k, U] global token index (``sequence_id * T + position``); -1 where empty."""
    windows: torch.Tensor
    """[k, U, W] the unit's values at positions ``position - before .. position + after``
    of the same sequence; NaN where the window runs off the sequence."""


class StreamingTopK:
    """Keeps each unit's k largest activations, and their context windows, over a
    stream of batches, in memory that does not grow with the stream.

    Ties rank the earlier token first, so the result is one total order whatever the
    batching. ``skip_first`` positions of every sequence never enter the top-k
    (attention-sink maxima sit at position 0) but still appear inside other tokens'
    windows; padding neither enters nor appears. On a CPU a compiled kernel
    (``indexer.kernels``) folds each batch in one pass; elsewhere tensor ops do, with
    ``backend="torch"`` to force them.
    """

    def __init__(
        self,
        n_units: int,
        k: int,
        *,
        before: int,
        after: int,
        skip_first: int = 0,
        device: torch.device | str = "cpu",
        backend: str | None = None,
    ) -> None:
        if k < 1:
            raise ValueError("k must be at least 1")
        self.k, self.before, self.after, self.skip_first = k, before, after, skip_first
        self.compiled = use_compiled(device, backend)
        width = before + 1 + after
        self._values = torch.full((n_units, k), -torch.inf, device=device)  # [U, k]
        self._tokens = torch.full((n_units, k), -1, dtype=torch.long, device=device)
        self._windows = torch.full((n_units, k, width), torch.nan, device=device)
        self._offsets = torch.arange(-before, after + 1, device=device)  # [W]

    def update(self, acts: torch.Tensor, first_sequence: int, lengths=None) -> None:
        """Fold in ``acts`` [B, T, U] for sequences ``first_sequence ..+B``, each of
        ``lengths`` [B] real positions (None: all T)."""
        n_seq, seq_len, n_units = acts.shape
        if seq_len <= self.skip_first:
            return
        ends = real_lengths(lengths, n_seq, seq_len)
        token0 = first_sequence * seq_len
        if self.compiled:
            kernels.fold(as_array(acts), self.skip_first, token0, None, self.arrays(), None, ends)
        else:
            self._torch_fold(acts, token0, ends)
            self._take_windows(acts, token0, ends)

    def arrays(self) -> kernels.TopKArrays:
        """The state as numpy views, for ``kernels.fold``."""
        return kernels.TopKArrays(
            self._values.numpy(), self._tokens.numpy(), self._windows.numpy(), self.before
        )

    def _take_windows(self, acts: torch.Tensor, token0: int, ends=None) -> None:
        """Read the windows of the slots filled from this batch."""
        seq_len = acts.shape[1]
        unit, slot = (self._tokens >= token0).nonzero(as_tuple=True)
        if unit.numel():
            local = self._tokens[unit, slot] - token0
            seq, pos = local // seq_len, local % seq_len
            self._windows[unit, slot] = read_windows(acts, seq, pos, unit, self._offsets, ends)

    def _torch_fold(self, acts: torch.Tensor, token0: int, ends=None) -> None:
        n_seq, seq_len, n_units = acts.shape
        flat = acts.reshape(n_seq * seq_len, n_units)  # a view: no copy
        eligible = torch.zeros(flat.shape[0], dtype=torch.bool)
        eligible[kernels.eligible_rows(n_seq, seq_len, self.skip_first, ends)] = True
        eligible = eligible.to(acts.device)
        # One top-k over the whole batch, wide enough that after dropping its ineligible
        # rows (the first skip_first of each sequence, and padding) at least k eligible
        # candidates remain.
        wide = min(self.k + flat.shape[0] - int(eligible.sum()), flat.shape[0])
        batch_values, row = flat.topk(wide, dim=0)  # [wide, U]
        ineligible = ~eligible[row]
        batch_values = batch_values.masked_fill(ineligible, -torch.inf).t().float()
        batch_tokens = (row + token0).masked_fill(ineligible, -1).t()
        values = torch.cat([self._values, batch_values], dim=1)  # [U, k + wide]
        tokens = torch.cat([self._tokens, batch_tokens], dim=1)
        values, tokens, order = _rank(values, tokens, with_order=True)
        keep = order[:, : self.k].clamp(max=self.k - 1)  # new entries: the caller reads them
        self._values = values[:, : self.k].contiguous()
        self._tokens = tokens[:, : self.k].contiguous()
        self._windows = self._windows.gather(1, keep.unsqueeze(-1).expand_as(self._windows))

    def state_dict(self) -> dict:
        """The streamed state, ranked, on the CPU: what a checkpoint saves and a merge adds."""
        res = self.result()
        return {
            "values": res.values.t().cpu().contiguous(),
            "tokens": res.tokens.t().cpu().contiguous(),
            "windows": res.windows.transpose(0, 1).cpu().contiguous(),
        }

    def load_state_dict(self, state: dict) -> None:
        self._values.copy_(state["values"])
        self._tokens.copy_(state["tokens"])
        self._windows.copy_(state["windows"])

    def result(self) -> TopKResult:
        values, tokens, order = _rank(self._values, self._tokens, with_order=True)
        windows = self._windows.gather(1, order.unsqueeze(-1).expand_as(self._windows))
        return TopKResult(values.t().contiguous(), tokens.t().contiguous(), windows.transpose(0, 1))


def merge_topk_states(a: dict, b: dict) -> dict:
    """The top-k of two disjoint streams together: the k best of both, in the one order."""
    k = a["values"].shape[1]
    values, tokens, order = _rank(
        torch.cat([a["values"], b["values"]], dim=1),
        torch.cat([a["tokens"], b["tokens"]], dim=1),
        with_order=True,
    )
    windows = torch.cat([a["windows"], b["windows"]], dim=1)
    windows = windows.gather(1, order[:, :k].unsqueeze(-1).expand(-1, -1, windows.shape[2]))
    return {
        "values": values[:, :k].contiguous(),
        "tokens": tokens[:, :k].contiguous(),
        "windows": windows,
    }


def fold_batch(
    topk: StreamingTopK,
    intervals: StreamingIntervals,
    acts: torch.Tensor,
    first_sequence: int,
    lengths=None,
) -> None:
    """``topk.update`` and ``intervals.update`` on the same batch, in one compiled pass
    over it when both run compiled with the same ``skip_first``."""
    same = topk.compiled and intervals.compiled and topk.skip_first == intervals.skip_first
    if not same:
        topk.update(acts, first_sequence, lengths)
        intervals.update(acts, first_sequence, lengths)
        return
    ends = real_lengths(lengths, acts.shape[0], acts.shape[1])
    if not intervals.prepare(acts, ends):
        return
    token0 = first_sequence * acts.shape[1]
    keys = batch_keys(token0, acts.shape[0] * acts.shape[1])
    arrays = topk.arrays(), intervals.arrays()
    kernels.fold(as_array(acts), topk.skip_first, token0, keys, *arrays, ends)


@functools.lru_cache(maxsize=4)
def sampled_rows(
    token0: int,
    n_seq: int,
    seq_len: int,
    skip: int,
    rate: float,
    ends: tuple[int, ...] | None = None,
) -> torch.Tensor:
    """The eligible rows ``b * seq_len + t`` (``skip`` <= t < ``ends[b]``) of a batch of
    tokens from ``token0`` whose key falls below ``rate``: the same for every source, so
    worked out once a batch (shared: read it, never write it)."""
    rows = kernels.eligible_rows(n_seq, seq_len, skip, ends)
    if rate < 1:
        keys = batch_keys(token0, n_seq * seq_len)[rows]
        rows = rows[keys.astype(np.float64) < rate * 2.0**63]
    return torch.from_numpy(rows)


def _block_width(n_units: int, blocks: int) -> int:
    return max(1, -(-n_units // blocks))


def _rank(values: torch.Tensor, tokens: torch.Tensor, *, with_order: bool = False):
    """Each row of (value, token) pairs [U, n] sorted by value, highest first, ties by
    token, lowest first (empty slots, token -1 and value -inf, sort last)."""
    by_token = tokens.masked_fill(tokens < 0, torch.iinfo(torch.long).max).argsort(
        dim=1, stable=True
    )
    by_value = values.gather(1, by_token).argsort(dim=1, descending=True, stable=True)
    order = by_token.gather(1, by_value)
    ranked = values.gather(1, order), tokens.gather(1, order)
    return (*ranked, order) if with_order else ranked


class StreamingCorrelation:
    """Pearson correlation between the units of one source, from streamed moments.

    Dense sources (MLP neurons) use the tokens whose key (indexer.intervals.token_keys)
    falls below ``rate``: a uniform sample of the corpus, the same tokens for every source
    whatever the batching. Sampled rows wait in ``pending`` until ``FLUSH_ROWS`` have come,
    then add their [n, U]^T @ [n, U] product in one go, and only its blocks on and above the
    diagonal (``BLOCKS`` x ``BLOCKS`` of them): the matrix is symmetric, so that is about
    5/8 of the work, in products long enough to run near the CPU's peak (at 64 rows a
    batch, the full product took 4.2 ms a layer; blocked in 256 rows, 1.6 ms a batch's
    share). ``cross_rows`` mirrors the rest.
    ``sparse`` sources (SAE latents, mostly zero) use every token: each token adds the
    products of its few active units only, and of those only the pairs on and above the
    diagonal, m(m+1)/2 per token for m active (on a CPU each is a scattered write into the
    [U, U] matrix, so half the pairs is nearly half the time).

    The moments are float64 sums of exact float32 products, so adding two streams' moments
    (a merge of shards) matches one stream's to float64 rounding. Memory is one [U, U]
    float64 matrix and the pending float32 rows (fewer than ``FLUSH_ROWS`` between batches).
    """

    FLUSH_ROWS = 256
    BLOCKS = 4

    def __init__(
        self,
        n_units: int,
        *,
        rate: float = 1.0,
        sparse: bool = False,
        skip_first: int = 0,
        device: torch.device | str = "cpu",
        backend: str | None = None,
    ):
        if not 0 < rate <= 1:
            raise ValueError("rate must be in (0, 1]")
        self.rate, self.sparse, self.skip_first = (1.0 if sparse else rate), sparse, skip_first
        self.compiled = use_compiled(device, backend)
        self._sum = torch.zeros(n_units, dtype=torch.float64, device=device)
        self._cross = torch.zeros(n_units, n_units, dtype=torch.float64, device=device)
        # Only the blocks on and above the diagonal are added to (``_flush``); sparse
        # sources' blocks are single entries (the upper triangle).
        self._block = 1 if sparse else _block_width(n_units, self.BLOCKS)
        self._pending = torch.zeros(0, n_units, device=device)
        self.n_tokens = 0

    def update(self, acts: torch.Tensor, first_sequence: int, lengths=None) -> None:
        """Fold in ``acts`` [B, T, U] for sequences ``first_sequence ..+B``, each of
        ``lengths`` [B] real positions (None: all T)."""
        n_seq, seq_len, n_units = acts.shape
        if seq_len <= self.skip_first:
            return
        ends = real_lengths(lengths, n_seq, seq_len)
        if self.sparse and self.compiled:
            eligible = kernels.eligible_rows(n_seq, seq_len, self.skip_first, ends)
            self.n_tokens += eligible.shape[0]
            chunks = max(1, min(torch.get_num_threads(), n_units // 16))
            kernels.sparse_moments(
                as_array(acts), eligible, self._sum.numpy(), self._cross.numpy(), chunks
            )
            return
        token0, skip = first_sequence * seq_len, self.skip_first
        key = None if ends is None else tuple(ends.tolist())
        rows = sampled_rows(token0, n_seq, seq_len, skip, self.rate, key).to(acts.device)
        if not rows.shape[0]:
            return
        picked = acts.reshape(-1, n_units).index_select(0, rows).float()  # [n, U]
        x = picked.double()
        self._sum += x.sum(0)
        self.n_tokens += x.shape[0]
        if not self.sparse:
            self._pending = torch.cat([self._pending, picked])
            if self._pending.shape[0] >= self.FLUSH_ROWS:
                self._flush()
            return
        active = int((x != 0).sum(1).max())
        if active == 0:
            return
        idx = x.abs().topk(active, dim=1).indices  # [n, m]: every non-zero, zeros pad
        vals = x.gather(1, idx)
        upper = idx.unsqueeze(2) <= idx.unsqueeze(1)  # the upper triangle, as compiled
        pairs = (idx.unsqueeze(2) * n_units + idx.unsqueeze(1))[upper]
        products = (vals.unsqueeze(2) * vals.unsqueeze(1))[upper]
        self._cross.view(-1).index_add_(0, pairs, products)

    def _flush(self) -> None:
        """Add the pending rows' products to the blocks on and above the diagonal."""
        x, block = self._pending.double(), self._block
        self._pending = self._pending[:0]
        for lo in range(0, x.shape[1], block):
            hi = lo + block
            self._cross[lo:hi, lo:].addmm_(x[:, lo:hi].t(), x[:, lo:])

    def cross_rows(self, lo: int, hi: int) -> torch.Tensor:
        """Rows ``lo:hi`` of the symmetric [U, U] float64 sum of products (pending rows
        added in first)."""
        if self._pending.shape[0]:
            self._flush()
        block = torch.arange(self._cross.shape[0], device=self._cross.device) // self._block
        below = block[None, :] < block[lo:hi, None]  # kept at the mirrored entry
        return torch.where(below, self._cross[:, lo:hi].t(), self._cross[lo:hi])

    def state_dict(self) -> dict:
        """The moments, on the CPU (on a CPU the live tensors: save or copy them before
        the next update). ``cross`` holds the blocks on and above the diagonal only
        (single entries for sparse sources), and ``pending`` the rows not yet added in."""
        return {
            "sum": self._sum.cpu(),
            "cross": self._cross.cpu(),
            "pending": self._pending.cpu(),
            "n_tokens": self.n_tokens,
        }

    def load_state_dict(self, state: dict) -> None:
        self._sum.copy_(state["sum"])
        self._cross.copy_(state["cross"])
        pending = state.get("pending")  # absent from checkpoints before pending rows
        self._pending = self._pending[:0] if pending is None else pending.to(self._sum.device)
        self.n_tokens = int(state["n_tokens"])

    @staticmethod
    def merge_states(a: dict, b: dict) -> dict:
        """Moments of two disjoint streams together: sums add (to float64 rounding), and
        pending rows join (added in later, like any other)."""
        return {
            "sum": a["sum"] + b["sum"],
            "cross": a["cross"] + b["cross"],
            "pending": torch.cat([a["pending"], b["pending"]]),
            "n_tokens": a["n_tokens"] + b["n_tokens"],
        }

    def top(self, k: int, *, rows: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
        """Each unit's ``k`` most correlated other units: ([U, k] indices, [U, k] r).
        r is NaN where fewer remain (units constant on the sample have no correlation).
        Computed ``rows`` units at a time: an SAE's full [U, U] float64 temporaries would
        take GBs."""
        n = max(self.n_tokens, 1)
        n_units = self._sum.shape[0]
        if self._pending.shape[0]:
            self._flush()
        mean = self._sum / n
        std = (self._cross.diagonal() / n - mean * mean).clamp(min=0).sqrt()
        usable = (std > 1e-12 * std.max().clamp(min=1e-30)) if std.numel() else std > 0
        k = min(k, max(n_units - 1, 0))
        indices, values = [], []
        for lo in range(0, n_units, rows):
            hi = min(n_units, lo + rows)
            cov = self.cross_rows(lo, hi) / n - torch.outer(mean[lo:hi], mean)
            corr = cov / torch.outer(std[lo:hi], std)
            corr = corr.masked_fill(~(usable[lo:hi, None] & usable[None, :]), -torch.inf)
            own = torch.arange(hi - lo, device=corr.device)
            corr[own, own + lo] = -torch.inf
            v, i = corr.topk(k, dim=1)
            indices.append(i)
            values.append(v.clamp(-1, 1).masked_fill(v == -torch.inf, torch.nan))
        if not indices:
            return torch.zeros(0, k, dtype=torch.long), torch.zeros(0, k)
        return torch.cat(indices), torch.cat(values).float()
