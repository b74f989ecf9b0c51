"""Live requests: a unit's activations on a typed prompt, and steering with it.

Inputs are checked against the documented caps (Settings) before any model work;
a breach raises :class:`LimitError`, answered with 422 and a message naming the cap.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Connection

from app import views
from app.model_service import ModelService
from spyglass import storage
from spyglass.model import Model
from spyglass.settings import Settings
from spyglass.sources import Source

DEFAULT_NEW_TOKENS = 32


class LimitError(Exception):
    """Input outside a documented cap (answered with 422)."""


class ActivationRequest(BaseModel):
    model_config = ConfigDict(frozen=True)
    prompt: str = Field(description="Text to run through the model.")


class SteerRequest(BaseModel):
    model_config = ConfigDict(frozen=True)
    prompt: str = Field(description="Text to continue.")
    coefficient: float | None = Field(
        None, description="Added to the neuron's activation; default: its max activation."
    )
    max_new_tokens: int | None = Field(
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


@dataclass(frozen=True)
class Target:
    """The indexed unit a live request is about."""

    model: storage.ModelRow
    source: storage.SourceRow
    unit: storage.UnitRow


def find_target(conn: Connection, slug: str, source: str, index: str) -> Target:
    return Target(*views.model_spec(conn, slug, source, index))


def _source(service: ModelService, target: Target, model: Model) -> Source:
    """The indexed source behind ``target``, with its SAE loaded for latents."""
    s = target.source
    sae = service.sae(s.sae, model.device) if s.kind == "sae" and s.sae else None
    if s.kind == "sae" and sae is None:
        raise LimitError(f"source {s.name!r} records no SAE folder to load")
    return Source(s.name, s.kind, s.layer, s.hook, s.n_units, sae, s.sae)


def _check_text(prompt: str, settings: Settings) -> None:
    """Cheap checks, before any model work."""
    if not prompt.strip():
        raise LimitError("prompt is empty")
    if len(prompt) > settings.max_prompt_chars:
        raise LimitError(
            f"prompt is {len(prompt)} characters; the limit is {settings.max_prompt_chars}"
        )


def _check_tokens(model: Model, prompt: str, settings: Settings) -> list[int]:
    ids = model.encode_prompt(prompt)
    if len(ids) > settings.max_prompt_tokens:
        raise LimitError(f"prompt is {len(ids)} tokens; the limit is {settings.max_prompt_tokens}")
    return ids


def _check_range(name: str, value: float, lo: float, hi: float) -> None:
    if not lo <= value <= hi:
        raise LimitError(f"{name} must be between {lo:g} and {hi:g}, got {value:g}")


async def unit_activations(
    service: ModelService, settings: Settings, target: Target, req: ActivationRequest
) -> ActivationResult:
    _check_text(req.prompt, settings)
    unit = target.unit

    def work(model: Model) -> ActivationResult:
        ids = _check_tokens(model, req.prompt, settings)
        src = _source(service, target, model)
        values = src.activations_on(model, ids, target.model.skip_first, unit.idx)
        texts = model.token_strings(ids)
        return ActivationResult(
            model=target.model.slug,
            source=target.source.name,
            index=unit.idx,
            max_act=unit.max_act,
            tokens=[TokenActivation(token=t, value=v) for t, v in zip(texts, values, strict=True)],
            prompt_max=max(values),
        )

    return await service.run(target.model.spec, work, target.model.options)


async def steer(
    service: ModelService, settings: Settings, target: Target, req: SteerRequest
) -> SteerResult:
    unit = target.unit
    coefficient = unit.max_act if req.coefficient is None else req.coefficient
    _check_range("coefficient", coefficient, -settings.max_coefficient, settings.max_coefficient)
    n_new = req.max_new_tokens
    if n_new is None:
        n_new = min(DEFAULT_NEW_TOKENS, settings.max_new_tokens)
    _check_range("max_new_tokens", n_new, 1, settings.max_new_tokens)
    _check_range("temperature", req.temperature, 0, settings.max_temperature)
    _check_range("seed", req.seed, 0, 2**31 - 1)
    _check_text(req.prompt, settings)

    def work(model: Model) -> SteerResult:
        ids = _check_tokens(model, req.prompt, settings)
        push = _source(service, target, model).steer(unit.idx, coefficient)
        if len(ids) + n_new > model.n_ctx:
            raise LimitError(f"prompt plus new tokens exceed the model's context of {model.n_ctx}")
        run = dict(max_new_tokens=n_new, temperature=req.temperature, seed=req.seed)
        return SteerResult(
            model=target.model.slug,
            source=target.source.name,
            index=unit.idx,
            prompt=req.prompt,
            coefficient=coefficient,
            seed=req.seed,
            temperature=req.temperature,
            max_new_tokens=n_new,
            default=model.decode(model.generate(ids, **run)),
            steered=model.decode(model.generate(ids, **run, steer=[push])),
        )

    return await service.run(target.model.spec, work, target.model.options)
