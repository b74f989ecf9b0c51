"""Live requests: a unit's activations on a typed prompt, steering with it, and which
units fire on a prompt.

Inputs are checked against the documented caps (Settings) before any model work;
a breach raises :class:`LimitError`, answered with 422 and a message naming the cap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote, urlencode

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Connection
from starlette.concurrency import run_in_threadpool

from app import views
from app.model_service import ModelService, deadline
from spyglass import ablation, firing, storage
from spyglass.model import Model
from spyglass.settings import Settings
from spyglass.sources import Source, units_on_prompt

TOP_UNITS = 25
"""Units in a prompt's overall top list."""
TOP_PER_TOKEN = 10
"""Units listed for each token of a prompt."""
PREVIEW_BEFORE, PREVIEW_AFTER = 8, 2
"""Tokens around the max in a unit's mini preview."""

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
    return _load_source(service, target.source, model)


def _load_source(service: ModelService, s: storage.SourceRow, model: Model) -> Source:
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


def _check_generation(
    max_new_tokens: int | None, temperature: float, seed: int, settings: Settings
) -> int:
    """Check a generation's settings; returns the number of new tokens (with its default)."""
    n_new = max_new_tokens
    if n_new is None:
        n_new = min(DEFAULT_NEW_TOKENS, settings.max_new_tokens)
    _check_range("max_new_tokens", n_new, 1, settings.max_new_tokens)
    _check_range("temperature", temperature, 0, settings.max_temperature)
    _check_range("seed", seed, 0, 2**31 - 1)
    return n_new


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
    n_new = _check_generation(req.max_new_tokens, req.temperature, req.seed, settings)
    _check_text(req.prompt, settings)

    def work(model: Model) -> SteerResult:
        ids = _check_tokens(model, req.prompt, settings)
        push = _source(service, target, model).steer(unit.idx, coefficient)
        if len(ids) + n_new > model.n_ctx:
            raise LimitError(f"prompt plus new tokens exceed the model's context of {model.n_ctx}")
        run = dict(
            max_new_tokens=n_new, temperature=req.temperature, seed=req.seed, deadline=deadline()
        )
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


# ---- which units fire on a prompt


class PromptRequest(BaseModel):
    model_config = ConfigDict(frozen=True)
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


async def prompt_units(
    service: ModelService, settings: Settings, conn: Connection, slug: str, req: PromptRequest
) -> PromptResult:
    m, all_sources = await run_in_threadpool(_model_and_sources, conn, slug)
    names = req.source or [s.name for s in all_sources]
    by_name = {s.name: s for s in all_sources}
    if unknown := [n for n in names if n not in by_name]:
        raise LimitError(f"unknown source {unknown[0]!r}; {slug} has {', '.join(sorted(by_name))}")
    chosen = [by_name[n] for n in dict.fromkeys(names)]
    result = PromptResult(
        model=slug,
        text=req.text,
        rank=req.rank,
        sources=[s.name for s in chosen],
        all_sources=[s.name for s in all_sources],
        skip_first=m.skip_first,
    )
    if not req.text:
        return result
    _check_text(req.text, settings)
    scale = None
    if req.rank == "relative":
        scale = await run_in_threadpool(
            lambda: {s.name: storage.unit_max_acts(conn, s.id) for s in chosen}
        )

    def work(model: Model):
        ids = _check_tokens(model, req.text, settings)
        sources = [_load_source(service, s, model) for s in chosen]
        per_source = units_on_prompt(sources, model, ids, m.skip_first)
        first = min(m.skip_first, len(ids) - 1)
        return (
            model.token_strings(ids),
            firing.top_over_prompt(per_source, TOP_UNITS, first, scale),
            firing.top_per_position(per_source, TOP_PER_TOKEN, scale),
        )

    texts, top, per_token = await service.run(m.spec, work, m.options)
    top_units = await run_in_threadpool(
        _describe, conn, m, by_name, top, req.text, req.rank == "relative"
    )
    link = _linker(slug, req.text)
    return result.model_copy(
        update={
            "top": top_units,
            "tokens": [
                TokenUnits(
                    position=p,
                    token=texts[p],
                    units=[
                        FiringUnit(
                            source=f.source,
                            index=f.unit,
                            value=f.value,
                            position=p,
                            url=link(f.source, f.unit),
                            relative=f.score if req.rank == "relative" else None,
                        )
                        for f in fired
                    ]
                    if p >= m.skip_first
                    else [],
                )
                for p, fired in enumerate(per_token)
            ],
        }
    )


def _model_and_sources(conn: Connection, slug: str):
    m = views.require_model(conn, slug)
    return m, storage.list_sources(conn, m.id)


