"""A sparse source's activation log: windows read back from it equal the windows the
streamers take from the activations; a resumed log equals an uninterrupted one; merged
logs of disjoint sequences read as one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from indexer.activation_log import FILES, ActivationLog, LogWindows
from indexer.core import StreamingTopK
from indexer.intervals import StreamingIntervals

SEQ_LEN, UNITS, BATCH = 12, 40, 4


def sparse_batches(seed: int, n_batches: int = 5):
    """[B, T, U] batches of SAE-like activations (about 10% positive, a few negative),
    with random real lengths (the rest is padding, which must never show in a window)."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for b in range(n_batches):
        acts = torch.randn(BATCH, SEQ_LEN, UNITS, generator=gen).exp()
        acts = acts * (torch.rand(acts.shape, generator=gen) < 0.1)
        acts[0, 0, 0] = -1.5  # a negative value is logged too
        lengths = torch.randint(1, SEQ_LEN + 1, (BATCH,), generator=gen)
        lengths[b % BATCH] = SEQ_LEN
        for i, n in enumerate(lengths.tolist()):
            acts[i, n:] = torch.randn(SEQ_LEN - n, UNITS, generator=gen)  # padding: garbage
        out.append((b * BATCH, acts, lengths))
    return out


def same(a: np.ndarray, b: np.ndarray) -> None:
    np.testing.assert_array_equal(a, b)  # NaN where NaN, bit for bit elsewhere


@pytest.mark.parametrize("backend", ["compiled", "torch"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_log_windows_equal_the_streamed_windows(tmp_path, backend, seed):
    kw = {"skip_first": 1, "backend": backend}
    topk = StreamingTopK(UNITS, 6, before=4, after=2, **kw)
    bare_topk = StreamingTopK(UNITS, 6, before=4, after=2, windows=False, **kw)
    iv = StreamingIntervals(UNITS, per_bin=3, before=5, after=2, **kw)
    bare_iv = StreamingIntervals(UNITS, per_bin=3, before=5, after=2, windows=False, **kw)
    log = ActivationLog(tmp_path, "log")
    for first, acts, lengths in sparse_batches(seed):
        for st in (topk, bare_topk, iv, bare_iv):
            st.update(acts, first, lengths)
        log.update(acts, first, lengths)
    windows = LogWindows(log.state_dict(), SEQ_LEN)

    top, bare = topk.result(), bare_topk.result()
    assert torch.equal(top.tokens, bare.tokens) and bare.windows.shape[-1] == 0
    k, unit = np.nonzero(top.tokens.numpy() >= 0)
    got = windows.windows(unit, top.tokens.numpy()[k, unit], 4, 2)
    same(got, top.windows.numpy()[k, unit])
    assert np.isnan(got).any() and (got == 0).any()  # windows cut short, non-firing units

    full, bare = iv.state(), bare_iv.state()
    assert torch.equal(full.tokens, bare.tokens) and torch.equal(full.keys, bare.keys)
    unit, s, r = np.nonzero(full.tokens.numpy() >= 0)
    got = windows.windows(unit, full.tokens.numpy()[unit, s, r], 5, 2, np.float16)
    same(got, full.windows.numpy()[unit, s, r])


def test_a_resumed_log_equals_an_uninterrupted_one(tmp_path):
    batches = sparse_batches(7)
    straight = ActivationLog(tmp_path / "a", "log")
    (tmp_path / "a").mkdir()
    for first, acts, lengths in batches:
        straight.update(acts, first, lengths)
    straight.state_dict()

    folder = tmp_path / "b"
    folder.mkdir()
    crashed = ActivationLog(folder, "log")
    for first, acts, lengths in batches[:2]:
        crashed.update(acts, first, lengths)
    checkpoint = crashed.state_dict()
    for first, acts, lengths in batches[2:4]:  # written, then lost to a crash
        crashed.update(acts, first, lengths)
    resumed = ActivationLog(folder, "log")
    resumed.load_state_dict(checkpoint)
    for first, acts, lengths in batches[2:]:
        resumed.update(acts, first, lengths)
    resumed.state_dict()
    for f in FILES:
        assert (folder / f"log.{f}").read_bytes() == (tmp_path / "a" / f"log.{f}").read_bytes()


def test_merged_and_in_memory_logs_read_as_one(tmp_path):
    batches = sparse_batches(3, n_batches=6)
    one = ActivationLog(tmp_path, "one")
    shards = [ActivationLog(None, "even"), ActivationLog(None, "odd")]
    for i, (first, acts, lengths) in enumerate(batches):
        one.update(acts, first, lengths)
        shards[i % 2].update(acts, first, lengths)
    merged = ActivationLog.merge_states(shards[1].state_dict(), shards[0].state_dict())
    tokens = np.arange(len(batches) * BATCH * SEQ_LEN)
    units = tokens % UNITS
    same(
        LogWindows(merged, SEQ_LEN).windows(units, tokens, 3, 3),
        LogWindows(one.state_dict(), SEQ_LEN).windows(units, tokens, 3, 3),
    )
    with pytest.raises(ValueError, match="no sequence holding token"):
        LogWindows(shards[0].state_dict(), SEQ_LEN).windows(units, tokens, 3, 3)


def test_a_changed_work_folder_is_refused(tmp_path):
    log = ActivationLog(tmp_path, "log")
    for first, acts, lengths in sparse_batches(1, n_batches=2):
        log.update(acts, first, lengths)
    state = log.state_dict()
    (tmp_path / "log.values").write_bytes(b"")
    with pytest.raises(ValueError, match="shorter than its checkpoint"):
        ActivationLog(tmp_path, "log").load_state_dict(state)


def test_correlations_from_the_logs_listing_equal_their_own():
    """A sparse source lists its non-zeros once, for its log and its correlations: the
    correlations' state is the one they would have listed themselves (skipped first
    positions and padding left out)."""
    from indexer.correlation import StreamingCorrelation

    own = StreamingCorrelation(UNITS, sparse=True, skip_first=1)
    shared = StreamingCorrelation(UNITS, sparse=True, skip_first=1)
    log = ActivationLog(None, "log")
    for first, acts, lengths in sparse_batches(5):
        own.update(acts, first, lengths)
        shared.update(acts, first, lengths, listed=log.update(acts, first, lengths))
    a, b = own.state_dict(), shared.state_dict()
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]) if torch.is_tensor(a[name]) else a[name] == b[name]
