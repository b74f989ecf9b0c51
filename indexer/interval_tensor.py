"""The tensor code of the interval state (``indexer.intervals.StreamingIntervals``): how a
batch folds in on any device, and the reference the compiled kernels are tested against.

Counts are one ``bincount`` over the batch. Sample offers are gathered per bin in key
order, ``KEY_CHUNK`` rows at a time, and merged into the bins ``FLUSH_PER_UNIT`` offers per
unit at a time; a cheap cut from the counts so far drops most offers early, and a rising
ceiling merges bins (``_grow``), exactly as the kernel does.
"""

from __future__ import annotations

import torch

from indexer import kernels
from indexer.batches import read_windows, token_keys
from indexer.sample_bins import COUNT_BINS, COUNT_BINS_LOG2, EMPTY, SAMPLE_BINS, SAMPLE_BINS_LOG2

KEY_CHUNK = 256
"""Rows first offered to the sample bins at a time, in key order (then twice as many)."""
FLUSH_PER_UNIT = 4
"""Offers per unit gathered before they are merged and the cut is tightened."""


def ceiling_exponent(x: torch.Tensor) -> torch.Tensor:
    """e with 2^(e-1) < x <= 2^e, for x > 0 (exact, via frexp)."""
    mantissa, exponent = torch.frexp(x)
    return (exponent - (mantissa == 0.5).to(exponent.dtype)).long()


class TensorFold:
    """``StreamingIntervals``' tensor path: its state's tensors live on the instance."""

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
            self._accept(acts, *offers, keys, order, eligible, ends)

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

    def _accept(self, acts, row, unit, sbin, values, keys, order, eligible, ends) -> None:
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
        flat_values = self._values.view(-1, r)
        flat_windows = self._windows.view(flat_keys.shape[0], r, width)
        new_keys = torch.full((n, r), EMPTY, dtype=torch.long, device=keys.device)
        new_values = torch.zeros(n, r, device=keys.device)
        new_windows = torch.full(
            (n, r, width), torch.nan, dtype=flat_windows.dtype, device=keys.device
        )
        new_keys[slot_row, rank] = keys[row]
        new_values[slot_row, rank] = values[pick]
        new_windows[slot_row, rank] = read_windows(
            acts, seq_in_batch, pos, unit, self._offsets, ends
        ).to(flat_windows.dtype)

        both_keys = torch.cat([flat_keys.index_select(0, touched), new_keys], dim=1)  # [n, 2r]
        best = both_keys.argsort(dim=1)[:, :r]  # stable enough: keys are distinct per token
        flat_keys.index_copy_(0, touched, both_keys.gather(1, best))
        both = torch.cat([flat_values.index_select(0, touched), new_values], dim=1)
        flat_values.index_copy_(0, touched, both.gather(1, best))
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
            values=self._values[units, 1:].reshape(-1),
            windows=self._windows[units, 1:].reshape(keys.shape[0], self._windows.shape[-1]),
            clear=(units.unsqueeze(1) * (SAMPLE_BINS + 1) + sample_bins).reshape(-1),
        )

    def _regroup(
        self,
        *,
        groups: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        windows: torch.Tensor,
        clear: torch.Tensor,
    ) -> None:
        """Empty the bins ``clear`` and refill them from their own entries, given with new
        flat bin ids ``groups`` (unit * bins + bin): each keeps its ``per_bin`` smallest
        keys. ``windows`` [n, W] belong to the entries."""
        r = self.per_bin
        flat_keys = self._keys.view(-1, r)
        flat_values = self._values.view(-1, r)
        flat_windows = self._windows.view(flat_keys.shape[0], r, self._windows.shape[-1])
        by_key = keys.argsort(stable=True)
        order = by_key[groups[by_key].argsort(stable=True)]
        sorted_groups = groups[order]
        rank = torch.arange(order.shape[0], device=order.device) - torch.searchsorted(
            sorted_groups, sorted_groups
        )
        keep = (rank < r) & (keys[order] != EMPTY)
        pick, slot, group = order[keep], rank[keep], sorted_groups[keep]
        flat_keys[clear] = EMPTY
        flat_values[clear] = 0.0
        flat_windows[clear] = torch.nan
        flat_keys[group, slot] = keys[pick]
        flat_values[group, slot] = values[pick]
        flat_windows[group, slot] = windows[pick]
