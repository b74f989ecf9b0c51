"""One streaming pass: corpus -> model -> per-unit statistics -> database.

Sequences are written as they stream by and the unit statistics at the end, all
inside one transaction, so memory stays bounded by the batch and the per-unit
state, and readers see the previous index until the new one is complete.

Every document is indexed (``indexer.corpus``): a batch holds sequences of any length up
to ``seq_len``, padded on the right (``Model.pad_batch``), and their lengths go with the
activations to every statistic, which leaves padded positions out (``indexer.core``).
Only real tokens are stored, counted and shown.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from tqdm import tqdm

from indexer import memory
from indexer.checkpoint import (
    FORMAT,
    CheckpointMismatch,
    Progress,
    ShardWork,
    load_progress,
    read_sequences,
    shard_dir,
)
from indexer.config import IndexConfig, IndexReport, Plan, plan_index
from indexer.corpus import Sequence, iter_sequences
from indexer.stats import PassStats, SourceStats, merge_source_states, return_freed_memory
from indexer.write import write_index
from spyglass.model import Model

__all__ = [
    "IndexConfig",
    "IndexReport",
    "PassStats",
    "SourceStats",
    "build_index",
    "merge_progress",
    "merge_shards",
    "run_pass",
]


def build_index(
    cfg: IndexConfig, model: Model | None = None, announce: Callable[[str], None] | None = None
) -> IndexReport:
    """Index the chosen MLP layers' neurons and SAEs' latents over the corpus, resuming
    from the checkpoint an interrupted run of the same settings left. One shard of n
    (``cfg.shard``) or slice of the units (``cfg.units``) leaves its result in its work
    folder for ``merge_shards``; a whole run writes the database in one transaction and
    removes its work folder. ``announce`` gets the memory estimate before the pass; a plan
    that cannot fit raises ValueError first (``indexer.memory``)."""
    plan = plan_index(cfg, model)
    estimate = memory.check(plan)
    if announce is not None:
        announce(estimate.line())
    work = ShardWork(shard_dir(cfg.work_folder(), cfg.shard, cfg.units))
    try:
        progress = run_pass(plan, work)
    finally:
        work.close()
    if (cfg.shard, cfg.units) != ((0, 1), (0, 1)):
        report = IndexReport.from_progress(cfg.slug(), progress)
        report.sources = [src.name for src in plan.sources]
        return report
    parts = [[progress.states]]
    report = write_index(plan, parts, [read_sequences(work.folder)], progress)
    work.remove()
    return report


def run_pass(plan: Plan, work: ShardWork) -> Progress:
    """The streaming pass over this shard's batches, from the last checkpoint on."""
    cfg, model = plan.cfg, plan.model
    progress = None if cfg.restart else work.load()
    if progress is not None and progress.format != FORMAT:
        raise CheckpointMismatch(
            f"{work.folder} holds a checkpoint made by an older Spyglass, whose state "
            "differs; run with --restart to discard it"
        )
    if progress is not None and progress.fingerprint != cfg.fingerprint():
        raise CheckpointMismatch(
            f"{work.folder} holds a checkpoint of a run with other settings; "
            "run with --restart to discard it, or with the settings it was made with"
        )
    progress = progress or Progress(cfg.fingerprint(), cfg.shard, units=cfg.units, format=FORMAT)
    work.resume(progress, cfg.batch_size)  # drops sequences past it (all, for a new run)
    if progress.done:
        return progress
    stats = PassStats(model, plan.sources, cfg, work.folder)
    for st in stats.sources if progress.states else ():
        st.load_state_dict(progress.states[st.source.name])

    # Counted afresh on every attempt: a resumed run reads the corpus from its start too.
    skipped: Counter[str] = Counter()
    seqs = iter_sequences(
        cfg.corpus,
        model.tokenize,
        seq_len=cfg.seq_len,
        bos_id=model.bos_id,
        max_tokens=cfg.tokens,
        text_field=cfg.text_field,
        split=cfg.split,
        skipped=skipped,
    )
    head = next(seqs, None)
    if head is None:
        raise ValueError(
            f"the corpus {cfg.corpus!r} gave no sequence: no document has any text "
            f"(skipped: {dict(skipped) or 'none'})"
        )
    seqs = itertools.chain([head], seqs)
    shard, n_shards = cfg.shard
    total = cfg.tokens // n_shards if cfg.tokens else None
    bar = tqdm(
        total=total,
        initial=progress.n_tokens,
        unit="tok",
        unit_scale=True,
        desc=f"indexing {cfg.slug()}" + (f" shard {shard}/{n_shards}" if n_shards > 1 else ""),
        disable=not cfg.progress,
    )
    started = last_save = time.perf_counter()
    spent = progress.seconds

    def checkpoint(next_batch: int, done: bool = False) -> None:
        progress.next_batch, progress.done = next_batch, done
        progress.skipped = dict(skipped)
        progress.seconds = spent + time.perf_counter() - started
        progress.states = {}  # the last checkpoint's states must not outlive it
        progress.states = {st.source.name: st.state_dict() for st in stats.sources}
        work.save(progress)
        if not done:
            progress.states = {}
            return_freed_memory()  # the ranked top-k copies just saved

    next_batch = progress.next_batch
    with bar:
        for first, batch in _batches(seqs, cfg.batch_size):
            index = first // cfg.batch_size
            if index < next_batch:
                continue
            next_batch = index + 1
            if index % n_shards != shard:
                continue
            work.add_sequences(
                [(first + i, s.document, s.offset, s.tokens) for i, s in enumerate(batch)]
            )
            tokens, lengths = model.pad_batch([s.tokens for s in batch], cfg.seq_len)
            stats.update(tokens, first, lengths)
            real = int(lengths.sum())
            progress.n_sequences += len(batch)
            progress.n_tokens += real
            progress.n_documents += sum(s.offset == 0 for s in batch)
            bar.update(real)
            if time.perf_counter() - last_save >= cfg.checkpoint_every:
                checkpoint(next_batch)
                last_save = time.perf_counter()
        checkpoint(next_batch, done=True)
    return progress


