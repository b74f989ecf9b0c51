"""The pages' view models: one frozen model per page and the pieces they share
(``app.views`` builds them from storage reads). The HTML template and the ``.json`` twin
of a page render the same object, so these classes are also the JSON schemas."""

from __future__ import annotations

from app.meaning import Explanation
from app.view_base import View


class ModelSummary(View):
    slug: str
    spec: str
    corpus: str
    n_layers: int
    n_sequences: int
    n_tokens: int
    seq_len: int
    skip_first: int
    top_k: int
    created: str
    url: str


class SourceCard(View):
    """A source as the model and source pages show it (from ``storage.SourceRow`` and
    ``storage.SourceSummary``)."""

    name: str
    kind: str
    layer: int
    hook: str
    n_units: int
    mean_density: float
    dead: int
    """Units that were never positive on the corpus."""
    max_act: float
    url: str
    sae: str | None = None
    """For SAE latents: the folder the SAE was loaded from."""
    info: dict | None = None
    """For SAE latents: its config, training metrics and held-out evaluation."""


class LogitToken(View):
    token_id: int
    token: str
    value: float


class Example(View):
    rank: int
    sequence_id: int
    position: int
    """Position of the max token in its sequence."""
    value: float
    window_start: int
    """Sequence position of ``tokens[0]`` / ``acts[0]``."""
    tokens: list[str]
    acts: list[float]
    document: str
    sequence_url: str


class Neighbour(View):
    label: str
    url: str
    value: float
    """Pearson r (correlated units) or cosine similarity (decoder rows, neurons)."""
    source: str
    index: int
    explanation: str | None = None
    """Its label: the first of its explanations (``storage.METHOD_RANK``)."""


class Interval(View):
    lo: float
    hi: float
    """The interval is (lo, hi]."""
    count: int
    """Positive activations in it over the corpus (exact)."""
    share: float
    """Its share of the unit's positive activations."""
    samples: list[Example]
    """Up to 5, drawn uniformly from the whole corpus's tokens in the interval."""


class UnitLinks(View):
    prev: str | None
    next: str | None
    random: str
    share: str


class UnitPage(View):
    model: str
    source: str
    kind: str
    """``mlp`` (a neuron) or ``sae`` (a latent)."""
    hook: str
    index: int
    n_units: int
    max_act: float
    density: float
    n_tokens: int
    """Tokens the statistics cover (position 0 excluded by default)."""
    logits_top: list[LogitToken]
    logits_bottom: list[LogitToken]
    examples: list[Example]
    links: UnitLinks
    explanations: list[Explanation] = []
    """Its explanations with their scores, the one that labels it first."""
    histogram: Histogram | None = None
    """Positive activations over (0, max], exact counts."""
    logit_histogram: Histogram | None = None
    """Effect on every vocabulary logit."""
    intervals: list[Interval] = []
    correlated: list[Neighbour] = []
    correlation_tokens: int = 0
    """Tokens (a uniform sample of the corpus) the correlations are computed on."""
    mean: float | None = None
    """Its mean activation over those tokens: what mean ablation sets it to."""
    decoder_neighbours: list[Neighbour] = []
    """Latents only: highest decoder cosine similarity."""
    aligned_neurons: list[Neighbour] = []
    """Latents only: MLP neurons (up to the hook's layer) whose W_out row best aligns."""


class UnitListing(View):
    """A unit's line in its source page's list (from a ``storage.UnitRow``)."""

    index: int
    max_act: float
    density: float
    l0_share: float | None = None
    """SAE latents: the unit's share of the SAE's mean L0 (its density / sum of densities)."""
    top_logits: list[str]
    url: str
    explanation: str | None = None


class Histogram(View):
    """Bars for Plotly: ``x`` bin centres, ``y`` counts."""

    x: list[float]
    y: list[int]
    x_title: str
    y_title: str = "units"


class SourcePage(View):
    model: str
    source: SourceCard
    units: list[UnitListing]
    sort: str
    order: str
    page: int
    n_pages: int
    log_density: Histogram
    """Distribution of log10(density) over the source's units (dead units left out)."""


class ModelPage(View):
    model: ModelSummary
    sources: list[SourceCard]


class HomePage(View):
    models: list[ModelSummary]


class SequencePage(View):
    model: str
    id: int
    document: str
    offset: int
    token_ids: list[int]
    tokens: list[str]


class ExpandedExample(View):
    """A top example shown in its whole sequence; ``acts`` is None outside the window."""

    model: str
    source: str
    index: int
    example: Example
    tokens: list[str]
    acts: list[float | None]
