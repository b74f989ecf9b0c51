"""Steering measured over a prompt set (``/{model}/steer/eval``): per strength, the mean
and standard deviation of the effect on target tokens, of the side effect on neutral text
and of fluency, with the share of prompts steered the intended way
(``spyglass.steer_eval``)."""

from __future__ import annotations

import time

from pydantic import Field
from sqlalchemy import Connection

from app import meaning, urls, views
from app.live.attribution import one_token
from app.live.schema import (
    LimitError,
    Request,
    check_context,
    check_generation,
    check_range,
    check_text,
    check_tokens,
)
from app.live.targets import load_source
from app.model_service import ModelService, deadline
from app.reader import IndexReader
from spyglass import storage
from spyglass.model import Model
from spyglass.settings import Settings
from spyglass.steer_eval import evaluate, summarise

DEFAULT_STRENGTHS = "0, 0.5, -0.5, 1, -1, 2, -2"
MAX_STRENGTHS = 9
MAX_PROMPTS = 16
HELD_OUT = 8
"""Prompts taken from the index's own last sequences when none are given."""
PROMPT_TOKENS, NEUTRAL_TOKENS = 16, 32
MAX_FORWARDS = 1100
"""Forward passes one evaluation may take (strengths x prompts x (new tokens + 3))."""
DEFAULT_TARGETS = 5
"""Target tokens by default: the first unit's most promoted."""


class SteerEvalRequest(Request):
    unit: list[str] = Field(default_factory=list, description="SOURCE/INDEX, repeatable.")
    strengths: str = Field(
        DEFAULT_STRENGTHS,
        description="Comma-separated multiples of each unit's max activation.",
    )
    prompts: str = Field(
        "",
        description="Prompts, one per line; default: the first tokens of the index's last "
        f"{HELD_OUT} sequences.",
    )
    target: list[str] = Field(
        default_factory=list,
        description="Target tokens (repeatable, one token each); default: the tokens the "
        "first unit promotes most.",
    )
    max_new_tokens: int = Field(16, description="Tokens generated per prompt and strength.")
    temperature: float = Field(0.0, description="0 is greedy.")
    seed: int = Field(16, description="Shared by the default and steered runs.")


class StrengthRow(views.View):
    strength: float
    n: int
    effect_mean: float
    effect_sd: float
    intended: float
    """Share of prompts moved the strength's way (0 at strength 0)."""
    fluency_mean: float
    fluency_sd: float
    kl_mean: float
    kl_sd: float


class PromptRow(views.View):
    strength: float
    prompt: int
    effect: float
    """Mean change in log p(targets) over the steered continuation."""
    fluency: float
    """The unsteered model's mean loss on the steered continuation."""
    kl: float
    """Mean KL(unsteered || steered) on the prompt's neutral text."""
    continuation: str


class SteerEvalUnit(views.View):
    source: str
    index: int
    max_act: float
    url: str
    explanation: str | None = None


class SteerEvalResult(views.View):
    model: str
    units: list[SteerEvalUnit] = []
    strengths: list[float] = []
    targets: list[str] = []
    prompts: list[str] = []
    held_out: bool = False
    """The prompts are the index's own sequences."""
    summary: list[StrengthRow] = []
    measures: list[PromptRow] = []
    max_new_tokens: int = 16
    temperature: float = 0.0
    seed: int = 16
    seconds: float = 0.0
    request: dict = {}
    """The form's values, to fill it again."""


