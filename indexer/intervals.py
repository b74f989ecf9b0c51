"""Activation histograms and interval samples, streamed: a pure tensor core.

Counts. Each unit's positive activations are counted on ``COUNT_BINS`` equal bins over
(0, C], where the ceiling C is the smallest power of two at or above the unit's running
max. When a batch raises the max past C, C doubles d times and each new bin is the exact
sum of 2^d old ones, so the counts stay exact without a second pass. Scaling by a power
of two is exact in floating point, so a value's bin is exact too.

Samples. Every token gets a key, a hash of its global index shared by all units and
independent of the activations. Per unit and per sample bin (``SAMPLE_BINS`` coarser
bins, each a run of count bins) the ``per_bin`` entries with the smallest keys are kept
with their context windows. A bin holds every one of its entries whose key is below its
threshold (its largest kept key once full), and doubling merges bins exactly: the
smallest keys of a union are among the smallest keys of its parts. The state is the same
whatever the batching, and a merge of shards would be exact too.

Intervals. At the end, with the max M known, (0, M] is cut into ``n`` intervals whose
edges are the count-grid points nearest to k·M/n (the grid step C/COUNT_BINS is at most
M/256, so widths are equal to within that step). Counts per interval are exact. An
interval's samples come from the sample bins it overlaps. Below θ, the smallest
threshold among the bins it only partly covers, every one of its entries is known; a bin
wholly inside it keeps its own smallest keys, which is all the interval needs of it. The
``per_interval`` known entries with the smallest keys below θ are returned, so the result
is always the first j tokens of the interval in key order: the sample a brute-force pass
over every token would draw, cut at j <= per_interval. j falls short of per_interval
only when a bin the interval shares with a much denser neighbour has spent its slots on
the neighbour's side (on long-tailed synthetic data, about 1% of the samples).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from indexer import kernels, sample_bins
from indexer.batches import as_array, batch_keys, key_tokens, real_lengths, use_compiled
from indexer.interval_tensor import TensorFold
from indexer.sample_bins import COUNT_BINS, EMPTY, SAMPLE_BINS

__all__ = [
    "COUNT_BINS",
    "EMPTY",
    "SAMPLE_AFTER",
    "SAMPLE_BEFORE",
    "SAMPLE_BINS",
    "IntervalState",
    "StreamingIntervals",
    "merge_states",
]

SAMPLE_BEFORE, SAMPLE_AFTER = 10, 3
"""Positions an interval sample's window holds before and after its token."""


@dataclass(frozen=True)
class IntervalState:
    """The streamed state at the end of the corpus."""

    ceiling: torch.Tensor
    """[U] C: a power of two >= every value counted; 0 where no value was positive."""
    counts: torch.Tensor
    """[U, COUNT_BINS] positive activations in ((i-1)·C/COUNT_BINS, i·C/COUNT_BINS]."""
    keys: torch.Tensor
    """[U, SAMPLE_BINS, per_bin] kept keys per sample bin, ascending; EMPTY where unused."""
    tokens: torch.Tensor
    """[U, SAMPLE_BINS, per_bin] their global token indices (from the keys); -1 where
    unused."""
    values: torch.Tensor
    windows: torch.Tensor
    """[U, SAMPLE_BINS, per_bin, W] float16 windows; NaN off the sequence."""
    n_tokens: int
    """Tokens per unit seen (positions before ``skip_first`` and padding left out)."""

    @property
    def density(self) -> torch.Tensor:
        """[U] fraction of the tokens seen with a positive activation."""
        return (self.counts.sum(1).double() / max(self.n_tokens, 1)).float()

    @classmethod
    def from_state_dict(cls, state: dict, lo: int = 0, hi: int | None = None) -> IntervalState:
        """Units ``lo:hi`` of a ``StreamingIntervals.state_dict()`` (or a merge of them:
        slots in key order, counts added up), copied."""
        exp = state["exp"][lo:hi]
        ceiling = torch.where(
            state["started"][lo:hi],
            torch.ldexp(torch.ones_like(exp, dtype=torch.float64), exp),
            torch.zeros((), dtype=torch.float64, device=exp.device),
        )
        return cls(
            ceiling=ceiling,
            counts=state["counts"][lo:hi, 1:].long(),
            keys=state["keys"][lo:hi, 1:].clone(),
            tokens=key_tokens(state["keys"][lo:hi, 1:]),
            values=state["values"][lo:hi, 1:].clone(),
            windows=state["windows"][lo:hi, 1:].clone(),
            n_tokens=state["n_tokens"],
        )