def _linker(slug: str, text: str):
    return lambda source, unit: f"{views.unit_url(slug, source, unit)}?prompt={quote(text)}"


def _describe(
    conn, m, by_name, top: list[firing.Firing], text: str, relative: bool
) -> list[FiringUnit]:
    """Density, corpus max and a preview of the top corpus example of each unit."""
    link = _linker(m.slug, text)
    out = []
    for f in top:
        src = by_name[f.source]
        unit = storage.get_unit(conn, src.id, f.unit)
        examples = storage.get_examples(conn, src.id, f.unit)[:1]
        preview = None
        if examples:
            e = examples[0]
            seq = storage.get_sequences(conn, m.id, [e.sequence_id])[e.sequence_id]
            preview = views.preview(
                m.slug,
                e,
                seq,
                storage.token_texts(conn, m.id, seq.tokens),
                PREVIEW_BEFORE,
                PREVIEW_AFTER,
            )
        out.append(
            FiringUnit(
                source=f.source,
                index=f.unit,
                value=f.value,
                position=f.position,
                url=link(f.source, f.unit),
                relative=f.score if relative else None,
                density=unit.density if unit else None,
                max_act=unit.max_act if unit else None,
                preview=preview,
            )
        )
    return out


# ---- steering with several units


class SteerUnit(BaseModel):
    model_config = ConfigDict(frozen=True)
    source: str = Field(description="The unit's source, e.g. 5-mlp or 12-res-topk-4608.")
    index: int = Field(description="The unit's index in its source.")
    mode: Literal["add", "clamp"] = Field(
        "add",
        description="add: strength x the unit's direction (a neuron's activation + strength; "
        "a latent's decoder row x strength); clamp: set the unit's activation to strength.",
    )
    strength: float


class MultiSteerRequest(BaseModel):
    model_config = ConfigDict(frozen=True)
    prompt: str = Field(description="Text to continue.")
    units: list[SteerUnit] = Field(description="The units to steer, each with its own strength.")
    positions: Literal["all", "prompt"] = Field(
        "all", description="Edit every position, or the prompt's only (not the generated ones)."
    )
    max_new_tokens: int | None = Field(
        None, description="Tokens to generate; default: 32 or the server's cap if lower."
    )
    temperature: float = Field(0.7, description="Sampling temperature; 0 is greedy.")
    seed: int = Field(16, description="Seed shared by the default and steered runs.")


class SteerQuery(BaseModel):
    """The steering page's query: parallel ``unit`` / ``mode`` / ``strength`` lists, so a
    setup is a plain URL (empty rows of the form are skipped)."""

    prompt: str = ""
    unit: list[str] = Field(default_factory=list, description="SOURCE/INDEX, repeatable.")
    mode: list[str] = Field(default_factory=list, description="add or clamp, one per unit.")
    strength: list[str] = Field(default_factory=list, description="One per unit.")
    positions: Literal["all", "prompt"] = "all"
    max_new_tokens: int | None = None
    temperature: float = 0.7
    seed: int = 16

    def request(self) -> MultiSteerRequest | None:
        """The steering request, or None when the form is still empty."""
        modes = self.mode or ["add"] * len(self.unit)
        if not len(self.unit) == len(modes) == len(self.strength):
            raise LimitError("give one strength (and one mode, or none) per unit")
        rows = zip(self.unit, modes, self.strength, strict=True)
        units = []
        for spec, mode, strength in rows:
            if not spec.strip():
                continue
            source, _, index = spec.strip().rpartition("/")
            if not source or not index.isdigit():
                raise LimitError(f"unit {spec!r} is not SOURCE/INDEX, e.g. 5-mlp/123")
            if mode not in ("add", "clamp"):
                raise LimitError(f"mode {mode!r} of {spec} must be add or clamp")
            try:
                value = float(strength)
            except ValueError:
                raise LimitError(f"strength {strength!r} of {spec} is not a number") from None
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


class SteeredUnit(SteerUnit, views.View):
    url: str


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


