"""What a read returns: one frozen record per row, and a unit's typed statistics."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import orjson

__all__ = [
    "ModelRow",
    "SourceRow",
    "UnitRow",
    "UnitStats",
    "ActivationHistogram",
    "LogitHistogram",
    "ExampleRow",
    "SequenceRow",
    "SourceSummary",
]


@dataclass(frozen=True)
class ModelRow:
    id: int
    slug: str
    """URL name of the indexed model."""
    spec: str
    """What `load_model` needs to load it again for live requests."""
    corpus: str
    n_layers: int
    d_model: int
    d_vocab: int
    seq_len: int
    """Most tokens a sequence holds: a document's last sequence may hold fewer."""
    n_sequences: int
    n_tokens: int
    """Real tokens of the sequences (BOS included; a short sequence's padding was never
    part of the index)."""
    skip_first: int
    """Positions at the start of each sequence left out of unit statistics."""
    top_k: int
    seconds: float
    """Wall time of the indexing run."""
    created: str
    options: dict | None = None
    """TransformerLens loading options of the indexed model (its SAEs' training options)."""

    @property
    def unit_tokens(self) -> int:
        """Tokens each unit's statistics were taken over: the real tokens less the first
        ``skip_first`` of each sequence (every sequence holds at least one token)."""
        return self.n_tokens - self.n_sequences * self.skip_first


@dataclass(frozen=True)
class SourceRow:
    id: int
    model_id: int
    name: str
    """URL name, e.g. ``5-mlp``."""
    kind: str
    layer: int
    hook: str
    """TransformerLens hook point the units are read from."""
    n_units: int
    sae: str | None = None
    """For SAE latents: the folder the SAE was loaded from."""
    info: dict | None = None
    """For SAE latents: the SAE's config and metrics (training and eval)."""


@dataclass(frozen=True)
class UnitRow:
    source_id: int
    idx: int
    max_act: float
    density: float
    logits: dict
    """``{"top": [[token_id, value], ...], "bottom": [...]}`` of direction @ W_U."""
    stats: UnitStats | None = None
    """Histograms, intervals and neighbours; None for a unit written without them."""


@dataclass(frozen=True)
class ActivationHistogram:
    """Exact counts of a unit's positive activations in equal bars over (0, max]."""

    width: float
    """Bar i holds the activations in (i·width, (i+1)·width]."""
    counts: list[int]


@dataclass(frozen=True)
class LogitHistogram:
    """A unit's effect on every vocabulary logit, counted in equal bins over [lo, hi]."""

    lo: float
    hi: float
    counts: list[int]


@dataclass(frozen=True)
class UnitStats:
    """A unit's statistics beside its examples: the indexer builds them
    (``indexer.write``), the pages read them (``app.views``). Stored as one JSON object in
    ``units.stats`` under these field names, each written only when it has a value."""

    hist: ActivationHistogram | None = None
    """Its activation histogram; None if it never fired."""
    logit_hist: LogitHistogram | None = None
    intervals: list[tuple[float, float, int]] = field(default_factory=list)
    """``(lo, hi, count)`` of each interval of (0, max] its samples are drawn from."""
    correlated: list[tuple[int, float]] = field(default_factory=list)
    """``(unit, r)``: the units of its source most correlated with it, best first."""
    correlation_tokens: int = 0
    """Tokens the correlations were taken over."""
    mean: float | None = None
    """Its mean activation over those same tokens (a uniform sample of the corpus, all of
    it while it fits): what mean ablation sets it to. None in older indexes."""
    decoder: list[tuple[int, float]] = field(default_factory=list)
    """SAE latents: ``(latent, cosine)`` of the nearest decoder rows."""
    neurons: list[tuple[int, int, float]] = field(default_factory=list)
    """SAE latents: ``(layer, neuron, cosine)`` of the best aligned MLP output rows."""

    def to_json(self) -> str:
        out: dict = {}
        if self.hist is not None:
            out["hist"] = {"width": self.hist.width, "counts": self.hist.counts}
        if self.logit_hist is not None:
            lh = self.logit_hist
            out["logit_hist"] = {"lo": lh.lo, "hi": lh.hi, "counts": lh.counts}
        for name in ("intervals", "correlated", "decoder", "neurons"):
            if value := getattr(self, name):
                out[name] = value
        out["correlation_tokens"] = self.correlation_tokens
        if self.mean is not None:
            out["mean"] = self.mean
        return orjson.dumps(out, option=orjson.OPT_SERIALIZE_NUMPY).decode()

    @classmethod
    def from_json(cls, text: str) -> UnitStats:
        raw = json.loads(text)
        hist, lh = raw.get("hist"), raw.get("logit_hist")
        return cls(
            hist=ActivationHistogram(hist["width"], hist["counts"]) if hist else None,
            logit_hist=LogitHistogram(lh["lo"], lh["hi"], lh["counts"]) if lh else None,
            intervals=[tuple(x) for x in raw.get("intervals") or []],
            correlated=[tuple(x) for x in raw.get("correlated") or []],
            correlation_tokens=raw.get("correlation_tokens", 0),
            mean=raw.get("mean"),
            decoder=[tuple(x) for x in raw.get("decoder") or []],
            neurons=[tuple(x) for x in raw.get("neurons") or []],
        )


@dataclass(frozen=True)
class ExampleRow:
    rank: int
    sequence_id: int
    position: int
    """Position of the max token within its sequence."""
    value: float
    window_start: int
    """Sequence position of ``acts[0]``."""
    acts: list[float]


@dataclass(frozen=True)
class SequenceRow:
    id: int
    document: str
    offset: int
    """Index of this sequence's first document token in the document."""
    tokens: list[int]
    """Its real tokens, BOS first when the model uses one: ``seq_len`` of them, or fewer in
    a document's last sequence (never padding)."""


@dataclass(frozen=True)
class SourceSummary:
    mean_density: float
    dead: int
    """Units never positive over the corpus."""
    max_act: float
