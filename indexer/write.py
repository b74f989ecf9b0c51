"""The write phase: streamed states -> unit rows, examples and neighbours -> database.

A source is written ``WRITE_UNITS`` units at a time: its ranked top-k, interval samples,
histograms and logit effects exist for one slice of units at once, so a wide SAE's rows
never all sit in memory. Neighbours (correlated units, decoder rows, aligned neurons) are
worked out first for every unit, blockwise, and kept as [U, 10] index and value tables.

``PhaseClock`` adds up where the time goes (``bench/index.py`` prints it).
"""

from __future__ import annotations

import contextlib
import functools
import gc
import json
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from indexer import logit_cache, summaries
from indexer.activation_log import LogWindows
from indexer.checkpoint import Progress
from indexer.config import IndexReport, Plan
from indexer.core import StreamingTopK, TopKResult
from indexer.correlation import StreamingCorrelation
from indexer.interval_choice import choose_intervals
from indexer.intervals import SAMPLE_AFTER, SAMPLE_BEFORE, IntervalState
from indexer.stats import merge_source_states, return_freed_memory, unit_range
from indexer.token_index import CorpusGrid, TokenUnits
from spyglass import storage
from spyglass.model import Model
from spyglass.sources import Source

WRITE_UNITS = 4096
"""Units whose rows are built and inserted at a time."""


class PhaseClock:
    """Seconds per phase of the write, summed over sources: ``with clock("insert"): ...``."""

    def __init__(self):
        self.seconds: Counter[str] = Counter()

    @contextlib.contextmanager
    def __call__(self, phase: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] += time.perf_counter() - t0


def write_index(
    plan: Plan,
    parts: list[list[dict[str, dict]]],
    sequences: list[Iterable[list[tuple]]],
    progress: Progress,
    clock: PhaseClock | None = None,
) -> IndexReport:
    """Write the index in one transaction (readers see the previous index until it
    commits) from the streamed states and the ``sequences`` (chunks of ``(id, document,
    offset, tokens)`` rows, real tokens only). ``parts[j]`` holds slice j of every source's
    units (one slice: all of them), as the states of its token shards, which merge
    exactly; ``progress`` counts the corpus once."""
    cfg, model = plan.cfg, plan.model
    clock = clock or PhaseClock()
    started = time.perf_counter()
    report = IndexReport.from_progress(cfg.slug(), progress)
    engine = storage.make_engine(cfg.db, create=True)
    try:
        with engine.begin() as conn:
            model_id = storage.replace_model(
                conn,
                report.slug,
                spec=cfg.model,
                corpus=cfg.corpus,
                n_layers=model.n_layers,
                d_model=model.d_model,
                d_vocab=model.d_vocab,
                seq_len=cfg.seq_len,
                skip_first=0 if cfg.include_first_token else 1,
                top_k=cfg.top_k,
                options=json.dumps(plan.options) if plan.options else None,
            )
            corpus = CorpusGrid(cfg.seq_len)
            with clock("insert"):
                for chunks in sequences:
                    for rows in chunks:
                        storage.add_sequences(conn, model_id, rows)
                        corpus.add(rows)
                storage.add_vocab(conn, model_id, model.token_strings(range(model.d_vocab)))
            report.sources += write_sources(conn, model_id, plan, parts, clock, corpus)
            report.seconds = progress.seconds + time.perf_counter() - started
            report.write_seconds = dict(clock.seconds)
            storage.finish_model(
                conn,
                model_id,
                n_sequences=report.n_sequences,
                n_tokens=report.n_tokens,
                seconds=report.seconds,
            )
            report.kept = storage.kept_report(conn, report.slug).lines()
    finally:
        engine.dispose()
    return report


