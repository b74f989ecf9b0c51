"""Steering measured over a prompt set (after Tan et al. 2024: one sample hides how
unreliable a steering vector is). For each strength and each prompt:

- **effect**: over the steered continuation, the mean change in the log-probability of
  the target tokens (their total probability) between the steered and the unsteered
  model, both reading the same steered text;
- **fluency**: the unsteered model's mean loss on the steered continuation;
- **side effect**: on a neutral text (one per prompt), the mean KL divergence from the
  unsteered to the steered next-token distribution.

Default and steered runs share their seed; strength 0 steers nothing and measures exactly
0 effect and 0 KL.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from spyglass.model import Model, Steer


@dataclass(frozen=True)
class Measure:
    strength: float
    prompt: int
    effect: float
    fluency: float
    kl: float
    continuation: list[int]


def evaluate(
    model: Model,
    steers: Callable[[float], Sequence[Steer]],
    strengths: Sequence[float],
    prompts: Sequence[list[int]],
    neutral: Sequence[list[int]],
    targets: Sequence[int],
    *,
    max_new_tokens: int,
    temperature: float,
    seed: int,
    deadline: float | None = None,
) -> list[Measure]:
    """One measure per (strength, prompt); ``steers(strength)`` gives the edits of a
    strength (the multiple applied to each unit's own scale), ``neutral[i]`` is prompt i's
    neutral text. ``measure_strength`` of each strength in turn."""
    plain = neutral_log_probs(model, neutral)
    return [
        m
        for strength in strengths
        for m in measure_strength(
            model, list(steers(strength)), strength, prompts, neutral, targets,
            max_new_tokens=max_new_tokens, temperature=temperature, seed=seed,
            deadline=deadline, plain=plain,
        )
    ]  # fmt: skip


def neutral_log_probs(model: Model, neutral: Sequence[list[int]]) -> list[torch.Tensor]:
    """The unsteered model's log-probabilities [T, V] on each neutral text."""
    return _log_probs(model, neutral, ())


def measure_strength(
    model: Model,
    edits: Sequence[Steer],
    strength: float,
    prompts: Sequence[list[int]],
    neutral: Sequence[list[int]],
    targets: Sequence[int],
    *,
    max_new_tokens: int,
    temperature: float,
    seed: int,
    deadline: float | None = None,
    plain: list[torch.Tensor] | None = None,
) -> list[Measure]:
    """The measures of one strength (``edits`` applied), one per prompt: a unit of work on
    its own. ``plain``: ``neutral_log_probs`` of ``neutral``, worked out here if None."""
    target = torch.tensor(list(targets), device=model.device)
    if plain is None:
        plain = neutral_log_probs(model, neutral)
    news: dict[int, list[int]] = {}
    for group in _by_length(prompts):  # one batch per prompt length
        made = model.generate_batch(
            [prompts[i] for i in group], max_new_tokens=max_new_tokens,
            temperature=temperature, seed=seed, steer=edits, deadline=deadline,
        )  # fmt: skip
        news.update(zip(group, made, strict=True))
    texts = [[*prompts[i], *news[i]] for i in range(len(prompts))]
    steered, default = _log_probs(model, texts, edits), _log_probs(model, texts, ())
    moved = _log_probs(model, neutral, edits)
    out = []
    for i, ids in enumerate(prompts):
        rows = torch.arange(len(ids) - 1, len(texts[i]) - 1, device=model.device)
        effect = (
            steered[i][rows][:, target].logsumexp(-1) - default[i][rows][:, target].logsumexp(-1)
        ).mean()
        nexts = torch.tensor(news[i], device=model.device)
        fluency = -default[i][rows, nexts].mean()
        kl = (plain[i].exp() * (plain[i] - moved[i])).sum(-1).mean()
        out.append(Measure(strength, i, float(effect), float(fluency), float(kl), news[i]))
    return out


def _by_length(texts: Sequence[Sequence[int]]) -> list[list[int]]:
    """Indices of ``texts`` grouped by length."""
    groups: dict[int, list[int]] = {}
    for i, t in enumerate(texts):
        groups.setdefault(len(t), []).append(i)
    return list(groups.values())


def _log_probs(model: Model, texts, edits) -> list[torch.Tensor]:
    """Each text's log-probabilities [T, V], a batch per length."""
    out: list[torch.Tensor | None] = [None] * len(texts)
    for group in _by_length(texts):
        lp = model.log_probs_batch([texts[i] for i in group], edits)
        for row, i in enumerate(group):
            out[i] = lp[row]
    return out


@dataclass(frozen=True)
class Summary:
    strength: float
    n: int
    effect_mean: float
    effect_sd: float
    intended: float
    """Share of prompts whose effect has the strength's sign (strength 0: none asked)."""
    fluency_mean: float
    fluency_sd: float
    kl_mean: float
    kl_sd: float


def summarise(measures: Sequence[Measure]) -> list[Summary]:
    """Mean, standard deviation (n - 1) and share of the intended sign, per strength."""
    out = []
    for strength in dict.fromkeys(m.strength for m in measures):
        ms = [m for m in measures if m.strength == strength]

        def stats(values: list[float]) -> tuple[float, float]:
            t = torch.tensor(values, dtype=torch.float64)
            return float(t.mean()), float(t.std()) if len(values) > 1 else 0.0

        effect, fluency, kl = (
            stats([getattr(m, k) for m in ms]) for k in ("effect", "fluency", "kl")
        )
        sign = (strength > 0) - (strength < 0)
        hits = sum((m.effect > 0) - (m.effect < 0) == sign for m in ms)
        intended = hits / len(ms) if sign else 0.0
        out.append(Summary(strength, len(ms), *effect, intended, *fluency, *kl))
    return out
