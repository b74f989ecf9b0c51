"""The compiled kernels' float16 rounding against torch's, and a first batch's bounds
against brute force."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from indexer.kernel_ops import HARDWARE_HALVES, half_bits, hardware_half_bits
from indexer.kernels import _first_batch_bounds, eligible_rows

CONVERSIONS = [half_bits] + ([hardware_half_bits] if HARDWARE_HALVES else [])


@pytest.mark.parametrize("convert", CONVERSIONS, ids=lambda f: f.__name__)
def test_half_bits_round_like_torch(convert):
    gen = torch.Generator().manual_seed(0)
    # Random bit patterns cover every exponent (subnormals, overflow, NaN, infinities) ...
    raw = torch.randint(0, 2**32, (200_000,), generator=gen, dtype=torch.int64)
    values = torch.from_numpy(raw.numpy().astype(np.uint32).view(np.float32))
    # ... and values on and next to the rounding ties of both normal and subnormal halves.
    halves = torch.arange(0, 2**16, dtype=torch.int32).to(torch.int16).view(torch.float16)
    edges = halves.float()[torch.isfinite(halves)]
    mids = (edges[:-1].double() + edges[1:].double()) / 2
    values = torch.cat([values, edges, mids.float(), torch.nextafter(mids, mids + 1).float()])
    bits = values.numpy().view(np.uint32)
    got = np.array([convert(b) for b in bits], dtype=np.uint16)
    expect = values.half().numpy().view(np.uint16)
    nan = torch.isnan(values).numpy()
    assert (got[~nan] == expect[~nan]).all()
    assert np.isnan(got[nan].view(np.float16)).all()


@settings(max_examples=200, deadline=None)
@given(
    st.integers(0, 2**31 - 1),
    st.integers(0, 2),
    st.integers(0, 9),
    st.integers(1, 3),
    st.booleans(),
)
def test_first_batch_bounds_against_brute_force(seed, skip, k, chunks, padded):
    """The column max skips NaN and infinity; the top-k floor is -inf without a k or
    enough rows, never above a unit's k-th largest value, and tight enough to matter.
    Only the eligible rows count (padded ones hold values above all others)."""
    rng = np.random.default_rng(seed)
    n_seq, seq_len, n_units = rng.integers(1, 5), rng.integers(3, 12), rng.integers(1, 48)
    acts = rng.integers(-3, 4, (n_seq, seq_len, n_units)).astype(np.float32)  # many ties
    if seed % 2:
        acts = rng.standard_normal(acts.shape).astype(np.float32)
    for special, share in ((np.nan, 0.1), (np.inf, 0.05), (-np.inf, 0.05)):
        acts[rng.random(acts.shape) < share] = special
    ends = rng.integers(1, seq_len + 1, n_seq) if padded else None
    if padded:
        acts[np.arange(seq_len)[None, :] >= ends[:, None]] = 50.0
    eligible = eligible_rows(n_seq, seq_len, skip, ends)
    top, floor = _first_batch_bounds(acts, eligible, k, chunks)
    rows = acts.reshape(-1, n_units)[eligible]
    for u in range(n_units):
        column = rows[:, u][~np.isnan(rows[:, u])]
        finite = column[column < np.inf]
        assert top[u] == (finite.max() if finite.size else -np.inf)
        if k == 0 or rows.shape[0] < k:
            assert floor[u] == -np.inf
        elif floor[u] > -np.inf:  # k different rows are at or above it
            assert (column >= floor[u]).sum() >= k
    if k and rows.shape[0] >= 4 * k:  # 4k groups: a unit's k-th largest group maximum
        clean = np.where(np.isnan(rows), -np.inf, rows)
        group = np.arange(rows.shape[0]) * (4 * k) // rows.shape[0]
        maxima = np.stack([clean[group == g].max(0) for g in range(4 * k)])
        assert (floor == np.sort(maxima, 0)[-k]).all()


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 5), st.integers(12, 300), st.booleans())
def test_logit_summary_kernel_equals_tensor_reference(seed, n, vocab, ties):
    """Top and bottom tokens, min, max and histogram counts of each row, as the tensor code
    computes them (``summaries.logit_tables``/``logit_histograms``)."""
    from indexer import summaries

    gen = torch.Generator().manual_seed(seed)
    effects = torch.randn(n, vocab, generator=gen) * 3
    if ties:  # repeated values, and a constant row
        effects = effects.round()
        effects[0] = 1.5
    tables, hists = summaries.logit_summaries(effects)
    assert hists == summaries.logit_histograms(effects.clone())
    expect = summaries.logit_tables(effects)
    for got, want, row in zip(tables, expect, effects, strict=True):
        for side in ("top", "bottom"):
            assert [v for _, v in got[side]] == [v for _, v in want[side]]
            assert all(round(row[i].item(), 5) == v for i, v in got[side])
