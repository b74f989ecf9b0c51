"""Pure tensor core of the indexer: streaming per-unit statistics.

No model, no database, no I/O: tensors in, tensors out, so the maths is
property-testable against brute force. Every function is vectorised over units;
nothing loops per unit.

Shapes: ``B`` sequences per batch, ``T`` positions per sequence, ``U`` units,
``k`` top examples kept per unit, ``W`` positions in a context window.
A token's global index is ``sequence_id * T + position``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from indexer.intervals import token_keys


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

    ``skip_first`` positions of every sequence never enter the top-k (attention-sink
    maxima sit at position 0) but still appear inside other tokens' windows.
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
    ) -> None:
        if k < 1:
            raise ValueError("k must be at least 1")
        self.k, self.before, self.after, self.skip_first = k, before, after, skip_first
        width = before + 1 + after
        self._values = torch.full((k, n_units), -torch.inf, device=device)
        self._tokens = torch.full((k, n_units), -1, dtype=torch.long, device=device)
        self._windows = torch.full((k, n_units, width), torch.nan, device=device)
        self._offsets = torch.arange(-before, after + 1, device=device)  # [W]

    def update(self, acts: torch.Tensor, first_sequence: int) -> None:
        """Fold in ``acts`` [B, T, U] for sequences ``first_sequence ..+B``."""
        n_seq, seq_len, n_units = acts.shape
        if seq_len <= self.skip_first:
            return
        flat = acts.reshape(n_seq * seq_len, n_units)  # a view: no copy
        # One top-k over the whole batch, wide enough that after dropping the at most
        # n_seq * skip_first ineligible rows at least k eligible candidates remain.
        wide = min(self.k + n_seq * self.skip_first, flat.shape[0])
        batch_values, row = flat.topk(wide, dim=0)  # [wide, U]
        batch_seq, batch_pos = row // seq_len, row % seq_len
        ineligible = batch_pos < self.skip_first
        batch_values = batch_values.masked_fill(ineligible, -torch.inf)
        batch_tokens = ((batch_seq + first_sequence) * seq_len + batch_pos).masked_fill(
            ineligible, -1
        )

        merged_values = torch.cat([self._values, batch_values])  # [k + wide, U]
        self._values, pick = merged_values.topk(self.k, dim=0)  # [k, U]
        self._tokens = torch.cat([self._tokens, batch_tokens]).gather(0, pick)
        kept = pick.clamp(max=self.k - 1)
        self._windows = self._windows.gather(
            0, kept.unsqueeze(-1).expand(-1, -1, self._windows.shape[-1])
        )
        # Only entries that came from this batch need their windows read from it.
        slot, unit = ((pick >= self.k) & (self._tokens >= 0)).nonzero(as_tuple=True)
        if slot.numel():
            row = pick[slot, unit] - self.k
            seq = batch_seq[row, unit]
            pos = batch_pos[row, unit].unsqueeze(1) + self._offsets  # [n, W]
            inside = (pos >= 0) & (pos < seq_len)
            vals = acts[seq.unsqueeze(1), pos.clamp(0, seq_len - 1), unit.unsqueeze(1)]
            self._windows[slot, unit] = torch.where(inside, vals.float(), torch.nan)

    def result(self) -> TopKResult:
        return TopKResult(self._values.clone(), self._tokens.clone(), self._windows.clone())


class StreamingCorrelation:
    """Pearson correlation between the units of one source, from streamed moments.

    Dense sources (MLP neurons) use the tokens whose key (indexer.intervals.token_keys)
    falls below ``rate``: a uniform sample of the corpus, the same tokens for every source
    whatever the batching, at the cost of one [n, U]^T @ [n, U] product per batch.
    ``sparse`` sources (SAE latents, mostly zero) use every token: each token adds the
    products of its few active units only, m^2 per token for m active.

    Memory is one [U, U] float32 matrix.
    """

    def __init__(
        self,
        n_units: int,
        *,
        rate: float = 1.0,
        sparse: bool = False,
        skip_first: int = 0,
        device: torch.device | str = "cpu",
    ):
        if not 0 < rate <= 1:
            raise ValueError("rate must be in (0, 1]")
        self.rate, self.sparse, self.skip_first = (1.0 if sparse else rate), sparse, skip_first
        self._sum = torch.zeros(n_units, dtype=torch.float64, device=device)
        self._cross = torch.zeros(n_units, n_units, device=device)
        self.n_tokens = 0

    def update(self, acts: torch.Tensor, first_sequence: int) -> None:
        n_seq, seq_len, n_units = acts.shape
        if seq_len <= self.skip_first:
            return
        rows = acts[:, self.skip_first :, :].reshape(-1, n_units)
        if self.rate < 1:
            positions = torch.arange(self.skip_first, seq_len, device=acts.device)
            seqs = torch.arange(n_seq, device=acts.device) + first_sequence
            tokens = (seqs.unsqueeze(1) * seq_len + positions).reshape(-1)
            picked = (token_keys(tokens).double() < self.rate * 2.0**63).nonzero().squeeze(1)
            rows = rows[picked]
        if not rows.shape[0]:
            return
        rows = rows.float()
        self._sum += rows.sum(0).double()
        self.n_tokens += rows.shape[0]
        if not self.sparse:
            self._cross.addmm_(rows.t(), rows)
            return
        active = int((rows != 0).sum(1).max())
        if active == 0:
            return
        idx = rows.abs().topk(active, dim=1).indices  # [n, m]: every non-zero, zeros pad
        vals = rows.gather(1, idx)
        pairs = (idx.unsqueeze(2) * n_units + idx.unsqueeze(1)).reshape(-1)
        self._cross.view(-1).index_add_(
            0, pairs, (vals.unsqueeze(2) * vals.unsqueeze(1)).reshape(-1)
        )

    def top(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Each unit's ``k`` most correlated other units: ([U, k] indices, [U, k] r).
        r is NaN where fewer remain (units constant on the sample have no correlation)."""
        n = max(self.n_tokens, 1)
        mean = self._sum / n
        cov = self._cross.double() / n - torch.outer(mean, mean)
        std = cov.diagonal().clamp(min=0).sqrt()
        corr = cov / torch.outer(std, std)
        usable = (std > 1e-12 * std.max().clamp(min=1e-30)) if std.numel() else std > 0
        corr = corr.masked_fill(~(usable.unsqueeze(0) & usable.unsqueeze(1)), -torch.inf)
        corr.fill_diagonal_(-torch.inf)
        k = min(k, max(corr.shape[0] - 1, 0))
        values, indices = corr.topk(k, dim=1)
        values = values.clamp(-1, 1).masked_fill(values == -torch.inf, torch.nan)
        return indices, values.float()