@contextlib.contextmanager
def collector_paused():
    """Python's cyclic garbage collector off inside: the rows are millions of small lists
    and dicts, none in a cycle (freed by their counts all the same), and each allocation
    burst set off a collection walking every live object: measured, 1.9 s of the 2.1 s
    that turning a demo's logit arrays into tables took."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def write_sources(
    conn,
    model_id: int,
    plan: Plan,
    parts: list[list[dict[str, dict]]],
    clock: PhaseClock,
    corpus: CorpusGrid | None = None,
) -> Iterator[str]:
    """Every source of the plan, one after the other (``write_source``), each name yielded
    once written. ``parts[j]`` holds slice j of every source's units as the states of its
    token shards; a source's states are taken out of them as it is written. The logit
    summaries are worked out a block ahead (``logit_cache.ahead``). ``corpus``: the
    sequences' tokens, for the token index (``indexer.token_index``)."""
    n_slices = len(parts)
    blocks = (
        src.directions(plan.model)[lo:hi]
        for src in plan.sources
        for lo, hi in write_blocks(src.n_units, n_slices)
    )
    logits = logit_cache.ahead(plan.model, blocks)
    quiet = not plan.cfg.progress
    for src in tqdm(plan.sources, desc="writing", unit="source", disable=quiet):
        slices = [[shard.pop(src.name) for shard in part] for part in parts]
        write_source(conn, model_id, src, slices, plan, clock, logits, corpus)  # then freed
        del slices
        return_freed_memory()
        yield src.name


def write_blocks(n_units: int, n_slices: int) -> Iterator[tuple[int, int]]:
    """The ``(lo, hi)`` blocks of units a source of ``n_units`` in ``n_slices`` slices is
    written in, in order: each slice ``WRITE_UNITS`` units at a time."""
    for j in range(n_slices):
        yield from _slice_blocks(*unit_range(n_units, (j, n_slices)))


def _slice_blocks(first: int, last: int) -> Iterator[tuple[int, int]]:
    for lo in range(first, last, WRITE_UNITS):
        yield lo, min(last, lo + WRITE_UNITS)


def write_source(
    conn,
    model_id: int,
    src: Source,
    slices: list[list[dict]],
    plan: Plan,
    clock: PhaseClock,
    logits: Iterator[dict],
    corpus: CorpusGrid | None = None,
) -> None:
    """The source's row, one row per unit, and its examples. ``slices[j]``: the states of
    slice j of its units from each token shard. A slice is merged and written
    ``WRITE_UNITS`` units at a time (``write_blocks``), then freed; the correlations need
    every slice's tokens, and come first. ``logits`` yields each block's logit summary
    arrays in turn (``write_sources`` works them out a block ahead)."""
    with collector_paused():
        _write_source(conn, model_id, src, slices, plan, clock, logits, corpus)


def _write_source(conn, model_id, src, slices, plan, clock, logits, corpus) -> None:
    cfg, model = plan.cfg, plan.model
    source_id = storage.add_source(
        conn,
        model_id,
        name=src.name,
        kind=src.kind,
        layer=src.layer,
        hook=src.hook,
        n_units=src.n_units,
        sae=src.sae_spec,
        info=src.info(),
    )
    directions = src.directions(model)  # [U, d]
    n_slices = len(slices)
    ranges = [unit_range(src.n_units, (j, n_slices)) for j in range(n_slices)]
    with clock("correlations"):
        joined = StreamingCorrelation.join_units(
            [
                functools.reduce(
                    StreamingCorrelation.merge_states, [s["correlation"] for s in part]
                )
                for part in slices
            ],
            [lo for lo, _ in ranges],
        )
        correlation = StreamingCorrelation(src.n_units, sparse=joined["sparse"])
        correlation.load_state_dict(joined)
        del joined
        near = Neighbours(correlation.top(summaries.NEIGHBOURS), correlation.n_tokens)
        near.means = correlation.means()
        del correlation
    with clock("decoder neighbours"):
        if src.sae:
            near.decoder, near.aligned, near.layers = latent_neighbours(src, model, directions)
    # The blocks above, freed, would stay in glibc's heap (measured: 1.1 GB for a
    # 16,384-latent SAE's cosines); so would each slice's rows below. (A trim costs about
    # 25 ms: a source of one slice is trimmed once written, by ``write_index``.)
    many = src.n_units > WRITE_UNITS
    if near.decoder is not None:
        return_freed_memory()
    by_token = TokenUnits()
    for j, part in enumerate(slices):
        with clock("statistics"):
            # The state itself: the streamers' arrays would be a second copy of it.
            state = functools.reduce(merge_source_states, part)
            slices[j] = None  # the token shards' states, freed as merged
            log = LogWindows(state["log"], cfg.seq_len) if "log" in state else None
        first, last = ranges[j]
        for lo, hi in _slice_blocks(first, last):
            with clock("logit effects"):
                arrays = next(logits)
            rows = _unit_rows(state, first, lo, hi, plan, arrays, near, log, clock)
            with clock("token index"):
                by_token.add_logits(lo, arrays)
                if corpus is not None:
                    ex = rows[4]
                    by_token.add_examples(
                        ex.unit, corpus.tokens(ex.sequence_id, ex.position), cfg.top_k
                    )
            with clock("insert"):
                storage.add_units(conn, source_id, *rows[:4], first=lo)
                storage.add_examples(conn, source_id, rows[4])
                storage.add_examples(conn, source_id, rows[5], interval=rows[6])
            del rows
            if many:
                return_freed_memory()
        del state
    with clock("token index"):
        storage.add_token_units(conn, source_id, by_token.rows())


