"""The live requests' contract: request and response models, and the caps they are held to.

Every check here runs before model work, except :func:`check_tokens`, which needs the
tokenizer and runs first thing inside it. A breach raises :class:`LimitError`, answered with
422 and the one error schema (:mod:`app.errors`) naming the field and the rule.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Query
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from app import views
from app.view_base import LimitError  # noqa: F401 - raised here, re-exported
from spyglass.model import Model
from spyglass.settings import Settings

TOP_UNITS = 25
"""Units in a prompt's overall top list."""
TOP_PER_TOKEN = 10
"""Units listed for each token of a prompt."""
PREVIEW_BEFORE, PREVIEW_AFTER = 8, 2
"""Tokens around the max in a unit's mini preview."""
DEFAULT_NEW_TOKENS = 32
MIN_TEMPERATURE = 0.01
"""Below it (and above 0, which is greedy) logits / temperature overflow or lose all
precision in float32, so sampling would divide by an underflowed zero."""
MAX_SEED = 2**31 - 1


def _blank_to_none(value):
    """An HTML form sends an empty box as ``""``: read it as not given."""
    return None if value == "" else value


OptionalInt = Annotated[int | None, BeforeValidator(_blank_to_none)]
OptionalFloat = Annotated[float | None, BeforeValidator(_blank_to_none)]
OptionalStr = Annotated[str | None, BeforeValidator(_blank_to_none)]


class Request(BaseModel):
    """Frozen; NaN and infinities refused; unknown fields refused (a typo is a 422, not a
    silently ignored setting)."""

    model_config = ConfigDict(frozen=True, allow_inf_nan=False, extra="forbid")


# ---- checks ----------------------------------------------------------------------------------


def check_text(text: str, settings: Settings, field: str = "prompt") -> None:
    """Cheap checks, before any model work."""
    if not text.strip():
        raise LimitError(f"{field} is empty", field=field, rule="not_empty")
    if not any(c.isprintable() and not c.isspace() for c in text):
        raise LimitError(f"{field} has no printable characters", field=field, rule="printable")
    if len(text) > settings.max_prompt_chars:
        raise LimitError(
            f"{field} is {len(text)} characters; the limit is {settings.max_prompt_chars}",
            field=field,
            rule="max_length",
        )


def check_tokens(model: Model, text: str, settings: Settings, field: str = "prompt") -> list[int]:
    """The prompt's ids (BOS first where the model uses one), checked after tokenizing:
    within ``max_prompt_tokens`` and the model's context."""
    ids = model.encode_prompt(text)
    if len(ids) == (model.bos_id is not None):
        raise LimitError(f"{field} tokenizes to no tokens", field=field, rule="no_tokens")
    limit = min(settings.max_prompt_tokens, model.n_ctx)
    if len(ids) > limit:
        why = "the limit" if limit == settings.max_prompt_tokens else "the model's context"
        raise LimitError(
            f"{field} is {len(ids)} tokens; {why} is {limit}", field=field, rule="max_tokens"
        )
    return ids


def check_range(name: str, value: float, lo: float, hi: float) -> None:
    if not lo <= value <= hi:
        raise LimitError(
            f"{name} must be between {lo:g} and {hi:g}, got {value:g}", field=name, rule="range"
        )


def check_generation(
    max_new_tokens: int | None, temperature: float, seed: int, settings: Settings
) -> int:
    """Check a generation's settings; returns the number of new tokens (with its default)."""
    n_new = max_new_tokens
    if n_new is None:
        n_new = min(DEFAULT_NEW_TOKENS, settings.max_new_tokens)
    check_range("max_new_tokens", n_new, 1, settings.max_new_tokens)
    check_range("temperature", temperature, 0, settings.max_temperature)
    if 0 < temperature < MIN_TEMPERATURE:
        raise LimitError(
            f"temperature must be 0 (greedy) or at least {MIN_TEMPERATURE:g}, got {temperature:g}",
            field="temperature",
            rule="range",
        )
    check_range("seed", seed, 0, MAX_SEED)
    return n_new


def check_context(model: Model, n_prompt: int, n_new: int) -> None:
    if n_prompt + n_new > model.n_ctx:
        raise LimitError(
            f"prompt ({n_prompt} tokens) plus new tokens ({n_new}) exceed the model's "
            f"context of {model.n_ctx}",
            field="max_new_tokens",
            rule="context",
        )


# ---- a unit's activations, and steering with it --------------------------------------------


class ActivationRequest(Request):
    prompt: str = Field(description="Text to run through the model.")


