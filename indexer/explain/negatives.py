"""Windows where a unit does not fire, for the detection scorer: drawn at random from the
corpus, and as hard negatives from the top examples of its correlated and decoder
neighbours (text like its own, where it stays silent).

The index stores a unit's activations only around its own examples, so whether it fires
on a candidate window is measured: one forward pass over the candidate sequences per
chunk of units, read exactly as the indexer reads them (``spyglass.sources.Source``).
"""

from __future__ import annotations

import numpy as np
import torch

from indexer.explain.windows import Window
from spyglass.model import Model
from spyglass.sources import Source

BATCH = 16
"""Sequences per forward pass."""


def source_for(row, model: Model) -> Source:
    """The indexed source ``row`` (a ``storage.SourceRow``), its SAE or transcoder loaded
    for latents."""
    from spyglass.sources import load_unit_model

    if row.kind in ("sae", "transcoder"):
        if not row.sae:
            raise ValueError(f"source {row.name!r} records no folder to load its latents from")
        loaded = load_unit_model(row.sae, model)
        return Source(row.name, row.kind, row.layer, row.hook, row.n_units, loaded, row.sae)
    return Source(row.name, row.kind, row.layer, row.hook, row.n_units)


class Recompute:
    """The activations of some units of one source on stored sequences."""

    def __init__(self, model: Model, source: Source, skip_first: int, seqs: dict):
        self.model = model
        self.source = source
        self.skip_first = skip_first
        self.seqs = seqs
        self._acts: dict[int, np.ndarray] = {}
        self._units: list[int] = []

    def run(self, seq_ids: set[int], units: list[int]) -> None:
        """Measure ``units`` on ``seq_ids`` (forgetting what was measured before)."""
        self._units = list(units)
        self._acts = {}
        cols = torch.tensor(self._units, dtype=torch.long)
        order = sorted(seq_ids)
        for i in range(0, len(order), BATCH):
            batch = order[i : i + BATCH]
            width = max(len(self.seqs[s]) for s in batch)
            ids, lengths = self.model.pad_batch([self.seqs[s].tolist() for s in batch], width)
            act = self.model.activations(ids, [self.source.hook])[self.source.hook]
            for lo, block in self.source.unit_blocks(act, self.skip_first, lengths):
                picked = block[..., cols.to(block.device)].float().cpu().numpy()
                for j in range(block.shape[0]):
                    n = int(lengths[lo + j])
                    out = picked[j, :n].copy()
                    out[: self.skip_first] = np.nan  # never part of a unit's statistics
                    self._acts[batch[lo + j]] = out

    def window(self, unit: int, seq: int, start: int, length: int) -> Window:
        """The unit's activations on ``length`` tokens of ``seq`` from ``start``."""
        acts = self._acts[seq][start : start + length, self._units.index(unit)]
        tokens = self.seqs[seq][start : start + length]
        known = np.nan_to_num(acts, nan=-np.inf)
        at = int(np.argmax(known)) if len(acts) else 0
        value = float(known[at]) if len(acts) and np.isfinite(known[at]) else 0.0
        return Window(tokens, acts, at, value, -1, True)


def random_candidates(
    seqs: dict[int, np.ndarray], count: int, length: int, skip_first: int, seed: int
) -> list[tuple[int, int, int]]:
    """``count`` (sequence, start, length) windows at random over the stored sequences."""
    rng = np.random.default_rng(seed)
    ids = np.array(sorted(seqs))
    out = []
    for s in rng.choice(ids, size=count):
        n = len(seqs[int(s)])
        if n <= skip_first:
            continue
        w = min(length, n - skip_first)
        start = int(rng.integers(skip_first, n - w + 1))
        out.append((int(s), start, w))
    return out


def silent(
    recompute: Recompute,
    unit: int,
    candidates: list[tuple[int, int, int]],
    threshold: float,
    want: int,
) -> list[Window]:
    """Up to ``want`` of the candidate windows on which ``unit`` stays below
    ``threshold`` (no window twice)."""
    out, seen = [], set()
    for seq, start, length in candidates:
        if (seq, start) in seen:
            continue
        w = recompute.window(unit, seq, start, length)
        if len(w.acts) and w.value < threshold:
            out.append(w)
            seen.add((seq, start))
            if len(out) == want:
                break
    return out