@dataclass
class Neighbours:
    """A source's neighbours, worked out for every unit before its rows: [U, k] indices
    and values each."""

    correlated: tuple[torch.Tensor, torch.Tensor]
    correlation_tokens: int
    decoder: tuple[torch.Tensor, torch.Tensor] | None = None
    """SAE latents: the nearest decoder rows, by cosine."""
    aligned: tuple[torch.Tensor, torch.Tensor] | None = None
    """SAE latents: the best aligned neurons of ``layers`` (flat, layer-major)."""
    layers: list[int] = field(default_factory=list)
    means: np.ndarray | None = None
    """[U] each unit's mean over the correlation sample's tokens."""


def _unit_rows(state, first, lo, hi, plan, logit_arrays, near: Neighbours, log, clock):
    """Units ``lo:hi`` of the source, held in ``state`` (a slice of its units from
    ``first`` on, ranked and in key order) as rows: max, density, logit tables, stats,
    examples, samples and their intervals. A sparse source's windows come from its
    activation ``log``."""
    cfg, model = plan.cfg, plan.model
    with clock("logit effects"):
        logits, logit_hist = summaries.logit_summaries_of(logit_arrays)
    with clock("statistics"):
        a, b = lo - first, hi - first  # within the slice
        top = StreamingTopK.state_result(state["topk"], a, b)
        values = top.values.cpu().numpy()  # [k, n]
        max_act = np.where(np.isfinite(values[0]), values[0], 0.0)
        intervals = IntervalState.from_state_dict(state["intervals"], a, b)
        max_act_t = torch.from_numpy(max_act).to(intervals.counts.device)
        iv = choose_intervals(intervals, max_act_t, per_interval=cfg.interval_samples)
        hist = summaries.activation_histograms(intervals, max_act_t)
        corr = summaries.pairs(near.correlated[0][lo:hi], near.correlated[1][lo:hi])
        decoder = neurons = [[]] * (hi - lo)
        if near.decoder is not None:
            decoder = summaries.pairs(near.decoder[0][lo:hi], near.decoder[1][lo:hi])
        if near.aligned is not None:
            idx, cos = near.aligned[0][lo:hi], near.aligned[1][lo:hi]
            neurons = _neuron_pairs(idx, cos, near.layers, model.d_mlp)
        stats = [
            storage.UnitStats(
                hist=storage.ActivationHistogram(**h) if h else None,
                logit_hist=storage.LogitHistogram(**lh),
                intervals=table or [],
                correlated=correlated,
                correlation_tokens=near.correlation_tokens,
                decoder=dec,
                neurons=aligned_neurons,
                mean=None if near.means is None else float(near.means[u]),
            )
            for u, (h, lh, table, correlated, dec, aligned_neurons) in enumerate(zip(
                hist, logit_hist, summaries.interval_tables(iv), corr, decoder, neurons,
                strict=True,
            ), start=lo)
        ]  # fmt: skip
        density = intervals.density.cpu().numpy()
    with clock("windows" if log is not None else "statistics"):
        read = None if log is None else functools.partial(_read_windows, log, a)
        examples = _example_columns(top, cfg, lo, read)
        samples, interval = _sample_columns(iv, cfg.seq_len, lo, read)
    return max_act, density, logits, stats, examples, samples, interval


