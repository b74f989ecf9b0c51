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

import functools
from dataclasses import dataclass

import numpy as np
import torch

from indexer import kernels

COUNT_BINS = 512
SAMPLE_BINS = 64
SAMPLE_BEFORE, SAMPLE_AFTER = 10, 3
"""Positions an interval sample's window holds before and after its token."""
KEY_CHUNK = 256
"""Rows first offered to the sample bins at a time, in key order (then twice as many)."""
FLUSH_PER_UNIT = 4
"""Offers per unit gathered before they are merged and the cut is tightened."""
EMPTY = torch.iinfo(torch.int64).max
"""Key of an empty sample slot: sorts after every real key."""


def token_keys(tokens: torch.Tensor) -> torch.Tensor:
    """Keys in [0, 2^63 - 1) for global token indices: splitmix64, the same on every
    machine, so sampling is reproducible and shards agree."""
    x = tokens.detach().cpu().numpy().astype(np.uint64)
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    keys = (x >> np.uint64(1)).astype(np.int64)
    return torch.from_numpy(np.minimum(keys, EMPTY - 1)).to(tokens.device)


def use_compiled(device: torch.device | str, backend: str | None) -> bool:
    """Whether a streamer on ``device`` runs the compiled kernels (``indexer.kernels``):
    on a CPU unless ``backend="torch"`` asks for the tensor code."""
    if backend not in (None, "compiled", "torch"):
        raise ValueError(f"backend must be 'compiled' or 'torch', got {backend!r}")
    on_cpu = torch.device(device).type == "cpu"
    if backend == "compiled" and not on_cpu:
        raise ValueError("the compiled kernels run on the CPU only")
    return on_cpu and backend != "torch"


def real_lengths(lengths, n_seq: int, seq_len: int) -> np.ndarray | None:
    """Each sequence's real length [B] as int64 numpy (``lengths``: a tensor, an array or
    a list), or None where every sequence fills the batch (``lengths`` None or all
    ``seq_len``), so that unpadded batches keep the plain paths. Positions at and after a
    sequence's length are padding: they enter no statistic and show in no window."""
    if lengths is None:
        return None
    if isinstance(lengths, torch.Tensor):
        lengths = lengths.detach().cpu().numpy()
    ends = np.asarray(lengths, dtype=np.int64).reshape(-1)
    if ends.shape[0] != n_seq:
        raise ValueError(f"{ends.shape[0]} lengths for a batch of {n_seq} sequences")
    if ((ends < 0) | (ends > seq_len)).any():
        raise ValueError(f"lengths must be in 0..{seq_len}, got {ends.tolist()}")
    return None if (ends == seq_len).all() else ends


def as_array(acts: torch.Tensor) -> np.ndarray:
    """A float32, C-ordered numpy view of a CPU activation block (a copy only if needed)."""
    return acts.detach().to(torch.float32).contiguous().numpy()


@functools.lru_cache(maxsize=4)
def batch_keys(token0: int, n: int) -> np.ndarray:
    """The keys of tokens ``token0 .. token0 + n`` as a read-only numpy array, computed
    once per batch however many sources ask."""
    keys = token_keys(torch.arange(token0, token0 + n)).numpy()
    keys.flags.writeable = False
    return keys


def ceiling_exponent(x: torch.Tensor) -> torch.Tensor:
    """e with 2^(e-1) < x <= 2^e, for x > 0 (exact, via frexp)."""
    mantissa, exponent = torch.frexp(x)
    return (exponent - (mantissa == 0.5).to(exponent.dtype)).long()


def read_windows(
    acts: torch.Tensor,
    seq: torch.Tensor,
    pos: torch.Tensor,
    unit: torch.Tensor,
    offsets,
    ends: np.ndarray | None = None,
) -> torch.Tensor:
    """[n, W] values of ``unit`` at ``pos + offsets`` in sequence ``seq`` of ``acts``
    [B, T, U]; NaN off the sequence, which ends at ``ends[seq]`` (``real_lengths``)."""
    seq_len, n_units = acts.shape[1], acts.shape[2]
    at = pos.unsqueeze(1) + offsets
    if ends is None:
        inside = (at >= 0) & (at < seq_len)
    else:
        limit = torch.from_numpy(ends).to(acts.device)[seq].unsqueeze(1)
        inside = (at >= 0) & (at < limit)
    flat = (seq.unsqueeze(1) * seq_len + at.clamp(0, seq_len - 1)) * n_units + unit.unsqueeze(1)
    return torch.where(inside, acts.reshape(-1).take(flat).float(), torch.nan)


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
            counts=state["counts"][lo:hi, 1:].clone(),
            keys=state["keys"][lo:hi, 1:].clone(),
            tokens=state["tokens"][lo:hi, 1:].clone(),
            values=state["values"][lo:hi, 1:].clone(),
            windows=state["windows"][lo:hi, 1:].clone(),
            n_tokens=state["n_tokens"],
        )


