"""Every source's streaming statistics, fed one batch at a time, and their merge."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

import torch

from indexer.config import IndexConfig
from indexer.core import StreamingTopK, fold_batch, merge_topk_states
from indexer.correlation import StreamingCorrelation
from indexer.intervals import StreamingIntervals
from indexer.intervals import merge_states as merge_interval_states
from spyglass.model import Model
from spyglass.sources import Source


def unit_range(n_units: int, units: tuple[int, int]) -> tuple[int, int]:
    """Slice ``units`` = (i, n) of a source's units: the i-th of n contiguous ranges."""
    i, n = units
    return i * n_units // n, (i + 1) * n_units // n


class SourceStats:
    """The streaming statistics of one source's units, or of the slice ``units`` = (i, n)
    of them (``unit_range``), read from the source's activations as columns lo:hi."""

    def __init__(
        self,
        source: Source,
        cfg: IndexConfig,
        device: torch.device,
        units: tuple[int, int] = (0, 1),
    ):
        skip = 0 if cfg.include_first_token else 1
        self.source, self.skip = source, skip
        self.lo, self.hi = unit_range(source.n_units, units)
        n_units = self.hi - self.lo
        self.topk = StreamingTopK(
            n_units,
            cfg.top_k,
            before=cfg.window_before,
            after=cfg.window_after,
            skip_first=skip,
            device=device,
        )
        self.intervals = StreamingIntervals(
            n_units, per_bin=cfg.interval_samples, skip_first=skip, device=device
        )
        self.correlation = StreamingCorrelation(
            n_units,
            rate=cfg.correlation_rate,
            sparse=source.sae is not None,
            skip_first=skip,
            device=device,
        )

    def state_dict(self) -> dict:
        return {
            "topk": self.topk.state_dict(),
            "intervals": self.intervals.state_dict(),
            "correlation": self.correlation.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.topk.load_state_dict(state["topk"])
        self.intervals.load_state_dict(state["intervals"])
        self.correlation.load_state_dict(state["correlation"])

    def update(
        self, hook_act: torch.Tensor, first_sequence: int, lengths: torch.Tensor | None = None
    ) -> None:  # [B, T, d], lengths [B]
        whole = (self.lo, self.hi) == (0, self.source.n_units)
        for lo, acts in self.source.unit_blocks(hook_act, self.skip, lengths):
            part = None if lengths is None else lengths[lo : lo + acts.shape[0]]
            if not whole:
                acts = acts[..., self.lo : self.hi]
            fold_batch(self.topk, self.intervals, acts, first_sequence + lo, part)
            self.correlation.update(acts, first_sequence + lo, part)


def merge_source_states(a: dict, b: dict) -> dict:
    """One source's state over two disjoint parts of the corpus, exactly as one pass over
    both would have left it (see the merge functions of each statistic)."""
    return {
        "topk": merge_topk_states(a["topk"], b["topk"]),
        "intervals": merge_interval_states(a["intervals"], b["intervals"]),
        "correlation": StreamingCorrelation.merge_states(a["correlation"], b["correlation"]),
    }


class PassStats:
    """Every source's statistics, fed one batch at a time: each hook's activation is
    folded in as the forward pass reaches it, so only one is held at a time.

    (Folding on a background thread while the forward computed the next layer was
    measured slower on 2 cores, 0.77 against 0.81 of the bare forward: both want both.)
    """

    def __init__(self, model: Model, sources: list[Source], cfg: IndexConfig):
        self.model = model
        self.sources = [SourceStats(src, cfg, model.device, cfg.units) for src in sources]
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
