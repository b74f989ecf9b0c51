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

import ctypes
import ctypes.util
import functools
import itertools
import json
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from indexer import summaries
from indexer.checkpoint import (
    FORMAT,
    CheckpointMismatch,
    Progress,
    ShardWork,
    load_progress,
    read_sequences,
    shard_dir,
)
from indexer.core import (
    StreamingCorrelation,
    StreamingTopK,
    TopKResult,
    fold_batch,
    merge_topk_states,
)
from indexer.corpus import Sequence, iter_sequences
from indexer.intervals import StreamingIntervals, choose_intervals
from indexer.intervals import merge_states as merge_interval_states
from spyglass import storage
from spyglass.model import Model, load_model
from spyglass.sae import SaeLoadError, load_sae
from spyglass.sources import Source, mlp_sources, sae_source

LOGIT_TOKENS = 10


@dataclass(frozen=True)
class IndexConfig:
    """What to index and how."""

    model: str = "embedded"
    """Model spec (see spyglass.model)."""
    corpus: str = "embedded"
    """Corpus spec (see indexer.corpus)."""
    db: str = "data/spyglass.db"
    """SQLite path or SQLAlchemy URL."""
    name: str | None = None
    """URL name of the model; defaults to a slug of the spec."""
    tokens: int | None = None
    """Cap on real corpus tokens (BOS included, padding not): sequences are taken in order
    while their tokens fit (``indexer.corpus.iter_sequences``' ``max_tokens``)."""
    seq_len: int = 128
    batch_size: int = 16
    top_k: int = 20
    window_before: int = 24
    """Positions kept before an example's max token."""
    window_after: int = 8
    include_first_token: bool = False
    """Let position 0 (the attention sink) into the statistics."""
    layers: tuple[int, ...] | None = None
    """MLP layers to index; all when None; () for none (SAE latents only)."""
    saes: tuple[str, ...] = ()
    """SAE folders (SAELens format) whose latents are indexed in the same pass."""
    interval_samples: int = 5
    """Samples per interval (10 equal intervals of (0, max]), drawn over the whole corpus."""
    correlation_rate: float = 1 / 32
    """Share of tokens (a uniform sample, by token hash) the neuron correlations use;
    SAE latents, mostly zero, use every token."""
    text_field: str = "text"
    split: str = "train"
    device: str | None = None
    progress: bool = True
    shard: tuple[int, int] = (0, 1)
    """(i, n): index only every n-th batch, starting at batch i; ``spyglass merge`` joins
    the n shards. (0, 1) indexes everything and writes the database."""
    work: str | None = None
    """Folder for checkpoints and shard results (default: next to the database)."""
    checkpoint_every: float = 300.0
    """Seconds between checkpoints (0: after every batch)."""
    restart: bool = False
    """Discard a checkpoint left by an earlier run instead of resuming from it."""

    def fingerprint(self) -> dict:
        """The settings that decide the result: a checkpoint or shard resumes or merges
        only under the same ones."""
        return {
            name: getattr(self, name) for name in self.__dataclass_fields__ if name not in _RUN_ONLY
        }

    def slug(self) -> str:
        return self.name or default_slug(self.model)

    def work_folder(self) -> Path:
        """Where checkpoints and shard results go: ``--work``, else ``DB.work/SLUG`` for an
        SQLite path, else ``spyglass-work/SLUG`` here."""
        if self.work:
            return Path(self.work).expanduser() / self.slug()
        if "://" in self.db:
            return Path("spyglass-work") / self.slug()
        return Path(self.db).expanduser().with_name(Path(self.db).name + ".work") / self.slug()


_RUN_ONLY = {"db", "device", "progress", "shard", "work", "checkpoint_every", "restart"}