def merge_shards(folders: Iterable[Path], *, db: str, progress: bool = True) -> IndexReport:
    """Join the finished shards in ``folders`` into the database: all n token shards
    (``--shard I/N``) of each of the m slices of the units (``--units J/M``). Each
    source's state is their exact merge, as one pass over the whole corpus would have left
    it, and the database is written as that pass would have written it. The shards' states
    are mapped from their files, and merged and written a slice at a time."""
    folders = sorted(set(folders))
    found = [(f, load_progress(f, mmap=True)) for f in folders]
    missing = [str(f) for f, p in found if p is None or not p.done]
    if not found or missing:
        raise ValueError(f"no finished shard in {', '.join(missing) or 'the given folders'}")
    older = [str(f) for f, p in found if p.format != FORMAT]
    if older:
        raise ValueError(
            f"{', '.join(older)}: shards made by an older Spyglass, whose state differs; "
            "index them again"
        )
    first = found[0][1]
    for folder, prog in found[1:]:
        if prog.fingerprint != first.fingerprint:
            raise ValueError(f"{folder} is a shard of a run with other settings than {folders[0]}")
    n, m = first.shard[1], first.units[1]
    have = sorted((p.units[0], p.shard[0]) for _, p in found)
    if have != [(j, i) for j in range(m) for i in range(n)] or any(
        (p.shard[1], p.units[1]) != (n, m) for _, p in found
    ):
        got = ", ".join(f"{i}/{n} units {j}/{m}" for j, i in have)
        raise ValueError(
            f"need token shards 0..{n - 1} of {n} for each of the {m} unit slices exactly "
            f"once, got {got}"
        )
    cfg = IndexConfig(**first.fingerprint, db=db, progress=progress)
    plan = plan_index(cfg)
    by_slice = [[p for _, p in sorted(found, key=lambda fp: fp[1].shard) if p.units[0] == j]
                for j in range(m)]  # fmt: skip
    counted = functools.reduce(_add_counts, by_slice[0])  # the corpus, once
    parts = [[p.states for p in shards] for shards in by_slice]
    sequences = [read_sequences(f) for f, p in found if p.units[0] == 0]
    return write_index(plan, parts, sequences, counted)


def _add_counts(a: Progress, b: Progress) -> Progress:
    """Two token shards' counts as one, without their states."""
    return merge_progress(dataclasses.replace(a, states={}), dataclasses.replace(b, states={}))


def merge_progress(a: Progress, b: Progress) -> Progress:
    """Two finished shards' progress as one (states merged source by source)."""
    states = {name: merge_source_states(a.states[name], b.states[name]) for name in a.states}
    reasons = a.skipped.keys() | b.skipped.keys()
    return Progress(
        a.fingerprint,
        (0, 1),
        n_sequences=a.n_sequences + b.n_sequences,
        n_tokens=a.n_tokens + b.n_tokens,
        n_documents=a.n_documents + b.n_documents,
        # Every shard read the whole corpus: the same count each (max, should one differ).
        skipped={r: max(a.skipped.get(r, 0), b.skipped.get(r, 0)) for r in sorted(reasons)},
        seconds=a.seconds + b.seconds,
        done=True,
        states=states,
        format=min(a.format, b.format),
    )


def _batches(seqs: Iterator[Sequence], size: int) -> Iterator[tuple[int, list[Sequence]]]:
    first = 0
    while batch := list(itertools.islice(seqs, size)):
        yield first, batch
        first += len(batch)