class StreamingIntervals(TensorFold):
    """Exact fine-grained counts and per-bin bottom-key samples of each unit's positive
    activations, in memory that does not grow with the stream."""

    def __init__(
        self,
        n_units: int,
        *,
        per_bin: int = 5,
        before: int = SAMPLE_BEFORE,
        after: int = SAMPLE_AFTER,
        skip_first: int = 0,
        windows: bool = True,
        device: torch.device | str = "cpu",
        backend: str | None = None,
    ) -> None:
        self.per_bin, self.before, self.after, self.skip_first = per_bin, before, after, skip_first
        self.n_units = n_units
        self.compiled = use_compiled(device, backend)
        bins = SAMPLE_BINS + 1  # bin 0 takes nothing (values <= 0)
        self._exp = torch.zeros(n_units, dtype=torch.long, device=device)
        self._started = torch.zeros(n_units, dtype=torch.bool, device=device)
        # The compiled kernel counts into int32 (half the memory and its traffic), added
        # into int64 totals only should a run near 2^31 tokens (allocated then: ``_spill``).
        fine = COUNT_BINS + 1
        self._counts = torch.zeros(
            n_units, 0 if self.compiled else fine, dtype=torch.long, device=device
        )
        self._fresh = torch.zeros((n_units, fine) if self.compiled else (0, 0), dtype=torch.int32)
        self._fresh_tokens = 0
        # The compiled kernel's bars (each sample bin's largest key) and their slots: kept
        # up to date by the kernels, worked out again when the keys change outside them.
        bar_shape = (n_units, bins) if self.compiled else (0, 0)
        self._bars, self._slots = np.zeros(bar_shape, np.int64), np.zeros(bar_shape, np.int64)
        self._bars_stale = True
        self._keys = torch.full((n_units, bins, per_bin), EMPTY, dtype=torch.long, device=device)
        self._keys[:, 0, :] = torch.iinfo(torch.int64).min  # threshold no key is below
        self._values = torch.zeros(n_units, bins, per_bin, device=device)
        width = before + 1 + after if windows else 0  # none: ``indexer.activation_log``
        self._windows = torch.full(
            (n_units, bins, per_bin, width), torch.nan, dtype=torch.float16, device=device
        )
        self._offsets = torch.arange(-before, width - before, device=device)
        self.n_tokens = 0
        self._sorted = True  # slots in key order (``_canonical``)

    # ---- streaming

    def update(self, acts: torch.Tensor, first_sequence: int, lengths=None) -> None:
        """Fold in ``acts`` [B, T, U] for sequences ``first_sequence ..+B``, each of
        ``lengths`` [B] real positions (None: all T; see ``real_lengths``)."""
        ends = real_lengths(lengths, acts.shape[0], acts.shape[1])
        if not self.prepare(acts, ends):
            return
        if not self.compiled:
            self._torch_fold(acts, first_sequence, ends)
            return
        token0 = first_sequence * acts.shape[1]
        keys = batch_keys(token0, acts.shape[0] * acts.shape[1])
        kernels.fold(as_array(acts), self.skip_first, token0, keys, None, self.arrays(), ends)

    def prepare(self, acts: torch.Tensor, ends: np.ndarray | None = None) -> bool:
        """Count the batch's eligible tokens (``skip_first`` <= position < its sequence's
        end), and on the tensor path raise ceilings to their max (the compiled kernel does
        that itself); False if it has no eligible position."""
        n_seq, seq_len, n_units = acts.shape
        if seq_len <= self.skip_first:
            return False
        if ends is None:
            n = n_seq * (seq_len - self.skip_first)
        else:
            n = int(np.clip(ends - self.skip_first, 0, None).sum())
            if n == 0:
                return False
        self.n_tokens += n
        self._sorted = False
        if not self.compiled:
            if ends is None:
                rows = acts[:, self.skip_first :, :]
            else:
                eligible = kernels.eligible_rows(n_seq, seq_len, self.skip_first, ends)
                rows = acts.reshape(-1, n_units)[torch.from_numpy(eligible).to(acts.device)]
            top = rows.amax(dim=tuple(range(rows.dim() - 1)))
            if not torch.isfinite(top).all():  # ceilings cover finite values only (an
                # infinity counts in the top bin): a second pass only when one is there
                top = rows.nan_to_num(nan=0.0, posinf=0.0).amax(dim=tuple(range(rows.dim() - 1)))
            self._grow(top.float())
            return True
        if self._fresh_tokens + n >= 1 << 31:  # int32 counts could overflow
            self._spill()
        self._fresh_tokens += n
        return True

    def arrays(self) -> kernels.IntervalArrays:
        """The state as numpy views, for ``kernels.fold``."""
        if self._bars_stale:
            sample_bins.refresh_bars(self._keys.numpy(), self._bars, self._slots)
            self._bars_stale = False
        return kernels.IntervalArrays(
            self._exp.numpy(),
            self._started.numpy(),
            self._counts.numpy(),
            self._fresh.numpy(),
            self._keys.numpy(),
            self._values.numpy(),
            self._windows.numpy().view(np.uint16),
            self.before,
            self._bars,
            self._slots,
        )

    def _spill(self) -> None:
        """Add the kernel's int32 counts into the int64 totals (made on the first call)."""
        if self.compiled:
            if self._counts.shape[1] == 0:
                self._counts = torch.zeros(self._fresh.shape, dtype=torch.long)
            self._counts += self._fresh
            self._fresh.zero_()
            self._fresh_tokens = 0

    def _total_counts(self) -> torch.Tensor:
        """[U, F+1] counts: int32 (live) until a run passes 2^31 tokens, then int64."""
        if not self.compiled:
            return self._counts
        if self._counts.shape[1] == 0:
            return self._fresh
        self._spill()
        return self._counts

    def _canonical(self, rows: int = 4096) -> None:
        """Counts added up and slots in key order (the compiled kernel leaves them
        unordered), in place, ``rows`` units at a time (no second copy of the state)."""
        if self._sorted:
            return
        self._sorted = True
        for lo in range(0, self.n_units, rows):
            hi = min(self.n_units, lo + rows)
            order = self._keys[lo:hi].argsort(dim=2, stable=True)
            for name in ("_keys", "_values"):
                part = getattr(self, name)[lo:hi]
                part.copy_(part.gather(2, order))
            part = self._windows[lo:hi]
            part.copy_(part.gather(2, order.unsqueeze(-1).expand_as(part)))
        self._bars_stale = True  # the slots moved

    def state_dict(self) -> dict:
        """The whole streamed state, on the CPU: what a checkpoint saves and a merge adds.
        On a CPU these are the live tensors, not copies: save or copy them before the next
        update."""
        self._canonical()
        out = {name: getattr(self, "_" + name).cpu() for name in _STATE if name != "counts"}
        out["counts"] = self._total_counts().cpu()
        out["n_tokens"] = self.n_tokens
        return out

    def load_state_dict(self, state: dict) -> None:
        for name in _STATE:
            if name != "counts":
                getattr(self, "_" + name).copy_(state[name])
        counts = state["counts"]
        self.n_tokens = int(state["n_tokens"])
        self._fresh_tokens = 0
        if not self.compiled:
            self._counts.copy_(counts)
        elif counts.dtype == torch.int32:
            self._counts = self._counts[:, :0]
            self._fresh.copy_(counts)
            self._fresh_tokens = self.n_tokens
        else:
            self._counts = counts.clone()
            self._fresh.zero_()
        self._bars_stale = True
        self._sorted = False

    @staticmethod
    def merge_states(a: dict, b: dict) -> dict:
        return merge_states(a, b)

    def state(self) -> IntervalState:
        """The whole state, copied."""
        self._canonical()
        state = {name: getattr(self, "_" + name) for name in _STATE}
        state["counts"] = self._total_counts()
        return IntervalState.from_state_dict({**state, "n_tokens": self.n_tokens})