def _strengths(text: str) -> list[float]:
    try:
        values = [float(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise LimitError(
            f"strengths must be comma-separated numbers, got {text!r}",
            field="strengths",
            rule="numbers",
        ) from None
    if not values or len(values) > MAX_STRENGTHS:
        raise LimitError(f"give 1 to {MAX_STRENGTHS} strengths", field="strengths", rule="count")
    return list(dict.fromkeys(values))


def _units(conn: Connection, m: storage.ModelRow, specs: list[str]):
    rows = []
    for i, spec in enumerate(specs):
        name, _, index = spec.strip().rpartition("/")
        s = storage.get_source(conn, m.id, name) if name else None
        if s is None or not index.isdigit() or not 0 <= int(index) < s.n_units:
            raise LimitError(
                f"unit {spec!r} is not SOURCE/INDEX of an indexed unit",
                field=f"unit.{i}",
                rule="known_unit",
            )
        rows.append((s, storage.get_unit(conn, s.id, int(index))))
    return rows


def _held_out(conn: Connection, m: storage.ModelRow) -> list[tuple[list[int], list[int]]]:
    """(prompt, neutral text) pairs from the index's last sequences."""
    ids = range(max(0, m.n_sequences - 2 * HELD_OUT), m.n_sequences)
    seqs = storage.get_sequences(conn, m.id, ids)
    order = [seqs[i].tokens for i in sorted(seqs)]
    pairs = list(zip(order[::2], order[1::2], strict=False))[:HELD_OUT]
    return [(a[:PROMPT_TOKENS], b[:NEUTRAL_TOKENS]) for a, b in pairs]


async def steer_eval(
    service: ModelService,
    settings: Settings,
    reader: IndexReader,
    slug: str,
    req: SteerEvalRequest,
) -> SteerEvalResult:
    m = await reader.run(views.require_model, slug)
    result = SteerEvalResult(model=slug, request=req.model_dump())
    specs = [u for u in req.unit if u.strip()]  # the form's empty boxes are no units
    wanted = [t for t in req.target if t]
    if not specs:
        return result
    if len(specs) > settings.max_steer_units:
        raise LimitError(f"{len(specs)} units; the limit is {settings.max_steer_units}",
                         field="unit", rule="max_items")  # fmt: skip
    strengths = _strengths(req.strengths)
    n_new = check_generation(req.max_new_tokens, req.temperature, req.seed, settings)
    texts = [t for t in req.prompts.splitlines() if t.strip()]
    if len(texts) > MAX_PROMPTS:
        raise LimitError(f"{len(texts)} prompts; the limit is {MAX_PROMPTS}", field="prompts",
                         rule="max_items")  # fmt: skip
    for t in texts:
        check_text(t, settings, field="prompts")
    units = await reader.run(_units, m, specs)
    for s, u in units:
        for x in strengths:
            check_range(f"strength x max activation of {s.name}/{u.idx}", x * u.max_act,
                        -settings.max_coefficient, settings.max_coefficient)  # fmt: skip
    held = [] if texts else await reader.run(_held_out, m)
    n_prompts = len(texts) or len(held)
    forwards = len(strengths) * n_prompts * (n_new + 3)
    if forwards > MAX_FORWARDS:
        raise LimitError(
            f"{len(strengths)} strengths x {n_prompts} prompts x {n_new} new tokens need "
            f"{forwards} forward passes; the limit is {MAX_FORWARDS}",
            field="max_new_tokens",
            rule="budget",
        )

    def work(model: Model):
        started = time.perf_counter()
        if texts:
            prompts = [check_tokens(model, t, settings, field="prompts") for t in texts]
            # A given prompt's neutral text is the next prompt (the first, for the last).
            neutral = [list(p) for p in prompts[1:] + prompts[:1]]
        else:
            prompts, neutral = [list(a) for a, _ in held], [list(b) for _, b in held]
        for p in prompts:
            check_context(model, len(p), n_new)
        if wanted:
            targets = [one_token(model, t, "target") for t in wanted]
        else:
            targets = [t for t, _ in units[0][1].logits.get("top", [])[:DEFAULT_TARGETS]]
            if not targets:
                raise LimitError(
                    f"{specs[0]} has no logit effects to take targets from: name them",
                    field="target",
                    rule="not_empty",
                )
        loaded = [(load_source(service, s, model), u) for s, u in units]

        def steers(strength: float):
            return [src.steer(u.idx, strength * u.max_act) for src, u in loaded]

        measures = evaluate(
            model, steers, strengths, prompts, neutral, targets, max_new_tokens=n_new,
            temperature=req.temperature, seed=req.seed, deadline=deadline(),
        )  # fmt: skip
        rows = [
            PromptRow(strength=x.strength, prompt=x.prompt, effect=x.effect, fluency=x.fluency,
                      kl=x.kl, continuation=model.decode(x.continuation))
            for x in measures
        ]  # fmt: skip
        summary = [StrengthRow(**vars(r)) for r in summarise(measures)]
        return (rows, summary, model.token_strings(targets),
                [model.decode(p) for p in prompts], time.perf_counter() - started)  # fmt: skip

    rows, summary, target_texts, prompt_texts, seconds = await service.run(m.spec, work, m.options)
    linked = [
        SteerEvalUnit(
            source=s.name, index=u.idx, max_act=u.max_act, url=urls.unit(slug, s.name, u.idx)
        )
        for s, u in units
    ]
    linked = await reader.run(meaning.labelled, m.id, linked)
    return result.model_copy(
        update={
            "units": linked, "strengths": strengths, "targets": target_texts,
            "prompts": prompt_texts, "held_out": not texts, "summary": summary,
            "measures": rows, "max_new_tokens": n_new, "temperature": req.temperature,
            "seed": req.seed, "seconds": seconds,
        }
    )  # fmt: skip
