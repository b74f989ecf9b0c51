"""The streaming core against brute force over the whole stream."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from index_checks import assert_same_state, draw_lengths, ends_of, pad, part

from indexer.core import StreamingTopK, fold_batch
from indexer.correlation import StreamingCorrelation
from indexer.intervals import StreamingIntervals


@st.composite
def streams(draw):
    """A stream of activations [S, T, U] (padded past each sequence's length, if drawn),
    its lengths, and a random cut of it into batches."""
    n_seq = draw(st.integers(1, 7))
    seq_len = draw(st.integers(1, 9))
    n_units = draw(st.integers(1, 5))
    seed = draw(st.integers(0, 2**31 - 1))
    gen = torch.Generator().manual_seed(seed)
    # Few distinct values make ties common; ties are where top-k code breaks.
    if draw(st.booleans()):
        acts = torch.randint(-3, 4, (n_seq, seq_len, n_units), generator=gen).float()
    else:
        acts = torch.randn(n_seq, seq_len, n_units, generator=gen)
    lengths = draw_lengths(draw, n_seq, seq_len)
    cuts = sorted(draw(st.sets(st.integers(1, max(n_seq - 1, 1)), max_size=n_seq)))
    bounds = [0, *[c for c in cuts if c < n_seq], n_seq]
    return pad(acts, lengths), bounds, lengths


BACKENDS = st.sampled_from(["compiled", "torch"])


def run_topk(acts, bounds, k, before, after, skip_first, backend="compiled", lengths=None):
    n_seq, seq_len, n_units = acts.shape
    topk = StreamingTopK(
        n_units, k, before=before, after=after, skip_first=skip_first, backend=backend
    )
    for lo, hi in zip(bounds, bounds[1:], strict=False):
        topk.update(acts[lo:hi], first_sequence=lo, lengths=part(lengths, lo, hi))
    return topk.result()


@settings(max_examples=300, deadline=None)
@given(
    streams(),
    st.integers(1, 12),
    st.integers(0, 4),
    st.integers(0, 3),
    st.integers(0, 2),
    BACKENDS,
)
def test_topk_equals_brute_force_sort(stream, k, before, after, skip_first, backend):
    acts, bounds, lengths = stream
    n_seq, seq_len, n_units = acts.shape
    ends = ends_of(lengths, n_seq, seq_len)
    res = run_topk(acts, bounds, k, before, after, skip_first, backend, lengths)
    for u in range(n_units):
        # Brute force: every eligible token of the whole stream (real and past skip_first),
        # sorted.
        eligible = [
            (acts[s, p, u].item(), s * seq_len + p)
            for s in range(n_seq)
            for p in range(skip_first, ends[s])
        ]
        ranked = sorted(eligible, key=lambda e: (-e[0], e[1]))[:k]
        expect = [v for v, _ in ranked]
        got = res.values[: len(expect), u].tolist()
        assert got == expect
        if backend == "compiled":  # one total order: ties go to the earlier token
            assert res.tokens[: len(expect), u].tolist() == [t for _, t in ranked]
        assert all(math.isinf(v) and v < 0 for v in res.values[len(expect) :, u].tolist())
        assert (res.tokens[len(expect) :, u] == -1).all()
        seen = set()
        for slot in range(len(expect)):
            token = res.tokens[slot, u].item()
            s, p = divmod(token, seq_len)
            assert skip_first <= p < ends[s] and token not in seen
            seen.add(token)
            # The recorded token really holds the recorded value ...
            assert acts[s, p, u].item() == got[slot]
            # ... and the window is that sequence's real values around it, NaN off its
            # real tokens (past T, or padding).
            for j, q in enumerate(range(p - before, p + after + 1)):
                w = res.windows[slot, u, j].item()
                if 0 <= q < ends[s]:
                    assert w == acts[s, q, u].item()
                else:
                    assert math.isnan(w)


@settings(max_examples=100, deadline=None)
@given(streams(), st.integers(1, 6), BACKENDS)
def test_topk_values_do_not_depend_on_batch_cut(stream, k, backend):
    acts, bounds, lengths = stream
    one = run_topk(acts, [0, acts.shape[0]], k, 2, 1, 1, backend, lengths)
    cut = run_topk(acts, bounds, k, 2, 1, 1, backend, lengths)
    assert torch.equal(one.values, cut.values)
    if backend == "compiled":
        assert torch.equal(one.tokens, cut.tokens)
        assert torch.equal(one.windows.nan_to_num(-9), cut.windows.nan_to_num(-9))


@settings(max_examples=150, deadline=None)
@given(streams(), st.integers(1, 6), st.integers(0, 2))
def test_one_pass_over_topk_and_intervals_keeps_both_states(stream, k, skip_first):
    """``fold_batch`` folds top-k and intervals in one compiled pass, which visits a state's
    first batch in key order, not token order: with ties common, it must leave the same
    states as each one on its own (the tensor code for the intervals)."""
    acts, bounds, lengths = stream
    n_units = acts.shape[2]
    topk = StreamingTopK(n_units, k, before=2, after=1, skip_first=skip_first)
    intervals = StreamingIntervals(n_units, before=2, after=1, skip_first=skip_first)
    alone = StreamingIntervals(n_units, before=2, after=1, skip_first=skip_first, backend="torch")
    for lo, hi in zip(bounds, bounds[1:], strict=False):
        fold_batch(topk, intervals, acts[lo:hi], lo, part(lengths, lo, hi))
        alone.update(acts[lo:hi], first_sequence=lo, lengths=part(lengths, lo, hi))
    expect = run_topk(acts, bounds, k, 2, 1, skip_first, lengths=lengths)
    got = topk.result()
    assert torch.equal(got.values, expect.values)
    assert torch.equal(got.tokens, expect.tokens)
    assert torch.equal(got.windows.nan_to_num(-9), expect.windows.nan_to_num(-9))
    assert_same_state(intervals.state(), alone.state())


# ---- correlation ---------------------------------------------------------------------------


def brute_pearson(acts: torch.Tensor, tokens: list[int], rows: torch.Tensor | None = None):
    """Pearson over the tokens (global indices) given, optionally a subset ``rows`` of them."""
    seq_len = acts.shape[1]
    x = torch.stack([acts[t // seq_len, t % seq_len] for t in tokens]).double()
    if rows is not None:
        x = x[rows]
    return torch.corrcoef(x.t()), x.shape[0]


@settings(max_examples=60, deadline=None)
@given(
    st.integers(0, 2**31 - 1),
    st.booleans(),
    st.integers(0, 2),
    BACKENDS,
    st.integers(1, 6),
    st.booleans(),
)
def test_correlation_equals_brute_force_pearson(seed, sparse, skip, backend, per_batch, padded):
    from indexer.batches import token_keys

    gen = torch.Generator().manual_seed(seed)
    n_seq, seq_len, n_units = 12, 10, 6
    acts = torch.randn(n_seq, seq_len, n_units, generator=gen)
    acts[..., 1] = 0.5 * acts[..., 0] + 0.1 * acts[..., 1]  # a strongly correlated pair
    if sparse:  # mostly zero, like SAE latents; unit 5 never fires
        acts = acts.relu() * (torch.rand(acts.shape, generator=gen) < 0.3)
        acts[..., 5] = 0
    lengths = torch.randint(1, seq_len + 1, (n_seq,), generator=gen) if padded else None
    # Padding that moved unit 5 (constant on real tokens) would give it a correlation.
    acts = pad(acts, lengths)
    rate = 1.0 if sparse else 0.5
    corr = StreamingCorrelation(n_units, rate=rate, sparse=sparse, skip_first=skip, backend=backend)
    for lo in range(0, n_seq, per_batch):
        hi = lo + per_batch
        corr.update(acts[lo:hi], first_sequence=lo, lengths=part(lengths, lo, hi))
    ends = ends_of(lengths, n_seq, seq_len)
    tokens = [s * seq_len + p for s in range(n_seq) for p in range(skip, ends[s])]
    keys = token_keys(torch.tensor(tokens, dtype=torch.long))
    picked = None if sparse else (keys.double() < rate * 2.0**63)
    expect, n = brute_pearson(acts, tokens, picked)
    assert corr.n_tokens == n
    idx, r = corr.top(3)
    for u in range(n_units):
        row = expect[u].clone()
        row[u] = float("nan")
        valid = [(row[j].item(), j) for j in range(n_units) if row[j] == row[j]]
        got = [(v, j) for j, v in zip(idx[u].tolist(), r[u].tolist(), strict=True) if v == v]
        if not valid:
            assert got == []
            continue
        assert len(got) == min(3, len(valid))
        assert [v for v, _ in got] == pytest.approx(
            sorted((v for v, _ in valid), reverse=True)[: len(got)], abs=1e-4
        )
        for v, j in got:
            assert expect[u, j].item() == pytest.approx(v, abs=1e-4)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31 - 1), st.sampled_from([1, 3, 8]), BACKENDS)
def test_wide_sparse_correlation_equals_corrcoef(seed, k_active, backend):
    """Latents like a TopK SAE's: few of many fire per token, so most pairs never fire
    together, and a latent's best neighbours are often among those (negative r)."""
    gen = torch.Generator().manual_seed(seed)
    n_seq, seq_len, n_units = 6, 16, 300
    scores = torch.randn(n_seq, seq_len, n_units, generator=gen)
    scores[..., :40] += 2.0  # some latents fire often
    top = scores.topk(k_active, dim=-1)
    acts = torch.zeros_like(scores).scatter_(-1, top.indices, top.values.relu())
    acts[..., 7] = 0  # never fires: no correlation at all
    corr = StreamingCorrelation(n_units, sparse=True, skip_first=1, backend=backend)
    for lo in range(0, n_seq, 4):
        corr.update(acts[lo : lo + 4], first_sequence=lo)
    x = acts[:, 1:].reshape(-1, n_units).double()
    expect = torch.corrcoef(x.t())
    idx, r = corr.top(10)
    for u in range(n_units):
        row = expect[u].clone()
        row[u] = float("nan")
        valid = row[row == row]
        got = r[u][r[u] == r[u]]
        if not valid.numel():
            assert got.numel() == 0, u
            continue
        want = valid.sort(descending=True).values[: got.numel()]
        assert got.numel() == min(10, valid.numel())
        torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=0)
        picked = idx[u][: got.numel()]
        torch.testing.assert_close(expect[u, picked], got.double(), atol=1e-5, rtol=0)
