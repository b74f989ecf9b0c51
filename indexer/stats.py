"""Every source's streaming statistics, fed one batch at a time, and their merge.

Each statistic is a ``Statistic``: a streaming state over one source's units (or a slice of
them) that folds in a batch, saves and loads itself for checkpoints, and merges with the
state of a disjoint part of the corpus exactly as one pass over both would have left it.
``SourceStats`` holds one of each, by name; the checkpoint, the merges and the write
find them under that name.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import re
from pathlib import Path
from typing import Protocol

import torch

from indexer.activation_log import ActivationLog, keeps_log
from indexer.config import IndexConfig
from indexer.core import StreamingTopK, fold_batch
from indexer.correlation import StreamingCorrelation
from indexer.intervals import StreamingIntervals
from spyglass.model import Model
from spyglass.sources import Source


class Statistic(Protocol):
    """A streaming statistic of a source's units."""

    def update(self, acts: torch.Tensor, first_sequence: int, lengths=None) -> None:
        """Fold in ``acts`` [B, T, U] of sequences ``first_sequence ..+B``, each of
        ``lengths`` [B] real positions (None: all T)."""

    def state_dict(self) -> dict:
        """The state, on the CPU, for a checkpoint or a merge."""

    def load_state_dict(self, state: dict) -> None:
        """Resume from a ``state_dict()``."""

    @staticmethod
    def merge_states(a: dict, b: dict) -> dict:
        """The state of two disjoint parts of the corpus together."""


STATISTICS: dict[str, type] = {
    "topk": StreamingTopK,
    "intervals": StreamingIntervals,
    "correlation": StreamingCorrelation,
    "log": ActivationLog,
}
"""Every statistic's class by the name its state is saved under."""


def unit_range(n_units: int, units: tuple[int, int]) -> tuple[int, int]:
    """Slice ``units`` = (i, n) of a source's units: the i-th of n contiguous ranges."""
    i, n = units
    return i * n_units // n, (i + 1) * n_units // n


class SourceStats:
    """The streaming statistics of one source's units, or of the slice ``units`` = (i, n)
    of them (``unit_range``), read from the source's activations as columns lo:hi.

    A sparse source (``keeps_log``: an SAE's latents) keeps its examples' tokens without
    their windows, and logs its activations in ``folder`` (in memory if None) to read
    them back from at write time (``indexer.activation_log``)."""

    def __init__(
        self,
        source: Source,
        cfg: IndexConfig,
        device: torch.device,
        units: tuple[int, int] = (0, 1),
        folder: Path | None = None,
    ):
        skip = 0 if cfg.include_first_token else 1
        self.source, self.skip = source, skip
        self.lo, self.hi = unit_range(source.n_units, units)
        n_units = self.hi - self.lo
        sparse = keeps_log(source, cfg)
        self.topk = StreamingTopK(
            n_units,
            cfg.top_k,
            before=cfg.window_before,
            after=cfg.window_after,
            skip_first=skip,
            windows=not sparse,
            device=device,
        )
        self.intervals = StreamingIntervals(
            n_units,
            per_bin=cfg.interval_samples,
            skip_first=skip,
            windows=not sparse,
            device=device,
        )
        self.correlation = StreamingCorrelation(
            n_units,
            rate=cfg.correlation_rate,
            sparse=sparse,
            skip_first=skip,
            device=device,
        )
        self.log = ActivationLog(folder, log_name(source.name)) if sparse else None
        self.statistics: dict[str, Statistic] = {
            "topk": self.topk,
            "intervals": self.intervals,
            "correlation": self.correlation,
        }
        if self.log is not None:
            self.statistics["log"] = self.log

    def state_dict(self) -> dict:
        return {name: stat.state_dict() for name, stat in self.statistics.items()}

    def load_state_dict(self, state: dict) -> None:
        for name, stat in self.statistics.items():
            stat.load_state_dict(state[name])

    def update(
        self, hook_act: torch.Tensor, first_sequence: int, lengths: torch.Tensor | None = None
    ) -> None:  # [B, T, d], lengths [B]
        whole = (self.lo, self.hi) == (0, self.source.n_units)
        for lo, acts in self.source.unit_blocks(hook_act, self.skip, lengths):
            part = None if lengths is None else lengths[lo : lo + acts.shape[0]]
            if not whole:
                acts = acts[..., self.lo : self.hi]
            # Top-k and intervals in one compiled pass over the block; a sparse source's
            # non-zeros listed once, for its log and its correlations.
            fold_batch(self.topk, self.intervals, acts, first_sequence + lo, part)
            listed = None
            if self.log is not None:
                listed = self.log.update(acts, first_sequence + lo, part)
            self.correlation.update(acts, first_sequence + lo, part, listed=listed)


def log_name(source: str) -> str:
    """A source's activation log's file name stem."""
    return "log-" + re.sub(r"[^A-Za-z0-9._-]", "_", source)


def merge_source_states(a: dict, b: dict) -> dict:
    """One source's state over two disjoint parts of the corpus, exactly as one pass over
    both would have left it (each statistic's ``merge_states``)."""
    return {name: STATISTICS[name].merge_states(a[name], b[name]) for name in a}


class PassStats:
    """Every source's statistics, fed one batch at a time: each hook's activation is
    folded in as the forward pass reaches it, so only one is held at a time.

    (Folding on a background thread while the forward computed the next layer was
    measured slower on 2 cores, 0.77 against 0.81 of the bare forward: both want both.)
    """

    def __init__(
        self, model: Model, sources: list[Source], cfg: IndexConfig, folder: Path | None = None
    ):
        self.model = model
        self.sources = [SourceStats(src, cfg, model.device, cfg.units, folder) for src in sources]
        self._by_hook: dict[str, list[SourceStats]] = {}
        for st in self.sources:
            self._by_hook.setdefault(st.source.hook, []).append(st)

    def update(
        self, tokens: torch.Tensor, first_sequence: int, lengths: torch.Tensor | None = None
    ) -> None:  # [B, T], lengths [B]: each row's real tokens (the rest is padding)
        def visit(hook: str, act: torch.Tensor) -> None:
            for st in self._by_hook[hook]:
                st.update(act, first_sequence, lengths)

        self.model.activations(tokens, sorted(self._by_hook), visit=visit)
        # Each batch frees every layer's activation block around the few rows each source
        # keeps; glibc cannot hand those holes back by itself (measured: RSS grew 0.4 GB a
        # batch on the demo workload). A trim costs about 25 ms a batch, 1% of it.
        return_freed_memory()


@functools.cache
def _libc():
    name = ctypes.util.find_library("c")
    return ctypes.CDLL(name) if name else None


def return_freed_memory() -> None:
    """Hand the heap's free pages back to the system (glibc's ``malloc_trim``). A
    checkpoint's copies and, while writing, each source's state are freed as the run goes
    on; without this, glibc keeps what fits below its (raised) mmap threshold, and RSS
    creeps up checkpoint by checkpoint and source by source."""
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)
