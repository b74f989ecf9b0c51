"""What an index run is asked to do: its settings, its checked plan, and its report."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from spyglass import storage
from spyglass.model import Model, ModelLoadError, load_model
from spyglass.sae import SaeLoadError, load_sae
from spyglass.sources import Source, mlp_sources, sae_source, transcoder_sources


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
    transcoders: tuple[str, ...] = ()
    """Transcoder sets (circuit-tracer's or SAELens's layout): every layer's latents are
    indexed in the same pass, one source per layer."""
    interval_samples: int = 5
    """Samples per interval (10 equal intervals of (0, max]), drawn over the whole corpus."""
    correlation_rate: float = 1 / 32
    """Share of tokens (a uniform sample, by token hash) a dense source's correlations use,
    at most ``correlation.DENSE_CAP`` of them; a sparse source's use every token (at most
    ``correlation.SPARSE_CAP``)."""
    log_below_density: float = 1 / 64
    """A latent source is indexed sparse (its activations logged to disk, its correlations
    exact over every token) when its latents are expected to fire on fewer than this
    share of tokens (``activation_log.keeps_log``); a denser one (a transcoder's 64 of
    768) is indexed as neurons are."""
    text_field: str = "text"
    split: str = "train"
    device: str | None = None
    progress: bool = True
    shard: tuple[int, int] = (0, 1)
    """(i, n): index only every n-th batch, starting at batch i; ``spyglass merge`` joins
    the n shards. (0, 1) indexes everything and writes the database."""
    units: tuple[int, int] = (0, 1)
    """(i, n): index only slice i of n of every source's units (``stats.unit_range``),
    over the whole corpus (or the token shard); ``spyglass merge`` joins the slices.
    Memory per run falls with n; each run pays for the forward pass."""
    memory: float | None = None
    """GB this run may use (default: what the machine has free); a plan that needs more
    is refused before it starts."""
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


_RUN_ONLY = {
    "db",
    "device",
    "progress",
    "shard",
    "units",
    "memory",
    "work",
    "checkpoint_every",
    "restart",
}


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
    write_seconds: dict[str, float] = field(default_factory=dict)
    """Seconds of the write phase by part (``indexer.write.PhaseClock``)."""
    kept: list[str] = field(default_factory=list)
    """What the index kept of earlier indexes' explanations and labels, a line each
    (``storage.KeptReport.lines``)."""

    @classmethod
    def from_progress(cls, slug: str, progress) -> IndexReport:
        """The report of a pass (an ``indexer.checkpoint.Progress``): its corpus counts
        and seconds."""
        return cls(
            slug=slug,
            n_sequences=progress.n_sequences,
            n_tokens=progress.n_tokens,
            n_documents=progress.n_documents,
            skipped=dict(progress.skipped),
            pass_seconds=progress.seconds,
            seconds=progress.seconds,
        )

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
    for flag, (i, n) in (("--shard", cfg.shard), ("--units", cfg.units)):
        if not 0 <= i < n:
            raise ValueError(f"{flag} must be I/N with 0 <= I < N, got {i}/{n}")
    if cfg.memory is not None and cfg.memory <= 0:
        raise ValueError("--memory must be a positive number of GB")
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
        for spec in cfg.transcoders:
            sources += transcoder_sources(spec, model)
    except (SaeLoadError, ModelLoadError) as exc:
        raise ValueError(str(exc)) from exc
    if not sources:
        raise ValueError("nothing to index: no MLP layer, SAE or transcoder")
    narrow = [src.name for src in sources if src.n_units < cfg.units[1]]
    if narrow:
        raise ValueError(f"--units {cfg.units[0]}/{cfg.units[1]}: {narrow[0]} has fewer units")
    names = [src.name for src in sources]
    if len(set(names)) < len(names):
        raise ValueError(f"two sources share a name: {sorted(names)}")
    return Plan(cfg, model, sources, options)


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