_STATE = ("exp", "started", "counts", "keys", "values", "windows")
"""A state's tensors (a sample's token is its key's: ``indexer.batches.key_tokens``)."""


def merge_states(a: dict, b: dict) -> dict:
    """The state of two disjoint streams (``state_dict``s) taken together, exactly as one
    stream of both would have left it: both grown to the larger ceiling (bins merge as
    they would have in the stream), counts added, and each sample bin keeping the
    ``per_bin`` smallest keys of the two."""
    a, b = _aligned(a, b), _aligned(b, a)
    r = a["keys"].shape[2]
    keys = torch.cat([a["keys"], b["keys"]], dim=2)
    order = keys.argsort(dim=2, stable=True)[:, :, :r]
    out = {
        "exp": a["exp"],
        "started": a["started"],
        "counts": _add_counts(a["counts"], b["counts"], a["n_tokens"] + b["n_tokens"]),
        "n_tokens": a["n_tokens"] + b["n_tokens"],
    }
    for name in ("keys", "values"):
        out[name] = torch.cat([a[name], b[name]], dim=2).gather(2, order)
    windows = torch.cat([a["windows"], b["windows"]], dim=2)
    out["windows"] = windows.gather(2, order.unsqueeze(-1).expand(-1, -1, -1, windows.shape[3]))
    return out


def _add_counts(a: torch.Tensor, b: torch.Tensor, n_tokens: int) -> torch.Tensor:
    """Counts of two streams added: int32 while their tokens stay below 2^31."""
    if n_tokens >= 1 << 31:
        a = a.long()
    return a + b


def _aligned(state: dict, other: dict) -> dict:
    """``state`` grown (on the CPU kernel) to the ceilings ``other`` requires."""
    started = state["started"] | other["started"]
    exp = torch.where(
        state["started"] & other["started"],
        torch.maximum(state["exp"], other["exp"]),
        torch.where(state["started"], state["exp"], other["exp"]),
    )
    target = torch.where(started, torch.ldexp(torch.ones(exp.shape), exp), 0.0).float()
    out = {name: state[name].clone() for name in _STATE}
    out["n_tokens"] = state["n_tokens"]
    sample_bins.grow(
        target.numpy(),
        out["exp"].numpy(),
        out["started"].numpy(),
        out["counts"].numpy(),
        np.zeros((out["counts"].shape[0], 0), np.int32),
        out["keys"].numpy(),
        out["values"].numpy(),
        out["windows"].numpy().view(np.uint16),
    )
    return out