class SteerRequest(Request):
    prompt: str = Field(description="Text to continue.")
    coefficient: OptionalFloat = Field(
        None, description="Added to the neuron's activation; default: its max activation."
    )
    max_new_tokens: OptionalInt = Field(
        None, description="Tokens to generate; default: 32 or the server's cap if lower."
    )
    temperature: float = Field(0.7, description="Sampling temperature; 0 is greedy.")
    seed: int = Field(16, description="Seed shared by the default and steered runs.")


class TokenActivation(views.View):
    token: str
    value: float


class ActivationResult(views.View):
    model: str
    source: str
    index: int
    max_act: float
    """The unit's max over the indexed corpus: the colour scale."""
    tokens: list[TokenActivation]
    prompt_max: float


class SteerResult(views.View):
    model: str
    source: str
    index: int
    prompt: str
    coefficient: float
    seed: int
    temperature: float
    max_new_tokens: int
    default: str
    steered: str


# ---- which units fire on a prompt ----------------------------------------------------------


class PromptRequest(Request):
    text: str = Field("", description="Text to run through the model.")
    source: list[str] = Field(
        default_factory=list,
        description="Sources to search (repeatable), e.g. 5-mlp; default: all of the model's.",
    )
    rank: Literal["activation", "relative"] = Field(
        "activation",
        description="Rank units by activation, or by activation / the unit's corpus max "
        "(so layers and SAEs with different scales compare).",
    )


class FiringUnit(views.View):
    source: str
    index: int
    value: float
    position: int
    """The token where the value is taken (the unit's max over the prompt, for the top list)."""
    url: str
    """The unit's page, with the prompt carried over."""
    relative: float | None = None
    """``value`` / the unit's corpus max, when ranked that way."""
    density: float | None = None
    max_act: float | None = None
    """The unit's max over the indexed corpus."""
    preview: views.Example | None = None
    """A few tokens around the unit's top corpus example."""
    explanation: str | None = None
    """Its label (``storage.METHOD_RANK``)."""


class TokenUnits(views.View):
    position: int
    token: str
    units: list[FiringUnit]
    """The top units at this token, across the chosen sources."""


class PromptResult(views.View):
    model: str
    text: str
    rank: str = "activation"
    sources: list[str]
    """The sources searched."""
    all_sources: list[str]
    skip_first: int
    """Positions left out, as in the index (the attention sink)."""
    tokens: list[TokenUnits] = []
    top: list[FiringUnit] = []
    """The top units by max over the prompt, merged exactly across the sources."""


# ---- steering with several units -----------------------------------------------------------


class SteerUnit(Request):
    source: str = Field(description="The unit's source, e.g. 5-mlp or 12-res-topk-4608.")
    index: int = Field(description="The unit's index in its source.")
    mode: Literal["add", "clamp"] = Field(
        "add",
        description="add: strength x the unit's direction (a neuron's activation + strength; "
        "a latent's decoder row x strength); clamp: set the unit's activation to strength.",
    )
    strength: float


class MultiSteerRequest(Request):
    prompt: str = Field(description="Text to continue.")
    units: list[SteerUnit] = Field(description="The units to steer, each with its own strength.")
    positions: Literal["all", "prompt"] = Field(
        "all", description="Edit every position, or the prompt's only (not the generated ones)."
    )
    max_new_tokens: OptionalInt = Field(
        None, description="Tokens to generate; default: 32 or the server's cap if lower."
    )
    temperature: float = Field(0.7, description="Sampling temperature; 0 is greedy.")
    seed: int = Field(16, description="Seed shared by the default and steered runs.")


