"""The offline simulation score: predict a unit's activation from the token rules an
explanation states, and compare with the real activations on held-out examples.

Rules are read from the text itself, so any explanation that names tokens in quotes can be
scored, whoever wrote it:
- a quoted string names a token the unit fires on, except
- one right after the word "after" (or "following"), which names the token before it,
- and the part from "promotes" / "suppresses" on, which is about the output, not the input.
A token matches a string when their texts agree after trimming spaces and case.

The prediction on each token of a held-out window is 0 (no named token), 1 (a named
token) or 2 (a named token after a named context token). Two scores, each over every
token of the held-out windows pooled:
- ``simulation_r``: Pearson r between prediction and activation (0 where the prediction
  is constant: it then explains nothing);
- ``simulation_auc``: the AUC of the prediction for "fires", an activation of at least
  ``FIRES`` x the unit's max (ties count half).
Each has a 95% interval from ``BOOTSTRAP`` resamples of the held-out windows (percentile
bootstrap; the window is the unit of sampling, since its tokens are not independent),
and ``n``, the number of held-out windows.
"""

from __future__ import annotations

import functools
import json
import re
from collections import defaultdict

import numpy as np

from indexer.explain.windows import Window

FIRES = 0.1
BOOTSTRAP = 1000
LEVELS = 3
_OUTPUT = re.compile(r"\b(promotes?|suppress(es)?|boosts?|predicts?|outputs?)\b", re.I)
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"|“([^”]*)”|\'([^\'\s][^\']*)\'')
_CONTEXT_WORD = re.compile(r"\b(after|following)\s*$", re.I)


def normal(text: str) -> str:
    return text.strip().casefold() or text


class TokenIndex:
    """The vocabulary by normalised text: which token ids a quoted string names."""

    def __init__(self, vocab: dict[int, str]):
        by_text: dict[str, list[int]] = defaultdict(list)
        for i, t in vocab.items():
            by_text[normal(t)].append(i)
        self._by_text = {k: np.array(v, dtype=np.int64) for k, v in by_text.items()}

    def ids(self, strings: list[str]) -> np.ndarray:
        found = [self._by_text[normal(s)] for s in strings if normal(s) in self._by_text]
        return np.unique(np.concatenate(found)) if found else np.zeros(0, np.int64)


def rules(text: str) -> tuple[list[str], list[str]]:
    """The (fires-on, after) token strings an explanation names."""
    cut = _OUTPUT.search(text)
    text = text[: cut.start()] if cut else text
    fires, after = [], []
    for m in _QUOTED.finditer(text):
        if m.group(1) is not None:
            try:
                s = json.loads(f'"{m.group(1)}"')
            except json.JSONDecodeError:
                s = m.group(1)
        else:
            s = m.group(2) if m.group(2) is not None else m.group(3)
        (after if _CONTEXT_WORD.search(text[: m.start()]) else fires).append(s)
    return fires, after


def predict(tokens: np.ndarray, first: np.ndarray, fire_ids, after_ids) -> np.ndarray:
    """0, 1 or 2 on each of ``tokens`` (windows one after another; ``first`` marks each
    window's first token, which has no token before it in the window)."""
    level = np.isin(tokens, fire_ids).astype(np.int64)
    if after_ids.size:
        prev = np.zeros(len(tokens), bool)
        prev[1:] = np.isin(tokens[:-1], after_ids)
        level += level * (prev & ~first)
    return level


@functools.cache
def _resamples(n: int) -> np.ndarray:
    """[1 + BOOTSTRAP, n] weights: the sample itself, then the bootstrap resamples of n
    windows (fixed seed: every unit with n held-out windows is resampled alike)."""
    rng = np.random.default_rng(n)
    draws = rng.multinomial(n, np.full(n, 1 / n), size=BOOTSTRAP).astype(np.float64)
    return np.vstack([np.ones((1, n)), draws])


def score(text: str, held_out: list[Window], max_act: float, tokens: TokenIndex) -> dict | None:
    """``{"simulation_r": {...}, "simulation_auc": {...}}`` (each ``value``, ``lo``,
    ``hi``, ``n``), or None where the explanation names no token of the vocabulary or
    nothing is held out."""
    fires, after = rules(text)
    fire_ids, after_ids = tokens.ids(fires), tokens.ids(after)
    if not fire_ids.size or not held_out:
        return None
    n = len(held_out)
    lengths = np.array([len(w.tokens) for w in held_out])
    window = np.repeat(np.arange(n), lengths)
    first = np.zeros(len(window), bool)
    first[np.cumsum(lengths)[:-1]] = True
    first[0] = True
    p = predict(np.concatenate([w.tokens for w in held_out]), first, fire_ids, after_ids)
    a = np.concatenate([w.acts for w in held_out])
    ok = np.isfinite(a)
    window, p, a = window[ok], p[ok], a[ok]
    pf = p.astype(np.float64)
    # Per window: the sums Pearson's r needs, and counts of (level, fires).
    sums = np.stack(
        [
            np.bincount(window, weights=x, minlength=n)
            for x in (np.ones_like(a), pf, a, pf * pf, a * a, pf * a)
        ],
        axis=1,
    )
    label = (a >= FIRES * max_act) if max_act > 0 else np.zeros(len(a), bool)
    cell = (window * LEVELS + p) * 2 + label
    counts = np.bincount(cell, minlength=n * LEVELS * 2).reshape(n, LEVELS, 2).astype(np.float64)
    weights = _resamples(n)
    out = {"simulation_r": _summary(_pearson(weights @ sums), n)}
    auc = _auc((weights @ counts.reshape(n, -1)).reshape(-1, LEVELS, 2))
    if np.isfinite(auc[0]):
        out["simulation_auc"] = _summary(auc, n)
    return out


def _quantile(ordered: np.ndarray, q: float) -> float:
    """``np.percentile``'s default (linear) quantile of sorted values, without its
    per-call overhead (two a score, 100k a demo)."""
    at = q * (len(ordered) - 1)
    lo = int(at)
    hi = min(lo + 1, len(ordered) - 1)
    return float(ordered[lo] + (ordered[hi] - ordered[lo]) * (at - lo))


def _pearson(s: np.ndarray) -> np.ndarray:
    """r from [B, 6] sums (n, Σp, Σa, Σp², Σa², Σpa); 0 where either side is constant."""
    n, sp, sa, spp, saa, spa = s.T
    cov = n * spa - sp * sa
    var = (n * spp - sp * sp) * (n * saa - sa * sa)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = cov / np.sqrt(var)
    return np.where(var > 0, np.clip(r, -1, 1), 0.0)


def _auc(c: np.ndarray) -> np.ndarray:
    """AUC from [B, levels, 2] counts of (prediction level, fires); NaN without both
    classes."""
    neg, pos = c[..., 0], c[..., 1]
    below = np.cumsum(neg, axis=1) - neg  # negatives at lower levels
    wins = (pos * (below + 0.5 * neg)).sum(1)
    total = pos.sum(1) * neg.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, wins / total, np.nan)


def _summary(values: np.ndarray, n: int) -> dict:
    boot = np.sort(values[1:][np.isfinite(values[1:])])
    lo, hi = (_quantile(boot, 0.025), _quantile(boot, 0.975)) if boot.size else (np.nan, np.nan)
    return {"value": round(float(values[0]), 4), "lo": round(float(lo), 4),
            "hi": round(float(hi), 4), "n": n}  # fmt: skip
