"""One streaming pass: corpus -> model -> per-unit statistics -> database.

Sequences are written as they stream by and the unit statistics at the end, all
inside one transaction, so memory stays bounded by the batch and the per-unit
state, and readers see the previous index until the new one is complete.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from indexer import summaries
from indexer.core import StreamingCorrelation, StreamingTopK, TopKResult, fold_batch
from indexer.corpus import Sequence, iter_sequences
from indexer.intervals import StreamingIntervals, choose_intervals
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
    """Cap on corpus tokens (rounded down to whole sequences)."""
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


@dataclass
class IndexReport:
    """What a run did, for the CLI and benchmarks."""

    slug: str
    n_sequences: int = 0
    n_tokens: int = 0
    seconds: float = 0.0
    pass_seconds: float = 0.0
    """Time in the streaming pass (model + statistics), without the final write."""
    sources: list[str] = field(default_factory=list)

    @property
    def tokens_per_second(self) -> float:
        return self.n_tokens / self.pass_seconds if self.pass_seconds else 0.0


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

    def update(self, hook_act: torch.Tensor, first_sequence: int) -> None:  # [B, T, d]
        acts = self.source.units(hook_act, self.skip)  # [B, T, units]
        fold_batch(self.topk, self.intervals, acts, first_sequence)
        self.correlation.update(acts, first_sequence)


class PassStats:
    """Every source's statistics, fed one batch at a time: each hook's activation is
    folded in as the forward pass reaches it, so only one is held at a time."""

    def __init__(self, model: Model, sources: list[Source], cfg: IndexConfig):
        self.model = model
        self.sources = [SourceStats(src, cfg, model.device) for src in sources]
        self._by_hook: dict[str, list[SourceStats]] = {}
        for st in self.sources:
            self._by_hook.setdefault(st.source.hook, []).append(st)

    def update(self, tokens: torch.Tensor, first_sequence: int) -> None:  # [B, T]
        def visit(hook: str, act: torch.Tensor) -> None:
            for st in self._by_hook[hook]:
                st.update(act, first_sequence)

        self.model.activations(tokens, sorted(self._by_hook), visit=visit)


def build_index(cfg: IndexConfig, model: Model | None = None) -> IndexReport:
    """Index every neuron of the chosen MLP layers over the corpus."""
    if cfg.seq_len < 2:
        raise ValueError("--seq-len must be at least 2")
    if cfg.tokens is not None and cfg.tokens < cfg.seq_len:
        raise ValueError(f"--tokens must be at least one sequence ({cfg.seq_len} tokens)")
    slug = cfg.name or default_slug(cfg.model)
    storage.check_slug(slug)
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

    max_sequences = cfg.tokens // cfg.seq_len if cfg.tokens else None
    seqs = iter_sequences(
        cfg.corpus,
        model.tokenize,
        seq_len=cfg.seq_len,
        bos_id=model.bos_id,
        max_sequences=max_sequences,
        text_field=cfg.text_field,
        split=cfg.split,
    )
    head = next(seqs, None)
    if head is None:
        raise ValueError(
            f"the corpus {cfg.corpus!r} gave no sequence of {cfg.seq_len} tokens "
            "(documents shorter than one sequence are skipped; try a smaller --seq-len)"
        )
    seqs = itertools.chain([head], seqs)
    # Only once the model and corpus are known to load: a failed run leaves no empty database.
    engine = storage.make_engine(cfg.db, create=True)
    report = IndexReport(slug=slug)
    started = time.perf_counter()
    stats = PassStats(model, sources, cfg)
    with engine.begin() as conn:
        model_id = storage.replace_model(
            conn,
            slug,
            spec=cfg.model,
            corpus=cfg.corpus,
            n_layers=model.n_layers,
            d_model=model.d_model,
            d_vocab=model.d_vocab,
            seq_len=cfg.seq_len,
            skip_first=0 if cfg.include_first_token else 1,
            top_k=cfg.top_k,
            options=json.dumps(options) if options else None,
        )
        bar = tqdm(
            total=max_sequences * cfg.seq_len if max_sequences else None,
            unit="tok",
            unit_scale=True,
            desc=f"indexing {slug}",
            disable=not cfg.progress,
        )
        with bar:
            for first, batch in _batches(seqs, cfg.batch_size):
                storage.add_sequences(
                    conn,
                    model_id,
                    [(first + i, s.document, s.offset, s.tokens) for i, s in enumerate(batch)],
                )
                stats.update(torch.tensor([s.tokens for s in batch]), first)
                report.n_sequences += len(batch)
                bar.update(len(batch) * cfg.seq_len)
        report.n_tokens = report.n_sequences * cfg.seq_len
        report.pass_seconds = time.perf_counter() - started

        storage.add_vocab(conn, model_id, model.token_strings(range(model.d_vocab)))
        for st in tqdm(stats.sources, desc="writing", unit="source", disable=not cfg.progress):
            _write_source(conn, model_id, st, model, cfg.seq_len)
            report.sources.append(st.source.name)
        report.seconds = time.perf_counter() - started
        storage.finish_model(conn, model_id, n_sequences=report.n_sequences, seconds=report.seconds)
    engine.dispose()
    return report


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
    effects = model.logit_effects(directions)
    logits = _logit_tables(effects)
    state = st.intervals.state()
    max_act_t = torch.from_numpy(max_act).to(state.counts.device)
    iv = choose_intervals(state, max_act_t, per_interval=st.intervals.per_bin)
    stats = _unit_stats(st, model, state, iv, effects, directions, max_act_t)
    density = state.density.cpu().numpy()
    storage.add_units(conn, source_id, max_act, density, logits, stats)
    storage.add_examples(conn, source_id, _example_columns(top, st.topk.before, seq_len))
    ex, interval = _sample_columns(iv, st.intervals.before, seq_len)
    storage.add_examples(conn, source_id, ex, interval=interval)


def _unit_stats(st: SourceStats, model: Model, state, iv, effects, directions, max_act):
    """Each unit's histograms, intervals and neighbours, for its page."""
    src = st.source
    hist = summaries.activation_histograms(state, max_act.to(state.ceiling.device))
    intervals = summaries.interval_tables(iv)
    logit_hist = summaries.logit_histograms(effects)
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