class SteerQuery(Request):
    """The steering page's query: parallel ``unit`` / ``mode`` / ``strength`` lists, so a
    setup is a plain URL (empty rows of the form are skipped)."""

    prompt: str = ""
    unit: list[str] = Field(default_factory=list, description="SOURCE/INDEX, repeatable.")
    mode: list[str] = Field(default_factory=list, description="add or clamp, one per unit.")
    strength: list[str] = Field(default_factory=list, description="One per unit.")
    positions: Literal["all", "prompt"] = "all"
    max_new_tokens: OptionalInt = None
    temperature: float = 0.7
    seed: int = 16

    def request(self) -> MultiSteerRequest | None:
        """The steering request, or None when the form is still empty."""
        modes = self.mode or ["add"] * len(self.unit)
        if not len(self.unit) == len(modes) == len(self.strength):
            raise LimitError(
                "give one strength (and one mode, or none) per unit",
                field="strength",
                rule="one_per_unit",
            )
        units = []
        for i, (spec, mode, strength) in enumerate(
            zip(self.unit, modes, self.strength, strict=True)
        ):
            if not spec.strip():
                continue
            source, _, index = spec.strip().rpartition("/")
            if not source or not index.isdigit():
                raise LimitError(
                    f"unit {spec!r} is not SOURCE/INDEX, e.g. 5-mlp/123",
                    field=f"unit.{i}",
                    rule="format",
                )
            if mode not in ("add", "clamp"):
                raise LimitError(
                    f"mode {mode!r} of {spec} must be add or clamp",
                    field=f"mode.{i}",
                    rule="enum",
                )
            try:
                value = float(strength)
            except ValueError:
                value = float("nan")
            if value != value or value in (float("inf"), float("-inf")):
                raise LimitError(
                    f"strength {strength!r} of {spec} is not a number (or not finite)",
                    field=f"strength.{i}",
                    rule="number",
                )
            units.append(SteerUnit(source=source, index=int(index), mode=mode, strength=value))
        if not self.prompt and not units:
            return None
        return MultiSteerRequest(
            prompt=self.prompt,
            units=units,
            positions=self.positions,
            max_new_tokens=self.max_new_tokens,
            temperature=self.temperature,
            seed=self.seed,
        )


class SteeredUnit(views.View):
    source: str
    index: int
    mode: str
    strength: float
    url: str
    explanation: str | None = None


class Completion(views.View):
    tokens: list[str]
    text: str


class MultiSteerResult(views.View):
    model: str
    prompt: str = ""
    units: list[SteeredUnit] = []
    positions: str = "all"
    max_new_tokens: int = DEFAULT_NEW_TOKENS
    temperature: float = 0.7
    seed: int = 16
    default: Completion | None = None
    steered: Completion | None = None
    diverge_at: int | None = None
    """The first generated token where the two completions differ; None if they never do."""
    share: str = ""
    """This setup's URL."""


# ---- ablation effect on a top example ------------------------------------------------------


class TokenAblation(views.View):
    token: str
    position: int
    loss_delta: float | None
    """Ablated minus clean loss of predicting this token (None at position 0)."""
    up: list[views.LogitToken]
    """Next-token probabilities here that rose most (value: the change)."""
    down: list[views.LogitToken]


AblationMode = Annotated[
    Literal["zero", "mean"],
    Query(description="zero: the unit set to 0; mean: set to its mean activation over the "
          "corpus sample (for a latent, its decoder row times the change)."),
]  # fmt: skip


class AblationResult(views.View):
    model: str
    source: str
    index: int
    rank: int
    mode: str = "zero"
    value: float = 0.0
    """What the unit was set to: 0, or its mean."""
    sequence_id: int
    tokens: list[TokenAblation]
    """The example's window, token by token."""
    scale: float
    """Largest |loss change| in the window: the colour scale."""


# ---- direct logit attribution --------------------------------------------------------------


class AttributionRequest(Request):
    text: str = Field("", description="The prompt.")
    position: OptionalInt = Field(None, description="Token position; default: the last.")
    target: OptionalStr = Field(
        None,
        description="The token whose logit is explained (one token of text); "
        "default: the model's top prediction.",
    )
    other: OptionalStr = Field(
        None, description="A second token: explain logit[target] - logit[other]."
    )


class Part(views.View):
    label: str
    value: float
    url: str | None = None
    source: str | None = None
    """For a neuron or latent: its source and index, and its label."""
    index: int | None = None
    explanation: str | None = None


class AttributionResult(views.View):
    model: str
    text: str
    tokens: list[str] = []
    position: int = 0
    target: str | None = None
    other: str | None = None
    logit: float = 0.0
    """The model's logit for the target (minus the other's)."""
    bias: float = 0.0
    """b_U (and the final norm's bias), which no component explains."""
    parts_sum: float = 0.0
    """The sum of every part below: logit - bias, up to float rounding."""
    scale: float = 0.0
    """The final norm's scale at the position, frozen from the forward pass."""
    components: list[Part] = []
    """Embedding, each layer's attention (heads + bias) and MLP."""
    heads: list[list[float]] = []
    """[layer][head] each head's direct contribution."""
    neurons: list[Part] = []
    """Each layer's top 3 neurons by |contribution| (activation x W_out row)."""
    latents: list[Part] = []
    """Each indexed SAE's top 10 latents by |contribution| (activation x W_dec row)."""