async def steer_units(
    service: ModelService,
    settings: Settings,
    conn: Connection,
    slug: str,
    req: MultiSteerRequest | None,
) -> MultiSteerResult:
    m = await run_in_threadpool(views.require_model, conn, slug)
    if req is None:
        return MultiSteerResult(
            model=slug, max_new_tokens=min(DEFAULT_NEW_TOKENS, settings.max_new_tokens)
        )
    n_new = _check_generation(req.max_new_tokens, req.temperature, req.seed, settings)
    if not req.units:
        raise LimitError("name at least one unit to steer")
    if len(req.units) > settings.max_steer_units:
        raise LimitError(
            f"{len(req.units)} units to steer; the limit is {settings.max_steer_units}"
        )
    for u in req.units:
        _check_range(
            f"strength of {u.source}/{u.index}",
            u.strength,
            -settings.max_coefficient,
            settings.max_coefficient,
        )
    _check_text(req.prompt, settings)
    rows = await run_in_threadpool(_steer_sources, conn, m, req.units)

    def work(model: Model):
        ids = _check_tokens(model, req.prompt, settings)
        if len(ids) + n_new > model.n_ctx:
            raise LimitError(f"prompt plus new tokens exceed the model's context of {model.n_ctx}")
        pushes = [
            _load_source(service, row, model).steer(
                u.index, u.strength, clamp=u.mode == "clamp", prompt_only=req.positions == "prompt"
            )
            for u, row in zip(req.units, rows, strict=True)
        ]
        run = dict(
            max_new_tokens=n_new, temperature=req.temperature, seed=req.seed, deadline=deadline()
        )
        default, steered = model.generate(ids, **run), model.generate(ids, **run, steer=pushes)
        return default, steered, model

    default, steered, model = await service.run(m.spec, work, m.options)
    diverge = next(
        (i for i, (a, b) in enumerate(zip(default, steered, strict=False)) if a != b),
        None if len(default) == len(steered) else min(len(default), len(steered)),
    )
    return MultiSteerResult(
        model=slug,
        prompt=req.prompt,
        units=[
            SteeredUnit(**u.model_dump(), url=views.unit_url(slug, u.source, u.index))
            for u in req.units
        ],
        positions=req.positions,
        max_new_tokens=n_new,
        temperature=req.temperature,
        seed=req.seed,
        default=_completion(model, default),
        steered=_completion(model, steered),
        diverge_at=diverge,
        share=_steer_url(slug, req, n_new),
    )


def _completion(model: Model, ids: list[int]) -> Completion:
    return Completion(tokens=model.token_strings(ids), text=model.decode(ids))


def _steer_sources(conn: Connection, m, units: list[SteerUnit]) -> list[storage.SourceRow]:
    rows = []
    for u in units:
        row = storage.get_source(conn, m.id, u.source)
        if row is None:
            raise LimitError(f"unknown source {u.source!r} in {m.slug}")
        if not 0 <= u.index < row.n_units:
            raise LimitError(f"{u.source} has units 0..{row.n_units - 1}, not {u.index}")
        rows.append(row)
    return rows


def _steer_url(slug: str, req: MultiSteerRequest, n_new: int) -> str:
    query = [("prompt", req.prompt)]
    for u in req.units:
        query += [
            ("unit", f"{u.source}/{u.index}"),
            ("mode", u.mode),
            ("strength", repr(u.strength)),
        ]
    query += [
        ("positions", req.positions),
        ("max_new_tokens", str(n_new)),
        ("temperature", repr(req.temperature)),
        ("seed", str(req.seed)),
    ]
    return f"/{slug}/steer?{urlencode(query)}"


# ---- ablation effect on a top example


class TokenAblation(views.View):
    token: str
    position: int
    loss_delta: float | None
    """Ablated minus clean loss of predicting this token (None at position 0)."""
    up: list[views.LogitToken]
    """Next-token probabilities here that rose most (value: the change)."""
    down: list[views.LogitToken]


class AblationResult(views.View):
    model: str
    source: str
    index: int
    rank: int
    sequence_id: int
    tokens: list[TokenAblation]
    """The example's window, token by token."""
    scale: float
    """Largest |loss change| in the window: the colour scale."""


async def example_ablation(
    service: ModelService, settings: Settings, conn: Connection, target: Target, rank: int
) -> AblationResult:
    """The effect on next-token loss, along one top example's window, of ablating the unit
    (its activation set to 0 at every position; for a latent, its decoder row times its
    activation taken out)."""
    ex, seq = await run_in_threadpool(_example_and_sequence, conn, target, rank)
    unit = target.unit
    lo, hi = ex.window_start, ex.window_start + len(ex.acts)

    def work(model: Model):
        push = _source(service, target, model).steer(unit.idx, 0.0, clamp=True)
        clean = model.log_probs(seq.tokens)
        ablated = model.log_probs(seq.tokens, [push])
        effects = ablation.ablation_effects(clean, ablated, seq.tokens, lo, hi)
        ids = {i for e in effects for i, _ in e.up + e.down} | set(seq.tokens[lo:hi])
        return effects, dict(zip(ids, model.token_strings(list(ids)), strict=True))

    effects, text = await service.run(target.model.spec, work, target.model.options)
    tokens = [
        TokenAblation(
            token=text[seq.tokens[e.position]],
            position=e.position,
            loss_delta=e.loss_delta,
            up=[views.LogitToken(token_id=i, token=text[i], value=v) for i, v in e.up],
            down=[views.LogitToken(token_id=i, token=text[i], value=v) for i, v in e.down],
        )
        for e in effects
    ]
    deltas = [abs(t.loss_delta) for t in tokens if t.loss_delta is not None]
    return AblationResult(
        model=target.model.slug,
        source=target.source.name,
        index=unit.idx,
        rank=rank,
        sequence_id=ex.sequence_id,
        tokens=tokens,
        scale=max(deltas, default=0.0),
    )


