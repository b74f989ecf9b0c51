"""Steering measured over a prompt set (``/{model}/steer/eval``): per strength, the mean
and standard deviation of the effect on target tokens, of the side effect on neutral text
and of fluency, with the share of prompts steered the intended way
(``spyglass.steer_eval``)."""

from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass

from pydantic import Field
from sqlalchemy import Connection

from app import meaning, urls, views
from app.jobs import Jobs
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
from spyglass.steer_eval import Measure, measure_strength, summarise

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
    """Seconds of model work (the chunks' own, not their waits in the queue)."""
    status: str = "done"
    """"running" while the evaluation's chunks are measured, then "done"."""
    done: int = 0
    """Chunks (strengths) measured so far."""
    total: int = 0
    """Chunks in all: one per strength."""
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
    jobs: Jobs,
    settings: Settings,
    reader: IndexReader,
    slug: str,
    req: SteerEvalRequest,
    *,
    wait: bool,
) -> SteerEvalResult:
    """The evaluation ``req`` asks for, run as a job (``app.jobs``) of one chunk per
    strength, each its own turn on the model service's queue. ``wait``: answer once it has
    finished; otherwise at once, with its progress while it runs (``status`` "running")."""
    m = await reader.run(views.require_model, slug)
    result = SteerEvalResult(model=slug, request=req.model_dump())
    specs = [u for u in req.unit if u.strip()]  # the form's empty boxes are no units
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

    key = json.dumps([slug, m.id, "steer/eval", req.model_dump()], sort_keys=True)
    job = jobs.get(key)
    if job is None:
        wanted = [t for t in req.target if t]
        plan = await service.run(
            m.spec, lambda model: _prepare(model, settings, texts, held, wanted, units, n_new),
            m.options,
        )  # fmt: skip
        measure = functools.partial(_measure, service, m, units, strengths, plan, req, n_new)
        job = jobs.start(key, len(strengths), measure)
    if not job.finished and not wait:
        return result.model_copy(update={"status": "running", "done": job.done,
                                         "total": job.total})  # fmt: skip
    plan, measures, continuations, seconds = await jobs.wait(job)
    linked = [
        SteerEvalUnit(
            source=s.name, index=u.idx, max_act=u.max_act, url=urls.unit(slug, s.name, u.idx)
        )
        for s, u in units
    ]
    linked = await reader.run(meaning.labelled, m.id, linked)
    return result.model_copy(
        update={
            "units": linked, "strengths": strengths, "targets": plan.target_texts,
            "prompts": plan.prompt_texts, "held_out": not texts,
            "summary": [StrengthRow(**vars(r)) for r in summarise(measures)],
            "measures": [_row(x, text) for x, text in zip(measures, continuations, strict=True)],
            "max_new_tokens": n_new,
            "temperature": req.temperature, "seed": req.seed, "seconds": seconds,
            "done": job.total, "total": job.total,
        }
    )  # fmt: skip


@dataclass(frozen=True)
class _Plan:
    """An evaluation's token ids, worked out once by the model before its chunks."""

    prompts: list[list[int]]
    neutral: list[list[int]]
    targets: list[int]
    target_texts: list[str]
    prompt_texts: list[str]


def _prepare(model: Model, settings: Settings, texts, held, wanted, units, n_new) -> _Plan:
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
            s, u = units[0]
            raise LimitError(
                f"{s.name}/{u.idx} has no logit effects to take targets from: name them",
                field="target",
                rule="not_empty",
            )
    return _Plan(
        [list(p) for p in prompts], neutral, targets, model.token_strings(targets),
        [model.decode(p) for p in prompts],
    )  # fmt: skip


async def _measure(service: ModelService, m, units, strengths, plan: _Plan, req, n_new, job):
    """Every strength's measures, a model job each: (plan, measures, their continuations as
    text, model seconds)."""
    measures, texts, seconds = [], [], 0.0

    def chunk(model: Model, strength: float):
        started = time.perf_counter()
        edits = [load_source(service, s, model).steer(u.idx, strength * u.max_act)
                 for s, u in units]  # fmt: skip
        got = measure_strength(
            model, edits, strength, plan.prompts, plan.neutral, plan.targets,
            max_new_tokens=n_new, temperature=req.temperature, seed=req.seed,
            deadline=deadline(),
        )  # fmt: skip
        decoded = [model.decode(x.continuation) for x in got]
        return got, decoded, time.perf_counter() - started

    for strength in strengths:
        got, decoded, took = await service.run(
            m.spec, functools.partial(chunk, strength=strength), m.options, may_refuse=False
        )
        measures += got
        texts += decoded
        seconds += took
        job.step()
    return plan, measures, texts, seconds


def _row(x: Measure, continuation: str) -> PromptRow:
    return PromptRow(strength=x.strength, prompt=x.prompt, effect=x.effect, fluency=x.fluency,
                     kl=x.kl, continuation=continuation)  # fmt: skip
