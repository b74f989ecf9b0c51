"""The LLM explainer and the detection and fuzzing scorers, through an OpenAI-compatible
endpoint (``endpoint.Endpoint``), on a unit's windows (``windows.UnitWindows``).

- ``explain``: the explainer sees the top examples and samples from across the
  activation range that ``windows`` marks as shown, with the tokens where the unit fires
  marked, and the tokens it promotes and suppresses.
- ``detect``: held-out examples where it fires against as many where it does not; the
  endpoint says, from the explanation alone, which ones it fires on.
- ``fuzz``: held-out examples where it fires, half with the tokens it fires on marked and
  half with as many other tokens marked; the endpoint says which marks fit the
  explanation (the mis-marked examples of Delphi's paper).
Each score is the balanced accuracy of the endpoint's 0/1 answers, with a stratified
percentile bootstrap 95% interval and n, the examples judged. A batch the endpoint fails
on fails the whole score: it is recorded as a failure, never as a partial score.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from indexer.explain import prompts
from indexer.explain.endpoint import Endpoint
from indexer.explain.simulation import BOOTSTRAP, _quantile
from indexer.explain.windows import UnitWindows, Window

METHOD = "llm"
SCORERS = ("detection", "fuzzing")
SHOWN_TOP = 10
SHOWN_SAMPLED = 10


@dataclass(frozen=True)
class LlmSettings:
    examples: int = 10
    """Held-out examples where the unit fires, per score (and as many negatives)."""
    batch: int = 5
    """Examples per judging call."""
    scorers: tuple[str, ...] = SCORERS
    max_tokens: int = 200


def shown_examples(unit: UnitWindows) -> list[Window]:
    """What the explainer sees: the shown top examples, then shown samples spread over the
    intervals (lowest to highest)."""
    top = [w for w in unit.shown if w.interval < 0][:SHOWN_TOP]
    sampled = sorted((w for w in unit.shown if w.interval >= 0), key=lambda w: w.value)
    return top + spread(sampled, SHOWN_SAMPLED)


def spread(items: list, n: int) -> list:
    """``n`` of ``items`` at evenly spaced positions (all of them when there are fewer)."""
    if len(items) <= n:
        return list(items)
    return [items[int(i)] for i in np.linspace(0, len(items) - 1, n).round()]


def explain(
    ep: Endpoint, unit: UnitWindows, threshold: float, vocab: dict[int, str], logits: dict,
    max_tokens: int = LlmSettings.max_tokens,
) -> str:  # fmt: skip
    """The endpoint's explanation of ``unit``; EndpointFailure when it gives none."""
    messages = prompts.explain_messages(
        shown_examples(unit),
        unit.max_act,
        threshold,
        vocab,
        [vocab.get(t, "?") for t, _ in logits.get("top", [])[:5]],
        [vocab.get(t, "?") for t, _ in logits.get("bottom", [])[:5]],
    )
    return ep.ask(messages, prompts.parse_explanation, max_tokens=max_tokens)


def positives(unit: UnitWindows, n: int, threshold: float) -> list[Window]:
    """``n`` held-out windows where the unit fires (its example at least ``threshold``,
    the line negatives stay under), spread over its activation range."""
    firing = [w for w in unit.held_out if w.value >= threshold]
    return spread(sorted(firing, key=lambda w: -w.value), n)


def detect(
    ep: Endpoint,
    explanation: str,
    pos: list[Window],
    neg: list[Window],
    vocab: dict[int, str],
    settings: LlmSettings,
    seed: int,
) -> dict | None:
    """Detection's balanced accuracy: ``pos`` against as many of ``neg``; None without
    both. EndpointFailure when a batch fails."""
    n = min(len(pos), len(neg))
    if n == 0:
        return None
    items = [(prompts.render(w, vocab), 1) for w in spread(pos, n)]
    items += [(prompts.render(w, vocab), 0) for w in neg[:n]]
    return _judge(ep, prompts.DETECTION_SYSTEM, explanation, items, settings, seed)


def fuzz(
    ep: Endpoint,
    explanation: str,
    pos: list[Window],
    threshold: float,
    vocab: dict[int, str],
    settings: LlmSettings,
    seed: int,
) -> dict | None:
    """Fuzzing's balanced accuracy: half of ``pos`` marked where the unit fires, half
    mis-marked on as many tokens where it does not; None without both kinds."""
    rng = np.random.default_rng(seed)
    items = []
    for i, w in enumerate(pos):
        right = prompts.active(w, threshold)
        if i % 2 == 0:
            items.append((prompts.render(w, vocab, right), 1))
            continue
        others = np.flatnonzero(~right & np.isfinite(w.acts))  # shown and silent
        if len(others) < right.sum():
            continue
        wrong = np.zeros_like(right)
        wrong[rng.choice(others, size=max(1, int(right.sum())), replace=False)] = True
        items.append((prompts.render(w, vocab, wrong), 0))
    if len({truth for _, truth in items}) < 2:
        return None
    return _judge(ep, prompts.FUZZING_SYSTEM, explanation, items, settings, seed)


def _judge(ep, system, explanation, items, settings, seed) -> dict:
    order = np.random.default_rng(seed).permutation(len(items))
    shuffled = [items[i] for i in order]
    said: list[int] = []
    for i in range(0, len(shuffled), settings.batch):
        batch = shuffled[i : i + settings.batch]
        messages = prompts.judge_messages(system, explanation, [text for text, _ in batch])
        parse = functools.partial(prompts.parse_judgements, n=len(batch))
        said += ep.ask(messages, parse, max_tokens=16 + 4 * len(batch))
    truth = np.array([t for _, t in shuffled])
    return balanced_accuracy(np.array(said), truth)


def balanced_accuracy(said: np.ndarray, truth: np.ndarray) -> dict:
    """``{"value", "lo", "hi", "n"}``: the mean of the hit rates on each class, with a 95%
    interval from ``BOOTSTRAP`` resamples of each class apart (percentile bootstrap)."""
    correct = (said == truth).astype(np.float64)
    pos, neg = correct[truth == 1], correct[truth == 0]
    value = 0.5 * (pos.mean() + neg.mean())
    rng = np.random.default_rng([len(pos), len(neg)])  # one stream: the classes apart
    boot = 0.5 * (_resampled_means(pos, rng) + _resampled_means(neg, rng))
    boot.sort()
    return {"value": round(float(value), 4), "lo": round(_quantile(boot, 0.025), 4),
            "hi": round(_quantile(boot, 0.975), 4), "n": int(len(truth))}  # fmt: skip


def _resampled_means(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The means of ``BOOTSTRAP`` resamples of ``x``."""
    return rng.multinomial(len(x), np.full(len(x), 1 / len(x)), size=BOOTSTRAP) @ x / len(x)