class StreamingIntervals:
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
        device: torch.device | str = "cpu",
        backend: str | None = None,
    ) -> None:
        self.per_bin, self.before, self.after, self.skip_first = per_bin, before, after, skip_first
        self.n_units = n_units
        self.compiled = use_compiled(device, backend)
        bins = SAMPLE_BINS + 1  # bin 0 takes nothing (values <= 0)
        self._exp = torch.zeros(n_units, dtype=torch.long, device=device)
        self._started = torch.zeros(n_units, dtype=torch.bool, device=device)
        self._counts = torch.zeros(n_units, COUNT_BINS + 1, dtype=torch.long, device=device)
        # The compiled kernel counts into int32 (half the memory traffic), added into
        # _counts before any count is read and long before int32 could overflow.
        self._fresh = torch.zeros(
            (n_units, COUNT_BINS + 1) if self.compiled else (0, 0), dtype=torch.int32
        )
        self._fresh_tokens = 0
        # The compiled kernel's bars (each sample bin's largest key) and their slots: kept
        # up to date by the kernels, worked out again when the keys change outside them.
        bar_shape = (n_units, bins) if self.compiled else (0, 0)
        self._bars, self._slots = np.zeros(bar_shape, np.int64), np.zeros(bar_shape, np.int64)
        self._bars_stale = True
        self._keys = torch.full((n_units, bins, per_bin), EMPTY, dtype=torch.long, device=device)
        self._keys[:, 0, :] = torch.iinfo(torch.int64).min  # threshold no key is below
        self._tokens = torch.full((n_units, bins, per_bin), -1, dtype=torch.long, device=device)
        self._values = torch.zeros(n_units, bins, per_bin, device=device)
        width = before + 1 + after
        self._windows = torch.full(
            (n_units, bins, per_bin, width), torch.nan, dtype=torch.float16, device=device
        )
        self._offsets = torch.arange(-before, after + 1, device=device)
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
            kernels.refresh_bars(self._keys.numpy(), self._bars, self._slots)
            self._bars_stale = False
        return kernels.IntervalArrays(
            self._exp.numpy(),
            self._started.numpy(),
            self._counts.numpy(),
            self._fresh.numpy(),
            self._keys.numpy(),
            self._tokens.numpy(),
            self._values.numpy(),
            self._windows.numpy().view(np.uint16),
            self.before,
            self._bars,
            self._slots,
        )

    def _spill(self) -> None:
        """Add the kernel's int32 counts into the int64 totals."""
        if self.compiled:
            self._counts += self._fresh
            self._fresh.zero_()
            self._fresh_tokens = 0

    def _torch_fold(self, acts: torch.Tensor, first_sequence: int, ends=None) -> None:
        n_seq, seq_len, n_units = acts.shape
        skip = self.skip_first
        # The eligible rows b * T + t, in order: their index in ``rows`` is their rank here.
        eligible = torch.from_numpy(kernels.eligible_rows(n_seq, seq_len, skip, ends))
        eligible = eligible.to(acts.device)
        if ends is None:
            rows = acts[:, skip:, :].reshape(-1, n_units)  # [N, U]
        else:
            rows = acts.reshape(-1, n_units).index_select(0, eligible)
        ones = torch.ones(n_units, device=acts.device)
        scale = torch.ldexp(ones, COUNT_BINS_LOG2 - self._exp)  # exact: a power of two
        fine = (rows.float() * scale).ceil_().clamp_(0, COUNT_BINS)  # 0: not positive
        torch.maximum(fine, (rows > 0).float(), out=fine)  # positive, if far below 2^exp too
        offsets = torch.arange(n_units, device=acts.device) * (COUNT_BINS + 1)
        if self._counts.numel() <= 1 << 24:  # exact in float32: add there, count int32
            flat = fine.add_(offsets.float()).view(-1).int()
        else:
            flat = (fine.long() + offsets).view(-1)
        del fine
        self._counts += torch.bincount(flat, minlength=self._counts.numel()).view_as(self._counts)
        del flat

        # Sample candidates: entries whose key is below their sample bin's threshold. Rows go
        # in key order, a chunk at a time, so thresholds tighten as soon as bins fill (the
        # first batches would otherwise offer every positive entry). Per chunk, a cheap
        # first cut per unit: values above a level pass, and below it only keys under the
        # largest threshold there; then the exact test.
        global_tokens = eligible + first_sequence * seq_len  # [N]
        keys = token_keys(global_tokens)
        order = keys.argsort()
        rows, keys = rows.index_select(0, order), keys[order]
        sample_scale = torch.ldexp(ones, SAMPLE_BINS_LOG2 - self._exp)
        per = COUNT_BINS // SAMPLE_BINS
        bin_counts = self._counts[:, 1:].reshape(-1, SAMPLE_BINS, per).sum(2).double()
        cut = self._cheap_cut(bin_counts)
        pending: list[tuple[torch.Tensor, ...]] = []
        n_pending = 0

        def accept() -> None:
            offers = [torch.cat(parts) for parts in zip(*pending, strict=True)]
            self._accept(acts, *offers, keys, order, global_tokens, eligible, ends)

        lo, size = 0, KEY_CHUNK
        while lo < rows.shape[0]:
            offers = self._offers(rows[lo : lo + size], keys[lo : lo + size], cut, sample_scale)
            offers[0].add_(lo)
            pending.append(offers)
            n_pending += offers[0].shape[0]
            # While bins are filling, accept what came and tighten the cut before going on;
            # a stale cut and stale thresholds only let more through, never fewer. Chunks
            # double: the first ones do the tightening.
            if n_pending > FLUSH_PER_UNIT * n_units:
                accept()
                pending, n_pending = [], 0
                cut = self._cheap_cut(bin_counts)
            lo, size = lo + size, 2 * size
        if n_pending:
            accept()

    def _offers(self, rows, keys, cut, sample_scale) -> tuple[torch.Tensor, ...]:
        """(row, unit, bin, value) of the entries of ``rows`` [n, U] whose key is below
        their bin's threshold, ordered by key within each unit."""
        level, key_below = cut
        maybe = (rows > level) | (keys.unsqueeze(1) < key_below)
        row, unit = maybe.nonzero(as_tuple=True)  # row-major: key order within each unit
        n_units = rows.shape[1]
        values = rows.take(row * n_units + unit).float()
        sbin = (values * sample_scale[unit]).ceil_().clamp_(0, SAMPLE_BINS).long()
        sbin = torch.where(values > 0, sbin.clamp(min=1), sbin)  # a product may underflow
        thresholds = self._keys[:, :, -1].reshape(-1)  # [U * bins]
        exact = keys[row] < thresholds.take(unit * (SAMPLE_BINS + 1) + sbin)
        return row[exact], unit[exact], sbin[exact], values[exact]

    def _accept(
        self, acts, row, unit, sbin, values, keys, order, global_tokens, eligible, ends
    ) -> None:
        """Merge offers (rows of the key-sorted batch, in key order per unit) into the bins:
        each touched bin's kept entries and its first per_bin offers side by side, sorted
        by key, the first per_bin kept. ``eligible`` maps a batch row to ``b * T + t``."""
        seq_len, r = acts.shape[1], self.per_bin
        groups = unit * (SAMPLE_BINS + 1) + sbin
        by_group = groups.argsort(stable=True)  # stays in key order within a bin
        sorted_groups = groups[by_group]
        rank = torch.arange(by_group.shape[0], device=by_group.device)
        rank -= torch.searchsorted(sorted_groups, sorted_groups)
        keep = rank < r
        pick, rank = by_group[keep], rank[keep]
        touched, slot_row = torch.unique_consecutive(sorted_groups[keep], return_inverse=True)
        row, unit = row[pick], unit[pick]
        batch_row = order[row]
        seq_in_batch, pos = eligible[batch_row] // seq_len, eligible[batch_row] % seq_len

        n, width = touched.shape[0], self._windows.shape[-1]
        flat_keys = self._keys.view(-1, r)
        flat_tokens = self._tokens.view(-1, r)
        flat_values = self._values.view(-1, r)
        flat_windows = self._windows.view(-1, r, width)
        new_keys = torch.full((n, r), EMPTY, dtype=torch.long, device=keys.device)
        new_tokens = torch.full((n, r), -1, dtype=torch.long, device=keys.device)
        new_values = torch.zeros(n, r, device=keys.device)
        new_windows = torch.full(
            (n, r, width), torch.nan, dtype=flat_windows.dtype, device=keys.device
        )
        new_keys[slot_row, rank] = keys[row]
        new_tokens[slot_row, rank] = global_tokens[batch_row]
        new_values[slot_row, rank] = values[pick]
        new_windows[slot_row, rank] = read_windows(
            acts, seq_in_batch, pos, unit, self._offsets, ends
        ).to(flat_windows.dtype)

        both_keys = torch.cat([flat_keys.index_select(0, touched), new_keys], dim=1)  # [n, 2r]
        best = both_keys.argsort(dim=1)[:, :r]  # stable enough: keys are distinct per token
        flat_keys.index_copy_(0, touched, both_keys.gather(1, best))
        for flat, new in ((flat_tokens, new_tokens), (flat_values, new_values)):
            both = torch.cat([flat.index_select(0, touched), new], dim=1)
            flat.index_copy_(0, touched, both.gather(1, best))
        both_windows = torch.cat([flat_windows.index_select(0, touched), new_windows], dim=1)
        flat_windows.index_copy_(
            0, touched, both_windows.gather(1, best.unsqueeze(2).expand(-1, -1, width))
        )

    def _cheap_cut(self, bin_counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per unit, a value level and a key bound such that every sample candidate has a
        value above the level or a key below the bound: the split L (in sample bins) that
        lets the fewest entries through, judged by ``bin_counts`` [U, S] so far."""
        thresholds = self._keys[:, 1:, -1]  # [U, S]; EMPTY where a bin is not full
        low = torch.iinfo(torch.int64).min
        below = torch.cat(
            [torch.full_like(thresholds[:, :1], low), thresholds.cummax(1).values], dim=1
        )  # [U, S+1]: largest threshold in bins 1..L
        total = bin_counts.sum(1, keepdim=True).clamp(min=1)
        cum = torch.nn.functional.pad(bin_counts.cumsum(1), (1, 0)) / total  # [U, S+1]
        share_passed = below.double().clamp(min=0) / float(EMPTY)
        cost = (1 - cum) + share_passed * cum
        split = cost.argmin(1)  # [U]
        level = torch.ldexp(split.float(), self._exp - SAMPLE_BINS_LOG2)
        return level, below.gather(1, split.unsqueeze(1)).squeeze(1)

    def _grow(self, batch_max: torch.Tensor) -> None:
        """Raise ceilings to cover ``batch_max`` [U], merging bins 2^d to 1."""
        positive = batch_max > 0
        target = ceiling_exponent(batch_max.clamp(min=torch.finfo(torch.float32).tiny))
        first = positive & ~self._started
        self._exp[first] = target[first]
        self._started |= first
        grow = positive & self._started & (target > self._exp)
        if not grow.any():
            return
        self._spill()
        units = grow.nonzero().squeeze(1)
        d = (target[units] - self._exp[units]).clamp(max=COUNT_BINS_LOG2 + 1)  # [G]
        self._exp[units] = target[units]
        # Counts: old bin i (1-based) lands in new bin ceil(i / 2^d).
        old = torch.arange(1, COUNT_BINS + 1, device=d.device)
        new_bin = ((old + (1 << d).unsqueeze(1) - 1) >> d.unsqueeze(1)).clamp(max=COUNT_BINS)
        counts = torch.zeros_like(self._counts[units])
        counts.scatter_add_(1, new_bin, self._counts[units, 1:])
        self._counts[units] = counts
        # Samples: every kept entry of these units moves to bin ceil(b / 2^d); re-select.
        d_samples = d.clamp(max=SAMPLE_BINS_LOG2 + 1)
        sample_bins = torch.arange(1, SAMPLE_BINS + 1, device=d.device)
        moved = (sample_bins + (1 << d_samples).unsqueeze(1) - 1) >> d_samples.unsqueeze(1)
        moved = moved.clamp(max=SAMPLE_BINS)  # [G, S]
        r = self.per_bin
        keys = self._keys[units, 1:].reshape(-1)
        self._regroup(
            groups=(units.unsqueeze(1) * (SAMPLE_BINS + 1) + moved)
            .unsqueeze(2)
            .expand(-1, -1, r)
            .reshape(-1),
            keys=keys,
            tokens=self._tokens[units, 1:].reshape(-1),
            values=self._values[units, 1:].reshape(-1),
            windows=self._windows[units, 1:].reshape(keys.shape[0], -1),
            clear=(units.unsqueeze(1) * (SAMPLE_BINS + 1) + sample_bins).reshape(-1),
        )

    def _regroup(
        self,
        *,
        groups: torch.Tensor,
        keys: torch.Tensor,
        tokens: torch.Tensor,
        values: torch.Tensor,
        windows: torch.Tensor,
        clear: torch.Tensor,
    ) -> None:
        """Empty the bins ``clear`` and refill them from their own entries, given with new
        flat bin ids ``groups`` (unit * bins + bin): each keeps its ``per_bin`` smallest
        keys. ``windows`` [n, W] belong to the entries."""
        r = self.per_bin
        flat_keys = self._keys.view(-1, r)
        flat_tokens = self._tokens.view(-1, r)
        flat_values = self._values.view(-1, r)
        flat_windows = self._windows.view(-1, r, self._windows.shape[-1])
        by_key = keys.argsort(stable=True)
        order = by_key[groups[by_key].argsort(stable=True)]
        sorted_groups = groups[order]
        rank = torch.arange(order.shape[0], device=order.device) - torch.searchsorted(
            sorted_groups, sorted_groups
        )
        keep = (rank < r) & (keys[order] != EMPTY)
        pick, slot, group = order[keep], rank[keep], sorted_groups[keep]
        flat_keys[clear] = EMPTY
        flat_tokens[clear] = -1
        flat_values[clear] = 0.0
        flat_windows[clear] = torch.nan
        flat_keys[group, slot] = keys[pick]
        flat_tokens[group, slot] = tokens[pick]
        flat_values[group, slot] = values[pick]
        flat_windows[group, slot] = windows[pick]

    def _canonical(self, rows: int = 4096) -> None:
        """Counts added up and slots in key order (the compiled kernel leaves them
        unordered), in place, ``rows`` units at a time (no second copy of the state)."""
        self._spill()
        if self._sorted:
            return
        self._sorted = True
        for lo in range(0, self.n_units, rows):
            hi = min(self.n_units, lo + rows)
            order = self._keys[lo:hi].argsort(dim=2, stable=True)
            for name in ("_keys", "_tokens", "_values"):
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
        out = {name: getattr(self, "_" + name).cpu() for name in _STATE}
        out["n_tokens"] = self.n_tokens
        return out

    def load_state_dict(self, state: dict) -> None:
        for name in _STATE:
            getattr(self, "_" + name).copy_(state[name])
        self.n_tokens = int(state["n_tokens"])
        self._fresh.zero_()
        self._fresh_tokens = 0
        self._bars_stale = True
        self._sorted = False

    def state(self) -> IntervalState:
        """The whole state, copied."""
        self._canonical()
        state = {name: getattr(self, "_" + name) for name in _STATE}
        return IntervalState.from_state_dict({**state, "n_tokens": self.n_tokens})


_STATE = ("exp", "started", "counts", "keys", "tokens", "values", "windows")


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
        "counts": a["counts"] + b["counts"],
        "n_tokens": a["n_tokens"] + b["n_tokens"],
    }
    for name in ("keys", "tokens", "values"):
        out[name] = torch.cat([a[name], b[name]], dim=2).gather(2, order)
    windows = torch.cat([a["windows"], b["windows"]], dim=2)
    out["windows"] = windows.gather(2, order.unsqueeze(-1).expand(-1, -1, -1, windows.shape[3]))
    return out


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
    kernels.grow(
        target.numpy(),
        out["exp"].numpy(),
        out["started"].numpy(),
        out["counts"].numpy(),
        np.zeros(out["counts"].shape, np.int32),
        out["keys"].numpy(),
        out["tokens"].numpy(),
        out["values"].numpy(),
        out["windows"].numpy().view(np.uint16),
    )
    return out


COUNT_BINS_LOG2 = COUNT_BINS.bit_length() - 1
SAMPLE_BINS_LOG2 = SAMPLE_BINS.bit_length() - 1
assert 1 << COUNT_BINS_LOG2 == COUNT_BINS and 1 << SAMPLE_BINS_LOG2 == SAMPLE_BINS


# ---- the intervals, once the max is known


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
    st: IntervalState, max_act: torch.Tensor, n: int = 10, per_interval: int = 5
) -> Intervals:
    """Cut (0, max_act] into ``n`` grid-aligned intervals and draw each one's samples.

    ``max_act`` [U] is each unit's max over the same stream (from the top-k); units that
    were never positive get no interval (all counts 0, no samples).
    """
    if not 1 <= per_interval <= st.keys.shape[2]:
        raise ValueError(
            f"per_interval must be in 1..{st.keys.shape[2]} (the samples kept per bin)"
        )
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
    out_windows[grp, slot] = st.windows.reshape(-1, width)[pick].float()
    return Intervals(
        edges=edges,
        counts=counts,
        tokens=out_tokens.view(n_units, n, per_interval),
        values=out_values.view(n_units, n, per_interval),
        windows=out_windows.view(n_units, n, per_interval, width),
        keys=out_keys.view(n_units, n, per_interval),
    )