def _example_and_sequence(conn: Connection, target: Target, rank: int):
    examples = storage.get_examples(conn, target.source.id, target.unit.idx)
    ex = next((e for e in examples if e.rank == rank), None)
    if ex is None:
        raise views.NotFound(
            f"unit {target.unit.idx} of {target.source.name!r} has no example {rank}"
        )
    return ex, storage.get_sequences(conn, target.model.id, [ex.sequence_id])[ex.sequence_id]


# ---- direct logit attribution


class AttributionRequest(BaseModel):
    model_config = ConfigDict(frozen=True)
    text: str = Field("", description="The prompt.")
    position: int | None = Field(None, description="Token position; default: the last.")
    target: str | None = Field(
        None,
        description="The token whose logit is explained (one token of text); "
        "default: the model's top prediction.",
    )
    other: str | None = Field(
        None, description="A second token: explain logit[target] - logit[other]."
    )


class Part(views.View):
    label: str
    value: float
    url: str | None = None


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


async def attribution(
    service: ModelService,
    settings: Settings,
    conn: Connection,
    slug: str,
    req: AttributionRequest,
) -> AttributionResult:
    m, sources = await run_in_threadpool(_model_and_sources, conn, slug)
    result = AttributionResult(model=slug, text=req.text)
    if not req.text:
        return result
    _check_text(req.text, settings)
    saes = [s for s in sources if s.kind == "sae"]
    indexed = {s.name for s in sources}

    def one_token(model: Model, text: str, what: str) -> int:
        ids = model.tokenize(text)
        if len(ids) != 1:
            raise LimitError(f"{what} {text!r} is {len(ids)} tokens; give exactly one")
        return ids[0]

    def work(model: Model):
        ids = _check_tokens(model, req.text, settings)
        pos = len(ids) - 1 if req.position is None else req.position
        if not 0 <= pos < len(ids):
            raise LimitError(f"position must be in 0..{len(ids) - 1}, got {pos}")
        target = one_token(model, req.target, "target") if req.target else None
        other = one_token(model, req.other, "other") if req.other else None
        loaded = [_load_source(service, s, model) for s in saes]
        a = model.attribute(ids, pos, target, other, hooks=sorted({s.hook for s in loaded}))
        latents = []
        for src in loaded:
            f = src.units(a.hook_acts[src.hook].unsqueeze(0), m.skip_first)[0, pos]
            contrib = f * a.through(src.directions(model)).to(f)
            for i in contrib.abs().topk(min(10, contrib.shape[0])).indices.tolist():
                if contrib[i] != 0:
                    latents.append((src.name, i, float(contrib[i])))
        neurons = []
        for layer, n in enumerate(a.neurons):
            for i in n.abs().topk(min(3, n.shape[0])).indices.tolist():
                neurons.append((f"{layer}-mlp", i, float(n[i])))
        names = model.token_strings([a.target] + ([other] if other is not None else []))
        return ids, pos, a, latents, neurons, names, model.token_strings(ids)

    ids, pos, a, latents, neurons, names, texts = await service.run(m.spec, work, m.options)

    def link(source: str, i: int) -> str | None:
        return views.unit_url(slug, source, i) if source in indexed else None

    components = [Part(label="embedding", value=a.embed)]
    if a.pos_embed:
        components.append(Part(label="position embedding", value=a.pos_embed))
    for layer, (h, b, mlp) in enumerate(zip(a.heads.tolist(), a.attn_bias, a.mlp, strict=True)):
        components.append(Part(label=f"attention {layer}", value=sum(h) + b))
        mlp_source = f"{layer}-mlp"
        url = views.source_url(slug, mlp_source) if mlp_source in indexed else None
        components.append(Part(label=f"MLP {layer}", value=mlp, url=url))
    return result.model_copy(
        update={
            "tokens": texts,
            "position": pos,
            "target": names[0],
            "other": names[1] if len(names) > 1 else None,
            "logit": a.logit,
            "bias": a.bias,
            "parts_sum": a.parts_sum,
            "scale": a.scale,
            "components": components,
            "heads": a.heads.tolist(),
            "neurons": [Part(label=f"{s}/{i}", value=v, url=link(s, i)) for s, i, v in neurons],
            "latents": [Part(label=f"{s}/{i}", value=v, url=link(s, i)) for s, i, v in latents],
        }
    )
