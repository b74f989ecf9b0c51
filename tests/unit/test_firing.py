"""Top units across sources against a brute-force sort of every (source, unit) pair."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from spyglass.firing import top_over_prompt, top_per_position


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 6), st.integers(1, 30), st.integers(0, 2))
def test_merges_equal_brute_force(seed, n_pos, k, first):
    gen = torch.Generator().manual_seed(seed)
    widths = {"a": 7, "b": 3, "c": 12}
    # Integer values make ties common, where merges go wrong.
    acts = {n: torch.randint(-4, 6, (n_pos, w), generator=gen).float() for n, w in widths.items()}
    first = min(first, n_pos - 1)
    brute = sorted(
        (-acts[n][first:, u].max().item(), n, u) for n, w in widths.items() for u in range(w)
    )[:k]
    got = top_over_prompt(acts, k, first)
    assert [(-f.value, f.source, f.unit) for f in got] == brute
    for f in got:
        assert f.position >= first and acts[f.source][f.position, f.unit].item() == f.value
    per = top_per_position(acts, k)
    for p in range(n_pos):
        expect = sorted((-acts[n][p, u].item(), n, u) for n, w in widths.items() for u in range(w))
        assert [(-f.value, f.source, f.unit) for f in per[p]] == expect[:k]


@settings(max_examples=80, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 5), st.integers(1, 12))
def test_relative_ranking_equals_brute_force(seed, n_pos, k):
    gen = torch.Generator().manual_seed(seed)
    widths = {"a": 5, "b": 9}
    acts = {n: torch.randn(n_pos, w, generator=gen) for n, w in widths.items()}
    scale = {n: torch.rand(w, generator=gen) * 3 for n, w in widths.items()}
    scale["b"][0] = 0  # never positive in the corpus: ranked last
    brute = sorted(
        (-(acts[n][:, u] / scale[n][u]).max().item() if scale[n][u] > 0 else float("inf"), n, u)
        for n, w in widths.items()
        for u in range(w)
    )[:k]
    got = top_over_prompt(acts, k, 0, scale)
    assert [(f.source, f.unit) for f in got] == [(n, u) for _, n, u in brute]
    for f in got:
        assert acts[f.source][f.position, f.unit].item() == f.value
        if scale[f.source][f.unit] > 0:
            assert f.score == pytest.approx(f.value / scale[f.source][f.unit].item())