@dataclass
class IndexReport:
    """What a run did, for the CLI and benchmarks."""

    slug: str
    n_sequences: int = 0
    n_tokens: int = 0
    """Real tokens indexed (BOS included, padding not)."""
    n_documents: int = 0
    """Documents indexed (each one's sequences all are)."""
    skipped: dict[str, int] = field(default_factory=dict)
    """Documents skipped, by reason (``indexer.corpus``)."""
    seconds: float = 0.0
    pass_seconds: float = 0.0
    """Time in the streaming pass (model + statistics), without the final write."""
    sources: list[str] = field(default_factory=list)

    @property
    def tokens_per_second(self) -> float:
        return self.n_tokens / self.pass_seconds if self.pass_seconds else 0.0

    def corpus_summary(self) -> str:
        """What was read and what was skipped, in one line: ``read 34 documents -> 40
        sequences, 3,402 tokens; skipped 2 documents (empty or whitespace only)``."""
        read = (
            f"read {_count(self.n_documents, 'document')} -> "
            f"{_count(self.n_sequences, 'sequence')}, {_count(self.n_tokens, 'token')}"
        )
        n_skipped = sum(self.skipped.values())
        if len(self.skipped) == 1:
            why = f" ({next(iter(self.skipped))})"
        else:
            why = ", ".join(f"{n:,} {reason}" for reason, n in sorted(self.skipped.items()))
            why = f" ({why})" if why else ""
        return f"{read}; skipped {_count(n_skipped, 'document')}{why}"


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def default_slug(spec: str) -> str:
    tail = spec.rstrip("/").replace("\\", "/").split("/")[-1]
    slug = "".join(c if c.isalnum() or c in "._-" else "-" for c in tail).strip("-.")
    return slug or "model"


