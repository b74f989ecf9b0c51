"""The simulation scorer against brute force, and the rules it reads from explanations."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from indexer.explain import simulation, token_pattern
from indexer.explain.windows import UnitWindows, Window

VOCAB = {0: " the", 1: " cat", 2: " dog", 3: ".", 4: "\n", 5: " The", 6: "next"}


def _window(tokens, acts, at=0, held_out=True):
    tokens, acts = np.array(tokens), np.array(acts, dtype=np.float64)
    return Window(tokens, acts, at, float(acts[at]), -1, held_out)


def test_rules_read_back_what_the_token_pattern_explainer_writes():
    shown = [_window([0, 1], [0.0, 2.0], at=1), _window([0, 2], [0.0, 1.0], at=1)]
    shown += [_window([3, 1], [0.0, 1.5], at=1)]
    unit = UnitWindows(0, 2.0, shown, [])
    text, evidence = token_pattern.explain(unit, {"top": [[6, 1.0]], "bottom": [[4, -1.0]]}, VOCAB)
    assert (
        text == '" cat" (67%), " dog" (33%) after " the" (67%); promotes "next"; suppresses "\\n"'
    )
    assert evidence["tokens"][0][:2] == [1, " cat"]
    assert simulation.rules(text) == ([" cat", " dog"], [" the"])


def test_rules_take_any_quotes_and_stop_at_the_output_clause():
    fires, after = simulation.rules('fires on “cat” and \'dog\' following "the"; promotes "x"')
    assert fires == ["cat", "dog"] and after == ["the"]
    index = simulation.TokenIndex(VOCAB)
    assert index.ids(["THE"]).tolist() == [0, 5]  # trimmed and case-folded
    assert index.ids(["\n"]).tolist() == [4]  # a whitespace token still matches itself


def _brute(text, held, max_act):
    """r and AUC over the pooled tokens, pair by pair."""
    fires, after = simulation.rules(text)
    index = simulation.TokenIndex(VOCAB)
    f, a = set(index.ids(fires).tolist()), set(index.ids(after).tolist())
    pred, act = [], []
    for w in held:
        for i, (t, v) in enumerate(zip(w.tokens.tolist(), w.acts.tolist(), strict=True)):
            if not np.isfinite(v):
                continue
            level = 0
            if t in f:
                level = 2 if (a and i > 0 and w.tokens[i - 1] in a) else 1
            pred.append(level)
            act.append(v)
    r = np.corrcoef(pred, act)[0, 1] if np.std(pred) > 0 else 0.0
    pos = [p for p, v in zip(pred, act, strict=True) if v >= simulation.FIRES * max_act]
    neg = [p for p, v in zip(pred, act, strict=True) if v < simulation.FIRES * max_act]
    wins = sum(1.0 if p > q else 0.5 if p == q else 0.0 for p, q in itertools.product(pos, neg))
    return r, wins / (len(pos) * len(neg))


@pytest.mark.parametrize("seed", range(6))
def test_simulation_scores_equal_brute_force(seed):
    rng = np.random.default_rng(seed)
    held = []
    for _ in range(rng.integers(3, 12)):
        n = int(rng.integers(2, 9))
        tokens = rng.integers(0, len(VOCAB), n)
        acts = np.where(tokens == 1, 2.0, 0.0) + rng.random(n) * 0.5
        acts[rng.random(n) < 0.1] = np.nan  # off the sequence
        held.append(_window(tokens, acts))
    text = '" cat" (50%) after " the" (40%); promotes "next"'
    out = simulation.score(text, held, 2.5, simulation.TokenIndex(VOCAB))
    r, auc = _brute(text, held, 2.5)
    assert out["simulation_r"]["value"] == pytest.approx(r, abs=1e-4)
    assert out["simulation_auc"]["value"] == pytest.approx(auc, abs=1e-4)
    for name in ("simulation_r", "simulation_auc"):
        s = out[name]
        assert s["n"] == len(held)
        assert s["lo"] <= s["hi"]


def test_constant_prediction_scores_zero_and_unnamed_tokens_are_not_scored():
    held = [_window([0, 2], [0.0, 1.0]), _window([2, 3], [1.0, 0.0])]
    index = simulation.TokenIndex(VOCAB)
    out = simulation.score('" cat"', held, 1.0, index)  # never in the held-out windows
    # Exact: the prediction is 0 everywhere, so its variance is exactly 0 (r is then 0 by
    # definition), and every pair is a tie (AUC 0.5 from whole counts).
    assert out["simulation_r"]["value"] == 0.0
    assert out["simulation_auc"]["value"] == 0.5
    assert simulation.score('"zebra"', held, 1.0, index) is None
    assert simulation.score("no quotes at all", held, 1.0, index) is None


def test_interval_quantiles_are_numpys():
    rng = np.random.default_rng(0)
    for n in (1, 2, 5, 1000):
        x = np.sort(rng.standard_normal(n))
        for q in (0.025, 0.975):
            assert simulation._quantile(x, q) == pytest.approx(np.percentile(x, 100 * q))
