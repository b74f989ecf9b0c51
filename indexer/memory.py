"""The memory an index run needs, worked out before it starts, and the refusal when it
cannot fit.

The model (``docs/performance.md``, "Memory", checks it against measurements):

- what is resident when the plan is made: the model, the SAEs' weights, the libraries
  (read from the OS, not estimated);
- every unit's streamed state (``unit_state_bytes``): its top-k slots with their context
  windows, and its interval counts and sample slots: a constant per unit. A sparse
  source's latents (``activation_log.keeps_log``: an SAE's, firing on under 1/64 of
  tokens) keep no windows: they are read back at write time from the source's
  activation log on disk (``log_bytes``), whose pages count while it is read;
- each source's correlation tokens (``correlation_bytes``): a dense source (neurons, or
  latents as dense as a transcoder's) keeps the sampled tokens' activations (at most
  ``DENSE_CAP`` tokens), 4 bytes per unit per sampled token; a sparse one keeps every
  token's non-zero activations (at most ``SPARSE_CAP`` tokens), 8 bytes each plus 16
  per token;
- the largest working set on top of that: a batch's activation block during the pass
  (an SAE's is encoded a few sequences at a time, at most ``BLOCK_BYTES``), or one
  ``WRITE_UNITS`` slice of rows, a correlation block and a cosine block while writing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from indexer.activation_log import expected_l0, keeps_log
from indexer.config import Plan
from indexer.correlation import DENSE_CAP, SPARSE_CAP
from indexer.intervals import COUNT_BINS, SAMPLE_BINS
from indexer.logit_cache import BLOCK_BYTES as LOGIT_BLOCK_BYTES
from indexer.summaries import COSINE_BYTES
from indexer.write import WRITE_UNITS
from spyglass.sources import BLOCK_BYTES, Source

INTERVAL_WINDOW = 14
"""Positions in an interval sample's window (``StreamingIntervals``' 10 before, 3 after)."""
WRITE_BYTES_PER_UNIT = 96_000
"""Working bytes per unit of a ``WRITE_UNITS`` slice while it is written: its interval
state copied, the intervals chosen, and its rows as Python objects."""
RUNTIME_BYTES = 600_000_000
"""Python, torch, numba and the libraries, before any weights (measured: 0.6 GB)."""
GB = 1e9


def unit_state_bytes(cfg, *, sparse: bool = False) -> int:
    """Bytes of one unit's streamed state (top-k, interval counts and samples). A sparse
    source's (an SAE's) slots hold no windows: its activation log does."""
    window = 0 if sparse else cfg.window_before + 1 + cfg.window_after
    topk = cfg.top_k * (4 + 8 + 4 * window)  # value, token, float32 window
    counts = (COUNT_BINS + 1) * 4  # int32 (int64 totals only past 2^31 tokens)
    bins = SAMPLE_BINS + 1
    window = 0 if sparse else INTERVAL_WINDOW
    samples = bins * cfg.interval_samples * (8 + 4 + 2 * window)  # key (names the token), value
    return topk + counts + bins * 16 + samples + 9  # bars and slots, ceiling and flag


def log_bytes(src: Source, cfg, n_tokens: int) -> int:
    """Disk bytes of a sparse source's activation log over ``n_tokens`` tokens
    (``indexer.activation_log``): 8 per non-zero, 4 per token (and 16 per sequence)."""
    return n_tokens * (4 + 8 * expected_l0(src)) if keeps_log(src, cfg) else 0


def correlation_bytes(src: Source, cfg, n_tokens: int) -> int:
    """Bytes of a source's correlation tokens over ``n_tokens`` tokens."""
    if not keeps_log(src, cfg):
        rows = min(int(cfg.correlation_rate * n_tokens), DENSE_CAP)
        return rows * (4 * src.n_units + 8)
    return min(n_tokens, SPARSE_CAP) * (16 + 8 * expected_l0(src))


@dataclass
class MemoryEstimate:
    resident: int
    """Bytes resident when the plan was made (model, SAE weights, libraries)."""
    state: int
    """Bytes of every source's streamed state and correlation tokens."""
    working: int
    """Bytes of the largest working set on top of the state."""
    available: int
    """Bytes this process may use (what the OS and its cgroup have free, plus its own)."""
    per_source: dict[str, int] = field(default_factory=dict)
    disk: int = 0
    """Bytes of the SAEs' activation logs in the work folder (``log_bytes``)."""

    @property
    def peak(self) -> int:
        return self.resident + self.state + self.working

    def line(self) -> str:
        return (
            f"memory: about {self.peak / GB:.1f} GB at peak (model and weights "
            f"{self.resident / GB:.1f} GB, statistics {self.state / GB:.1f} GB, working "
            f"{self.working / GB:.1f} GB) of {self.available / GB:.1f} GB available"
            + (f"; disk: about {_size(self.disk)} of activation logs" if self.disk else "")
        )


