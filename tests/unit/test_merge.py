"""Shards merged exactly: any split of a stream's batches among shards, each shard's state
merged in any order, equals the state of one pass over the whole stream."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from index_checks import draw_lengths, pad, part

from indexer.core import StreamingTopK, merge_topk_states
from indexer.correlation import StreamingCorrelation
from indexer.intervals import StreamingIntervals, merge_states


@st.composite
def sharded_streams(draw):
    """Activations [S, T, U] in batches, ceilings growing mid-stream, ties common; and a
    shard for every batch."""
    n_batches = draw(st.integers(1, 6))
    per_batch = draw(st.integers(1, 3))
    seq_len = draw(st.integers(2, 7))
    n_units = draw(st.integers(1, 4))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    n_seq = n_batches * per_batch
    if draw(st.booleans()):
        acts = torch.randint(-2, 6, (n_seq, seq_len, n_units), generator=gen).float()
    else:
        acts = torch.randn(n_seq, seq_len, n_units, generator=gen).exp() - 1.0
    growth = torch.tensor(
        draw(st.lists(st.sampled_from([1.0, 4.0, 50.0]), min_size=n_seq, max_size=n_seq))
    )
    acts = acts * growth.cumprod(0).view(-1, 1, 1) ** 0.5
    if draw(st.booleans()):  # sparse, like SAE latents
        acts = acts.relu()
    lengths = draw_lengths(draw, n_seq, seq_len)
    n_shards = draw(st.integers(1, 4))
    shard_of = draw(st.lists(st.integers(0, n_shards - 1), min_size=n_batches, max_size=n_batches))
    return pad(acts, lengths), lengths, per_batch, shard_of, n_shards, draw(st.randoms())


def streamers(n_units, sparse):
    # A cap below the tokens sampled: shards keep their own smallest keys.
    corr = StreamingCorrelation(n_units, rate=0.5, sparse=sparse, skip_first=1, cap=3)
    return (
        StreamingTopK(n_units, 3, before=2, after=1, skip_first=1),
        StreamingIntervals(n_units, per_bin=2, before=2, after=1, skip_first=1),
        corr,
    )


def states(parts):
    return tuple(p.state_dict() for p in parts)


@settings(max_examples=150, deadline=None)
@given(sharded_streams(), st.booleans())
def test_any_sharding_merges_to_the_single_pass_state(stream, sparse):
    acts, lengths, per_batch, shard_of, n_shards, rnd = stream
    n_units = acts.shape[2]
    whole = streamers(n_units, sparse)
    shards = [streamers(n_units, sparse) for _ in range(n_shards)]
    for b, shard in enumerate(shard_of):
        lo = b * per_batch
        ends = part(lengths, lo, lo + per_batch)
        for one, other in zip(whole, shards[shard], strict=True):
            one.update(acts[lo : lo + per_batch], lo, ends)
            other.update(acts[lo : lo + per_batch], lo, ends)
    expect = states(whole)
    results = [states(s) for s in shards]
    rnd.shuffle(results)
    topk, intervals, corr = results[0]
    for t, i, c in results[1:]:
        topk = merge_topk_states(topk, t)
        intervals = merge_states(intervals, i)
        corr = StreamingCorrelation.merge_states(corr, c)
    for name, value in expect[0].items():
        assert torch.equal(value.nan_to_num(-7), topk[name].nan_to_num(-7)), name
    for name, value in expect[1].items():
        if name == "n_tokens":
            assert value == intervals[name]
        elif name == "windows":
            assert torch.equal(value.nan_to_num(-7), intervals[name].nan_to_num(-7))
        else:
            assert torch.equal(value, intervals[name]), name
    # The tokens collected, in token order: one pass's, to the bit.
    assert expect[2].keys() == corr.keys()
    for name, value in expect[2].items():
        same = torch.equal(value, corr[name]) if torch.is_tensor(value) else value == corr[name]
        assert same, name


def test_a_state_reloads_exactly():
    gen = torch.Generator().manual_seed(3)
    acts = torch.randn(6, 5, 3, generator=gen)
    first = streamers(3, False)
    for one in first:
        one.update(acts[:3], 0)
    again = streamers(3, False)
    for one, saved in zip(again, states(first), strict=True):
        one.load_state_dict(saved)
    for a, b in zip(first, again, strict=True):
        a.update(acts[3:], 3)
        b.update(acts[3:], 3)
    for sa, sb in zip(states(first), states(again), strict=True):
        for name, value in sa.items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(value.nan_to_num(-7), sb[name].nan_to_num(-7)), name
            else:
                assert value == sb[name]


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**31 - 1), st.booleans(), st.integers(1, 4))
def test_unit_slices_join_to_the_whole_correlation_state(seed, sparse, n_slices):
    """Slices of the units, each over every token, joined: the state of all of them."""
    from indexer.stats import unit_range

    gen = torch.Generator().manual_seed(seed)
    acts = torch.randn(6, 9, 7, generator=gen)
    if sparse:
        acts = acts.relu() * (torch.rand(acts.shape, generator=gen) < 0.3)
    whole = StreamingCorrelation(7, rate=0.5, sparse=sparse, skip_first=1, cap=5)
    ranges = [unit_range(7, (j, n_slices)) for j in range(n_slices)]
    parts = [StreamingCorrelation(hi - lo, rate=0.5, sparse=sparse, skip_first=1, cap=5)
             for lo, hi in ranges]  # fmt: skip
    for b in range(0, 6, 2):
        whole.update(acts[b : b + 2], b)
        for one, (lo, hi) in zip(parts, ranges, strict=True):
            one.update(acts[b : b + 2, :, lo:hi], b)
    joined = StreamingCorrelation.join_units(
        [p.state_dict() for p in parts], [lo for lo, _ in ranges]
    )
    expect = whole.state_dict()
    assert expect.keys() == joined.keys()
    for name, value in expect.items():
        same = torch.equal(value, joined[name]) if torch.is_tensor(value) else value == joined[name]
        assert same, name


def test_a_dense_sample_keeps_the_smallest_keys_in_token_order():
    from indexer.batches import token_keys

    acts = torch.randn(8, 10, 3, generator=torch.Generator().manual_seed(1))
    corr = StreamingCorrelation(3, rate=1.0, skip_first=0, cap=7)
    for b in range(8):
        corr.update(acts[b : b + 1], b)
    state = corr.state_dict()
    keys = token_keys(torch.arange(80))
    expect = keys.topk(7, largest=False).indices.sort().values
    assert torch.equal(state["tokens"], expect)
    assert torch.equal(state["rows"], acts.reshape(80, 3)[expect])
