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

from dataclasses import dataclass

import torch

from indexer import kernels
from indexer.batches import as_array, batch_keys, read_windows, real_lengths, use_compiled
from indexer.intervals import StreamingIntervals


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
        windows: bool = True,
        device: torch.device | str = "cpu",
        backend: str | None = None,
    ) -> None:
        if k < 1:
            raise ValueError("k must be at least 1")
        self.k, self.before, self.after, self.skip_first = k, before, after, skip_first
        self.compiled = use_compiled(device, backend)
        # Without windows (a sparse source: ``indexer.activation_log``) slots hold tokens.
        width = before + 1 + after if windows else 0
        self._values = torch.full((n_units, k), -torch.inf, device=device)  # [U, k]
        self._tokens = torch.full((n_units, k), -1, dtype=torch.long, device=device)
        self._windows = torch.full((n_units, k, width), torch.nan, device=device)
        self._offsets = torch.arange(-before, width - before, device=device)  # [W]

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
        """The streamed state, ranked, on the CPU: what a checkpoint saves and a merge adds.
        On a CPU these are the live tensors, ranked in place: save or copy them before the
        next update."""
        for lo in range(0, self._values.shape[0], 4096):
            values, tokens = self._values[lo : lo + 4096], self._tokens[lo : lo + 4096]
            values_, tokens_, order = _rank(values, tokens, with_order=True)
            windows = self._windows[lo : lo + 4096]
            windows.copy_(windows.gather(1, order.unsqueeze(-1).expand_as(windows)))
            values.copy_(values_)
            tokens.copy_(tokens_)
        return {
            "values": self._values.cpu(),
            "tokens": self._tokens.cpu(),
            "windows": self._windows.cpu(),
        }

    def load_state_dict(self, state: dict) -> None:
        self._values.copy_(state["values"])
        self._tokens.copy_(state["tokens"])
        self._windows.copy_(state["windows"])

    @staticmethod
    def state_result(state: dict, lo: int = 0, hi: int | None = None) -> TopKResult:
        """Units ``lo:hi`` of a ranked state (a ``state_dict()``, or a merge of them)."""
        return TopKResult(
            state["values"][lo:hi].t().contiguous(),
            state["tokens"][lo:hi].t().contiguous(),
            state["windows"][lo:hi].transpose(0, 1),
        )

    @staticmethod
    def merge_states(a: dict, b: dict) -> dict:
        return merge_topk_states(a, b)

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