def _read_windows(log: LogWindows, offset: int, unit, tokens, before, after, dtype):
    """Windows of units ``offset + unit`` of a slice from its activation log."""
    return log.windows(unit + offset, tokens, before, after, dtype)


def latent_neighbours(src: Source, model: Model, directions: torch.Tensor):
    """Per latent: the nearest other decoder rows ([U, k] indices and cosines), and the
    neurons of the layers writing to the SAE's hook whose W_out rows align best with its
    decoder row ([U, k] flat neuron indices, layer-major over ``layers``, and cosines; none
    unless the SAE reads the residual stream)."""
    k = summaries.NEIGHBOURS
    decoder = summaries.cosine_top(directions, directions, k, exclude_self=True)
    layers = neuron_layers_for(src.write_hook, src.layer, model.n_layers)
    if not layers or directions.shape[1] != model.d_model:
        return decoder, None, []
    out = torch.cat([model.neuron_directions(layer) for layer in layers]).to(directions)
    return decoder, summaries.cosine_top(directions, out, k, exclude_self=False), layers


def _neuron_pairs(idx: torch.Tensor, cos: torch.Tensor, layers: list[int], d_mlp: int):
    """Per latent ``[[layer, neuron, cosine], ...]`` from ``latent_neighbours``' flat indices."""
    return [
        [[layers[i // d_mlp], i % d_mlp, round(c, 4)] for i, c in zip(*row, strict=True)]
        for row in zip(idx.tolist(), cos.tolist(), strict=True)
    ]


def neuron_layers_for(hook: str, layer: int, n_layers: int) -> list[int]:
    """The MLP layers whose neurons write into ``hook`` (of block ``layer``): all before it
    for the residual stream, the block's own for its MLP output."""
    last = hook.rsplit(".", 1)[-1]
    if last in ("hook_mlp_out", "hook_post", "hook_pre"):
        return [layer]
    if last in ("hook_resid_pre", "hook_resid_mid", "hook_attn_out", "hook_z"):
        return list(range(min(layer, n_layers)))  # written before this block's MLP
    return list(range(min(layer, n_layers - 1) + 1))  # hook_resid_post and others


def _sample_columns(iv, seq_len: int, first: int, read=None):
    """Every interval sample of units ``first ..`` as a row, and its interval; windows
    from ``read(unit, tokens, before, after, dtype)`` if the state has none."""
    tokens = iv.tokens.cpu().numpy()  # [U, n, s]
    unit, interval, rank = np.nonzero(tokens >= 0)
    tokens = tokens[unit, interval, rank]
    if read is None:
        windows = iv.windows.cpu().numpy()[unit, interval, rank]
    else:  # float16, as the streamers keep them
        windows = read(unit, tokens, SAMPLE_BEFORE, SAMPLE_AFTER, np.float16)
    values = iv.values.cpu().numpy()[unit, interval, rank]
    columns = _columns(unit + first, rank, tokens, values, windows, SAMPLE_BEFORE, seq_len)
    return columns, interval


def _example_columns(top: TopKResult, cfg, first: int, read=None):
    """Every positive top-k entry of units ``first ..`` as an example row, in the table's
    key order (unit, then rank); windows as in ``_sample_columns``."""
    values = top.values.cpu().numpy().T  # [U, k]
    # Only positive activations are examples of what makes a unit fire.
    unit, rank = np.nonzero(values > 0)
    tokens = top.tokens.cpu().numpy()[rank, unit]
    before = cfg.window_before
    if read is None:
        windows = top.windows.cpu().numpy()[rank, unit]  # [n, W]
    else:
        windows = read(unit, tokens, before, cfg.window_after, np.float32)
    return _columns(unit + first, rank, tokens, values[unit, rank], windows, before, cfg.seq_len)


def _columns(unit, rank, tokens, values, windows, before: int, seq_len: int):
    """Example rows from global token indices and windows [n, W] (NaN off the sequence)."""
    seq, pos = np.divmod(tokens, seq_len)
    inside = ~np.isnan(windows)
    return storage.ExampleColumns(
        unit=unit,
        rank=rank,
        sequence_id=seq,
        position=pos,
        value=values,
        windows=windows,
        first=inside.argmax(axis=1),
        last=windows.shape[1] - inside[:, ::-1].argmax(axis=1),
        before=before,
    )