class SourceStats:
    """The streaming statistics of one source's units."""

    def __init__(self, source: Source, cfg: IndexConfig, device: torch.device):
        skip = 0 if cfg.include_first_token else 1
        self.source, self.skip = source, skip
        self.topk = StreamingTopK(
            source.n_units,
            cfg.top_k,
            before=cfg.window_before,
            after=cfg.window_after,
            skip_first=skip,
            device=device,
        )
        self.intervals = StreamingIntervals(
            source.n_units, per_bin=cfg.interval_samples, skip_first=skip, device=device
        )
        self.correlation = StreamingCorrelation(
            source.n_units,
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
        acts = self.source.units(hook_act, self.skip, lengths)  # [B, T, units]
        fold_batch(self.topk, self.intervals, acts, first_sequence, lengths)
        self.correlation.update(acts, first_sequence, lengths)


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
        self.sources = [SourceStats(src, cfg, model.device) for src in sources]
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


@dataclass
class Plan:
    """A checked configuration with its model and sources loaded."""

    cfg: IndexConfig
    model: Model
    sources: list[Source]
    options: dict


def plan_index(cfg: IndexConfig, model: Model | None = None) -> Plan:
    """Check ``cfg`` and load what it names; every bad setting raises ValueError."""
    if cfg.seq_len < 2:
        raise ValueError("--seq-len must be at least 2")
    if cfg.tokens is not None and cfg.tokens < cfg.seq_len:
        raise ValueError(f"--tokens must be at least one sequence ({cfg.seq_len} tokens)")
    i, n = cfg.shard
    if not 0 <= i < n:
        raise ValueError(f"--shard must be I/N with 0 <= I < N, got {i}/{n}")
    if cfg.checkpoint_every < 0:
        raise ValueError("--checkpoint-every must be at least 0 seconds")
    storage.check_slug(cfg.slug())
    options = sae_model_options(cfg.saes)
    model = model or load_model(cfg.model, cfg.device, options or None)
    if cfg.seq_len > model.n_ctx:
        raise ValueError(f"--seq-len {cfg.seq_len} exceeds the model's context of {model.n_ctx}")
    layers = list(cfg.layers) if cfg.layers is not None else list(range(model.n_layers))
    bad = [layer for layer in layers if not 0 <= layer < model.n_layers]
    if bad:
        raise ValueError(f"layers must be in 0..{model.n_layers - 1}, got {bad}")
    try:
        sources = mlp_sources(model, layers) + [sae_source(spec, model) for spec in cfg.saes]
    except SaeLoadError as exc:
        raise ValueError(str(exc)) from exc
    if not sources:
        raise ValueError("nothing to index: no MLP layer and no SAE")
    names = [src.name for src in sources]
    if len(set(names)) < len(names):
        raise ValueError(f"two sources share a name: {sorted(names)}")
    return Plan(cfg, model, sources, options)


def build_index(cfg: IndexConfig, model: Model | None = None) -> IndexReport:
    """Index the chosen MLP layers' neurons and SAEs' latents over the corpus, resuming
    from the checkpoint an interrupted run of the same settings left. One shard of n
    (``cfg.shard``) leaves its result in its work folder for ``merge_shards``; a whole run
    writes the database in one transaction and removes its work folder."""
    plan = plan_index(cfg, model)
    work = ShardWork(shard_dir(cfg.work_folder(), cfg.shard))
    try:
        progress = run_pass(plan, work)
    finally:
        work.close()
    if cfg.shard != (0, 1):
        return IndexReport(
            slug=cfg.slug(),
            n_sequences=progress.n_sequences,
            n_tokens=progress.n_tokens,
            n_documents=progress.n_documents,
            skipped=dict(progress.skipped),
            pass_seconds=progress.seconds,
            seconds=progress.seconds,
            sources=[src.name for src in plan.sources],
        )
    report = write_index(plan, progress.states, [read_sequences(work.folder)], progress)
    work.remove()
    return report


def run_pass(plan: Plan, work: ShardWork) -> Progress:
    """The streaming pass over this shard's batches, from the last checkpoint on."""
    cfg, model = plan.cfg, plan.model
    progress = None if cfg.restart else work.load()
    if progress is not None and progress.format != FORMAT:
        raise CheckpointMismatch(
            f"{work.folder} holds a checkpoint made by an older Spyglass, which cut the "
            "corpus differently; run with --restart to discard it"
        )
    if progress is not None and progress.fingerprint != cfg.fingerprint():
        raise CheckpointMismatch(
            f"{work.folder} holds a checkpoint of a run with other settings; "
            "run with --restart to discard it, or with the settings it was made with"
        )
    progress = progress or Progress(cfg.fingerprint(), cfg.shard, format=FORMAT)
    work.resume(progress, cfg.batch_size)  # drops sequences past it (all, for a new run)
    if progress.done:
        return progress
    stats = PassStats(model, plan.sources, cfg)
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
            _return_freed_memory()  # the ranked top-k copies just saved

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
    """Join the finished shards in ``folders`` (all n of one run) into the database: each
    source's state is their exact merge, as one pass over the whole corpus would have left
    it, and the database is written as that pass would have written it."""
    folders = sorted(set(folders))
    found = [(f, load_progress(f)) for f in folders]
    missing = [str(f) for f, p in found if p is None or not p.done]
    if not found or missing:
        raise ValueError(f"no finished shard in {', '.join(missing) or 'the given folders'}")
    older = [str(f) for f, p in found if p.format != FORMAT]
    if older:
        raise ValueError(
            f"{', '.join(older)}: shards made by an older Spyglass, which cut the corpus "
            "differently; index them again"
        )
    first = found[0][1]
    for folder, prog in found[1:]:
        if prog.fingerprint != first.fingerprint:
            raise ValueError(f"{folder} is a shard of a run with other settings than {folders[0]}")
    n = first.shard[1]
    shards = sorted(p.shard[0] for _, p in found)
    if shards != list(range(n)) or any(p.shard[1] != n for _, p in found):
        raise ValueError(f"need shards 0..{n - 1} of {n} exactly once, got {shards}")
    cfg = IndexConfig(**first.fingerprint, db=db, progress=progress)
    plan = plan_index(cfg)
    merged = first
    for _, prog in found[1:]:
        merged = merge_progress(merged, prog)
    return write_index(plan, merged.states, [read_sequences(f) for f, _ in found], merged)


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


def write_index(
    plan: Plan,
    states: dict[str, dict],
    sequences: list[Iterable[list[tuple]]],
    progress: Progress,
) -> IndexReport:
    """Write the index from the streamed ``states`` and the ``sequences`` (chunks of
    ``(id, document, offset, tokens)`` rows, real tokens only) in one transaction: readers
    see the previous index until it commits."""
    cfg, model = plan.cfg, plan.model
    started = time.perf_counter()
    report = IndexReport(
        slug=cfg.slug(),
        n_sequences=progress.n_sequences,
        n_tokens=progress.n_tokens,
        n_documents=progress.n_documents,
        skipped=dict(progress.skipped),
        pass_seconds=progress.seconds,
    )
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
            for chunks in sequences:
                for rows in chunks:
                    storage.add_sequences(conn, model_id, rows)
            storage.add_vocab(conn, model_id, model.token_strings(range(model.d_vocab)))
            sources = tqdm(plan.sources, desc="writing", unit="source", disable=not cfg.progress)
            for src in sources:
                st = SourceStats(src, cfg, model.device)
                st.load_state_dict(states.pop(src.name))  # freed once written
                _write_source(conn, model_id, st, model, cfg.seq_len)
                del st
                _return_freed_memory()
                report.sources.append(src.name)
            report.seconds = progress.seconds + time.perf_counter() - started
            storage.finish_model(
                conn,
                model_id,
                n_sequences=report.n_sequences,
                n_tokens=report.n_tokens,
                seconds=report.seconds,
            )
    finally:
        engine.dispose()
    return report


@functools.cache
def _libc():
    name = ctypes.util.find_library("c")
    return ctypes.CDLL(name) if name else None


def _return_freed_memory() -> None:
    """Hand the heap's free pages back to the system (glibc's ``malloc_trim``). A
    checkpoint's copies and, while writing, each source's state are freed as the run goes
    on; without this, glibc keeps what fits below its (raised) mmap threshold, and RSS
    creeps up checkpoint by checkpoint and source by source."""
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


def sae_model_options(specs: tuple[str, ...]) -> dict:
    """The TransformerLens loading options the SAEs were trained with (their
    ``model_from_pretrained_kwargs``): one set for the pass, so they must agree."""
    found = {}
    for spec in specs:
        try:
            found[spec] = load_sae(spec).cfg.model_from_pretrained_kwargs
        except SaeLoadError as exc:
            raise ValueError(str(exc)) from exc
    distinct = {json.dumps(o, sort_keys=True) for o in found.values()}
    if len(distinct) > 1:
        raise ValueError(
            "the SAEs were trained on differently loaded models "
            f"(model_from_pretrained_kwargs {sorted(distinct)}); index them in separate runs"
        )
    return next(iter(found.values()), {})


def _batches(seqs: Iterator[Sequence], size: int) -> Iterator[tuple[int, list[Sequence]]]:
    first = 0
    while batch := list(itertools.islice(seqs, size)):
        yield first, batch
        first += len(batch)


def _write_source(conn, model_id: int, st: SourceStats, model: Model, seq_len: int) -> None:
    """The source's row, one row per unit, and its examples."""
    src = st.source
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
    top = st.topk.result()
    values = top.values.cpu().numpy()  # [k, U]
    max_act = np.where(np.isfinite(values[0]), values[0], 0.0)
    directions = st.source.directions(model)
    logits, logit_hist = _logit_summaries(model, directions)
    state = st.intervals.state()
    max_act_t = torch.from_numpy(max_act).to(state.counts.device)
    iv = choose_intervals(state, max_act_t, per_interval=st.intervals.per_bin)
    stats = _unit_stats(st, model, state, iv, logit_hist, directions, max_act_t)
    density = state.density.cpu().numpy()
    storage.add_units(conn, source_id, max_act, density, logits, stats)
    storage.add_examples(conn, source_id, _example_columns(top, st.topk.before, seq_len))
    ex, interval = _sample_columns(iv, st.intervals.before, seq_len)
    storage.add_examples(conn, source_id, ex, interval=interval)


def _logit_summaries(model: Model, directions: torch.Tensor, chunk: int = 512):
    """Each unit's top and bottom logit effects and their histogram over the vocabulary,
    ``chunk`` units at a time (the effects of all of an SAE's latents would be GBs)."""
    tables, hists = [], []
    for lo in range(0, directions.shape[0], chunk):
        effects = model.logit_effects(directions[lo : lo + chunk])  # [chunk, d_vocab]
        tables += _logit_tables(effects)
        hists += summaries.logit_histograms(effects)
    return tables, hists


def _unit_stats(st: SourceStats, model: Model, state, iv, logit_hist, directions, max_act):
    """Each unit's histograms, intervals and neighbours, for its page."""
    src = st.source
    hist = summaries.activation_histograms(state, max_act.to(state.ceiling.device))
    intervals = summaries.interval_tables(iv)
    corr = summaries.pairs(*st.correlation.top(summaries.NEIGHBOURS))
    decoder, neurons = _latent_neighbours(src, model, directions) if src.sae else (None, None)
    out_stats = []
    for u in range(src.n_units):
        entry = {
            "hist": hist[u],
            "intervals": intervals[u],
            "logit_hist": logit_hist[u],
            "correlated": corr[u],
            "correlation_tokens": st.correlation.n_tokens,
        }
        if decoder is not None:
            entry["decoder"] = decoder[u]
            entry["neurons"] = neurons[u]
        out_stats.append(entry)
    return out_stats


def _latent_neighbours(src: Source, model: Model, directions: torch.Tensor):
    """Per latent: the nearest other decoder rows, and the neurons of the layers writing to
    the SAE's hook whose W_out rows align best with its decoder row (residual-stream SAEs)."""
    k = summaries.NEIGHBOURS
    decoder = summaries.pairs(*summaries.cosine_top(directions, directions, k, exclude_self=True))
    layers = neuron_layers_for(src.hook, src.layer, model.n_layers)
    if not layers or directions.shape[1] != model.d_model:
        return decoder, [[] for _ in range(src.n_units)]
    out = torch.cat([model.neuron_directions(layer) for layer in layers]).to(directions)
    idx, cos = summaries.cosine_top(directions, out, k, exclude_self=False)
    d_mlp = model.d_mlp
    neurons = [
        [[layers[i // d_mlp], i % d_mlp, round(c, 4)] for i, c in zip(*row, strict=True)]
        for row in zip(idx.tolist(), cos.tolist(), strict=True)
    ]
    return decoder, neurons


def neuron_layers_for(hook: str, layer: int, n_layers: int) -> list[int]:
    """The MLP layers whose neurons write into ``hook`` (of block ``layer``): all before it
    for the residual stream, the block's own for its MLP output."""
    last = hook.rsplit(".", 1)[-1]
    if last in ("hook_mlp_out", "hook_post", "hook_pre"):
        return [layer]
    if last in ("hook_resid_pre", "hook_resid_mid", "hook_attn_out", "hook_z"):
        return list(range(min(layer, n_layers)))  # written before this block's MLP
    return list(range(min(layer, n_layers - 1) + 1))  # hook_resid_post and others


def _sample_columns(iv, before: int, seq_len: int) -> tuple[storage.ExampleColumns, np.ndarray]:
    """Every interval sample as a row, and its interval."""
    tokens = iv.tokens.cpu().numpy()  # [U, n, s]
    unit, interval, rank = np.nonzero(tokens >= 0)
    columns = _columns(
        unit,
        rank,
        tokens[unit, interval, rank],
        iv.values.cpu().numpy()[unit, interval, rank],
        iv.windows.cpu().numpy()[unit, interval, rank],
        before,
        seq_len,
    )
    return columns, interval


def _logit_tables(effects: torch.Tensor) -> list[dict]:  # [U, d_vocab]
    up = effects.topk(LOGIT_TOKENS, dim=1)
    down = effects.topk(LOGIT_TOKENS, dim=1, largest=False)
    return [
        {"top": _pairs(ui, uv), "bottom": _pairs(di, dv)}
        for ui, uv, di, dv in zip(
            up.indices.tolist(),
            up.values.tolist(),
            down.indices.tolist(),
            down.values.tolist(),
            strict=True,
        )
    ]


def _pairs(ids: list[int], values: list[float]) -> list[list]:
    return [[i, round(v, 5)] for i, v in zip(ids, values, strict=True)]


def _example_columns(top: TopKResult, before: int, seq_len: int) -> storage.ExampleColumns:
    """Every positive top-k entry as an example row."""
    values = top.values.cpu().numpy()  # [k, U]
    # Only positive activations are examples of what makes a unit fire.
    rank, unit = np.nonzero(values > 0)
    tokens = top.tokens.cpu().numpy()[rank, unit]
    windows = top.windows.cpu().numpy()[rank, unit]  # [n, W]
    return _columns(unit, rank, tokens, values[rank, unit], windows, before, seq_len)


def _columns(unit, rank, tokens, values, windows, before: int, seq_len: int):
    """Example rows from global token indices and windows [n, W] (NaN off the sequence),
    each window trimmed to its sequence."""
    seq, pos = np.divmod(tokens, seq_len)
    inside = ~np.isnan(windows)
    first = inside.argmax(axis=1)
    last = windows.shape[1] - inside[:, ::-1].argmax(axis=1)
    return storage.ExampleColumns(
        unit=unit,
        rank=rank,
        sequence_id=seq,
        position=pos,
        value=values,
        window_start=pos - before + first,
        acts=[w[a:b] for w, a, b in zip(windows, first, last, strict=True)],
    )
