"""Interval samples, histograms and neighbours of the tiny index against a fresh
TransformerLens run over the stored sequences (brute force over every real token: the
fresh activations hold NaN past a short sequence's end, which no comparison counts)."""

from __future__ import annotations

import math

import pytest
import torch
from index_checks import StoredIndex, fresh_hooked, fresh_mlp_acts, read_index

from indexer.batches import token_keys
from spyglass import storage

ZERO_TOL = 1e-6


@pytest.fixture(scope="module")
def stored(tiny_index) -> StoredIndex:
    return read_index(tiny_index.db, tiny_index.slug)


@pytest.fixture(scope="module")
def acts(tiny_model_dir, stored):
    return fresh_mlp_acts(fresh_hooked(tiny_model_dir), stored.token_lists(), [0, 1])


@pytest.fixture(scope="module")
def samples(tiny_index, stored):
    engine = storage.make_engine(tiny_index.db)
    with engine.connect() as conn:
        out = {
            src.layer: [storage.get_samples(conn, src.id, u) for u in range(src.n_units)]
            for src in stored.sources
        }
    engine.dispose()
    return out


def test_intervals_and_samples_match_a_fresh_run(stored, acts, samples):
    skip = stored.model.skip_first
    checked = wanted = 0
    for layer in (0, 1):
        ref = acts[layer][:, skip:, :]  # [S, T', U]
        for u, unit in enumerate(stored.units[layer]):
            table = unit.stats.intervals
            values = ref[:, :, u].reshape(-1)
            if unit.max_act <= 0:
                assert table is None
                continue
            assert (
                len(table) == 10
                and table[0][0] == 0
                and table[-1][1] == pytest.approx(unit.max_act)
            )
            for k, (lo, hi, count) in enumerate(table):
                # Counts are the fresh run's, up to tokens within float noise of an edge.
                inside = ((values > lo + ZERO_TOL) & (values <= hi - ZERO_TOL)).sum().item()
                near = ((values - lo).abs() <= ZERO_TOL).sum() + (
                    (values - hi).abs() <= ZERO_TOL
                ).sum()
                assert inside <= count <= inside + near.item(), (layer, u, k)
                got = samples[layer][u].get(k, [])
                assert len(got) <= 5
                wanted += min(5, count)
                for s in got:
                    fresh = acts[layer][s.sequence_id, s.position, u].item()
                    assert fresh == pytest.approx(s.value, abs=1e-5)
                    # Inside the stated range.
                    assert lo - 1e-5 < s.value <= hi + 1e-5
                    checked += 1
    assert checked > 100  # the test saw real samples, not an empty index
    # Fewer than 5 only where a bin shared with a denser neighbour ran out of slots: rare.
    assert checked >= 0.95 * wanted


def test_samples_are_the_interval_tokens_first_in_key_order(stored, acts, samples):
    skip, seq_len = stored.model.skip_first, stored.model.seq_len
    n_seq = acts[0].shape[0]
    tokens = torch.tensor([s * seq_len + p for s in range(n_seq) for p in range(skip, seq_len)])
    keys = token_keys(tokens)
    for layer in (0, 1):
        ref = acts[layer][:, skip:, :].reshape(-1, acts[layer].shape[2])
        for u in range(0, ref.shape[1], 7):
            table = stored.units[layer][u].stats.intervals or []
            for k, (lo, hi, _) in enumerate(table):
                inside = ((ref[:, u] > lo + ZERO_TOL) & (ref[:, u] <= hi - ZERO_TOL)).nonzero()
                inside_keys = dict(
                    zip(
                        tokens[inside.squeeze(1)].tolist(),
                        keys[inside.squeeze(1)].tolist(),
                        strict=True,
                    )
                )
                got = [s.sequence_id * seq_len + s.position for s in samples[layer][u].get(k, [])]
                got_keys = token_keys(torch.tensor(got, dtype=torch.long)).tolist() if got else []
                assert got_keys == sorted(got_keys)
                # A prefix of the interval's tokens in key order: every token of the interval
                # (edge-noise tokens aside) with a smaller key than a sample is a sample too.
                if got:
                    smaller = {t for t, key in inside_keys.items() if key <= got_keys[-1]}
                    assert smaller <= set(got), (layer, u, k)


def test_histogram_counts_every_positive_activation(stored, acts):
    skip = stored.model.skip_first
    for layer in (0, 1):
        ref = acts[layer][:, skip:, :]
        for u, unit in enumerate(stored.units[layer]):
            hist = unit.stats.hist
            positives = (ref[:, :, u] > 0).sum().item()
            if hist is None:
                assert positives <= 2  # float noise at 0 only
                continue
            assert abs(sum(hist.counts) - positives) <= 2
            assert sum(c for *_, c in unit.stats.intervals) == sum(hist.counts)
            assert hist.width * len(hist.counts) >= unit.max_act - 1e-6


def test_means_are_the_sampled_tokens_means(stored, acts):
    """Each unit's stored mean (what mean ablation sets it to) is its mean activation over
    the correlations' token sample, recounted from a fresh run."""
    skip, seq_len = stored.model.skip_first, stored.model.seq_len
    n_seq = acts[0].shape[0]
    tokens = torch.tensor([s * seq_len + p for s in range(n_seq) for p in range(skip, seq_len)])
    picked = token_keys(tokens).double() < 2.0**63 / 32
    picked &= ~acts[0][:, skip:, 0].reshape(-1).isnan()
    for layer in (0, 1):
        x = acts[layer][:, skip:, :].reshape(-1, acts[layer].shape[2])[picked].double()
        means = [u.stats.mean for u in stored.units[layer]]
        torch.testing.assert_close(torch.tensor(means, dtype=torch.float64), x.mean(0),
                                   rtol=1e-4, atol=1e-5)  # fmt: skip


def test_correlated_neighbours_match_pearson_on_the_sampled_tokens(stored, acts):
    skip, seq_len = stored.model.skip_first, stored.model.seq_len
    n_seq = acts[0].shape[0]
    tokens = torch.tensor([s * seq_len + p for s in range(n_seq) for p in range(skip, seq_len)])
    picked = token_keys(tokens).double() < 2.0**63 / 32
    picked &= ~acts[0][:, skip:, 0].reshape(-1).isnan()  # real tokens only
    for layer in (0, 1):
        x = acts[layer][:, skip:, :].reshape(-1, acts[layer].shape[2])[picked].double()
        corr = torch.corrcoef(x.t())
        for u in range(0, x.shape[1], 5):
            stats = stored.units[layer][u].stats
            assert stats.correlation_tokens == int(picked.sum())
            row = corr[u].clone()
            row[u] = -math.inf
            row = torch.nan_to_num(row, nan=-math.inf)
            for idx, r in stats.correlated:
                assert row[idx].item() == pytest.approx(r, abs=2e-3)
            best = row.max().item()
            if stats.correlated:
                assert stats.correlated[0][1] == pytest.approx(best, abs=2e-3)


def test_logit_histogram_covers_the_vocabulary(stored):
    unit = stored.units[0][3]
    lh = unit.stats.logit_hist
    assert sum(lh.counts) == stored.model.d_vocab
    assert lh.hi == pytest.approx(unit.logits["top"][0][1], abs=1e-4)
    assert lh.lo == pytest.approx(unit.logits["bottom"][0][1], abs=1e-4)