def _size(n: int) -> str:
    return f"{n / GB:.1f} GB" if n >= GB / 10 else f"{max(1, round(n / 1e6))} MB"


def check(plan: Plan) -> MemoryEstimate:
    """The plan's estimate; ValueError, one line naming the flag that would make it fit,
    when it needs more than ``--memory`` (default: what is available)."""
    est = estimate(plan, plan.cfg.tokens)
    budget = plan.cfg.memory * GB if plan.cfg.memory else est.available
    if est.peak <= budget:
        return est
    have = (
        f"{budget / GB:.1f} GB is available"
        if not plan.cfg.memory
        else (f"--memory is {plan.cfg.memory:g} GB")
    )
    need = f"this index needs about {est.peak / GB:.1f} GB and {have}"
    fixed = est.resident + est.working
    n = plan.cfg.units[1]
    for more in (2, 4, 8, 16, 32, 64, 128, 256):
        each = fixed + est.state / more
        if each <= budget:
            raise ValueError(
                f"{need}: split the units over {n * more} runs with --units I/{n * more} "
                f"(about {each / GB:.1f} GB each), then join them with `spyglass merge`"
            )
    raise ValueError(
        f"{need}; the model, its weights and one batch alone take "
        f"{fixed / GB:.1f} GB: use a smaller --batch-size or a machine with more memory"
    )


def estimate(plan: Plan, n_tokens: int | None) -> MemoryEstimate:
    """The plan's memory, for a corpus of ``n_tokens`` tokens (the cap, or a guess: 1M)."""
    cfg = plan.cfg
    tokens = n_tokens or 1_000_000
    per_source = {}
    working = 0
    tokens_per_batch = cfg.batch_size * cfg.seq_len
    part = 1 / cfg.units[1]  # the share of every source's units this run takes
    for src in plan.sources:
        corr = int(correlation_bytes(src, cfg, tokens) * part)
        per_unit = unit_state_bytes(cfg, sparse=keeps_log(src, cfg))
        per_source[src.name] = int(src.n_units * part) * per_unit + corr
        if src.sae is None:
            block = tokens_per_batch * src.n_units * 4
        else:
            block = min(tokens_per_batch * src.n_units * 4, BLOCK_BYTES) + 2 * 256 * src.n_units * 4
        logit_block = 2 * LOGIT_BLOCK_BYTES  # the reused product and its rows
        write = (
            min(WRITE_UNITS, src.n_units) * WRITE_BYTES_PER_UNIT
            + logit_block
            + 3 * corr  # joined, and the sums' column lists
            + _neighbour_bytes(src, plan.model, cfg, tokens)
            + 3 * log_bytes(src, cfg, int(tokens * part)) // 2  # its offsets, the pages read
        )
        working = max(working, block, write)
    forward = tokens_per_batch * (plan.model.d_model * 16 + plan.model.d_mlp * 12)
    # Weights read from memory-mapped files are resident only once a forward touches them.
    weights = plan.model.weight_bytes + sum(
        t.numel() * t.element_size()
        for src in plan.sources
        if src.sae
        for t in src.sae.tensors.values()
    )
    return MemoryEstimate(
        resident=max(resident_bytes(), weights + RUNTIME_BYTES),
        state=sum(per_source.values()),
        working=working + forward,
        available=available_bytes(),
        per_source=per_source,
        disk=sum(int(log_bytes(src, cfg, tokens) * part) for src in plan.sources),
    )


def _neighbour_bytes(src: Source, model, cfg, n_tokens: int) -> int:
    """Working bytes of the neighbours: the float64 copy of the sampled rows and a block
    of sums (a dense source) or the column lists (a sparse one), and a latent source's
    cosine blocks."""
    if not keeps_log(src, cfg):
        rows = min(int(cfg.correlation_rate * n_tokens), DENSE_CAP)
        out = rows * src.n_units * 8 + 3 * 1024 * src.n_units * 8
    else:
        out = min(n_tokens, SPARSE_CAP) * expected_l0(src) * 24 + src.n_units * 200
    if src.sae is not None:
        out += 2 * src.n_units * model.d_model * 4 + 3 * COSINE_BYTES  # a block and its top-k
    return out


def resident_bytes() -> int:
    """This process's resident set now (0 where the OS does not say)."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def available_bytes() -> int:
    """What this process may use: its own resident set plus what is free to it, the
    smaller of the OS's MemAvailable and its cgroup's limit less the cgroup's use."""
    free = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                free = int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text())
        if limit != "max":
            room = int(limit) - used
            free = room if free is None else min(free, room)
    except (OSError, ValueError):
        pass
    if free is None:
        return 1 << 62  # cannot tell: do not refuse
    return resident_bytes() + free
