"""Streamed histograms and interval samples against brute force over the whole stream."""

import dataclasses
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from index_checks import assert_same_state, draw_lengths, ends_of, pad, part

from indexer.batches import token_keys
from indexer.interval_choice import choose_intervals
from indexer.interval_tensor import ceiling_exponent
from indexer.intervals import COUNT_BINS, EMPTY, StreamingIntervals


@st.composite
def streams(draw):
    """Activations [S, T, U] cut into batches; later batches may be scaled up, so ceilings
    grow mid-stream (the merge path), and integer values sit exactly on bin edges."""
    n_seq = draw(st.integers(1, 8))
    seq_len = draw(st.integers(1, 9))
    n_units = draw(st.integers(1, 4))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    kind = draw(st.sampled_from(["ints", "normal", "heavy"]))
    if kind == "ints":
        acts = torch.randint(-3, 9, (n_seq, seq_len, n_units), generator=gen).float()
    elif kind == "normal":
        acts = torch.randn(n_seq, seq_len, n_units, generator=gen)
    else:  # a long tail: most mass near 0, a few large values
        acts = torch.randn(n_seq, seq_len, n_units, generator=gen).exp() - 1.2
    growth = torch.tensor(
        draw(st.lists(st.sampled_from([1.0, 3.0, 100.0]), min_size=n_seq, max_size=n_seq))
    )
    acts = acts * growth.cumprod(0).view(-1, 1, 1) ** 0.5
    cuts = sorted(draw(st.sets(st.integers(1, max(n_seq - 1, 1)), max_size=n_seq)))
    bounds = [0, *[c for c in cuts if c < n_seq], n_seq]
    lengths = draw_lengths(draw, n_seq, seq_len)
    # Padding far above every real value: let in, it would raise ceilings and fill bins.
    return pad(acts, lengths, 1e6), bounds, lengths


def run(
    acts,
    bounds,
    skip_first,
    per_bin=5,
    before=2,
    after=1,
    backend="compiled",
    checkpoint=None,
    lengths=None,
):
    """The state after streaming ``acts`` cut at ``bounds``. ``checkpoint`` "save": a
    ``state_dict`` after every batch (it puts the slots in key order), "reload": after
    every batch the state is loaded into another streamer, one that has streamed other
    values first, and carried on there."""
    n_units = acts.shape[2]

    def streamer():
        return StreamingIntervals(
            n_units,
            per_bin=per_bin,
            before=before,
            after=after,
            skip_first=skip_first,
            backend=backend,
        )

    si = streamer()
    for lo, hi in zip(bounds, bounds[1:], strict=False):
        si.update(acts[lo:hi], first_sequence=lo, lengths=part(lengths, lo, hi))
        if checkpoint == "save":
            si.state_dict()
        elif checkpoint == "reload":
            saved = {k: v.clone() if torch.is_tensor(v) else v for k, v in si.state_dict().items()}
            si = streamer()
            si.update(acts.flip(0)[: hi - lo] * 2, first_sequence=lo)
            si.load_state_dict(saved)
    return si.state()


def entries(acts, skip_first, u, lengths=None):
    """Every eligible positive (value, token, key) of unit u, brute force."""
    n_seq, seq_len, _ = acts.shape
    ends = ends_of(lengths, n_seq, seq_len)
    tokens = [s * seq_len + p for s in range(n_seq) for p in range(skip_first, ends[s])]
    keys = token_keys(torch.tensor(tokens, dtype=torch.long)).tolist() if tokens else []
    out = []
    for t, k in zip(tokens, keys, strict=True):
        v = acts[t // seq_len, t % seq_len, u].item()
        if v > 0:
            out.append((v, t, k))
    return out


@settings(max_examples=250, deadline=None)
@given(streams(), st.integers(0, 2), st.integers(1, 5), st.sampled_from(["compiled", "torch"]))
def test_counts_and_samples_equal_brute_force(stream, skip_first, per_interval, backend):
    acts, bounds, lengths = stream
    n_seq, seq_len, n_units = acts.shape
    ends = ends_of(lengths, n_seq, seq_len)
    state = run(acts, bounds, skip_first, backend=backend, lengths=lengths)
    found = [entries(acts, skip_first, u, lengths) for u in range(n_units)]
    max_act = torch.tensor([max((v for v, _, _ in e), default=0.0) for e in found])
    iv = choose_intervals(state, max_act, n=10, per_interval=per_interval)
    for u, unit_entries in enumerate(found):
        n_tokens = sum(max(end - skip_first, 0) for end in ends)
        assert state.n_tokens == n_tokens
        assert state.density[u].item() == pytest.approx(len(unit_entries) / max(n_tokens, 1))
        if not unit_entries:
            assert state.ceiling[u] == 0 and iv.counts[u].sum() == 0
            assert (iv.tokens[u] == -1).all()
            continue
        mx = max_act[u].item()
        ceiling = state.ceiling[u].item()
        # The ceiling is the smallest power of two at or above the max.
        assert ceiling >= mx and ceiling / 2 < mx and math.log2(ceiling).is_integer()
        # Counts on the fine grid are exact: v * COUNT_BINS / ceiling is a power-of-two
        # scale, exact in float32 and float64 alike.
        expect = [0] * COUNT_BINS
        for v, _, _ in unit_entries:
            expect[math.ceil(v * COUNT_BINS / ceiling) - 1] += 1
        assert state.counts[u].tolist() == expect
        edges = iv.edges[u].tolist()
        assert edges[0] == 0 and edges[-1] == mx
        step = ceiling / COUNT_BINS
        for k in range(10):
            lo, hi = edges[k], edges[k + 1]
            # Equal widths up to one grid step at each edge.
            assert abs((hi - lo) - mx / 10) <= 2 * step + 1e-9
            inside = sorted((key, t, v) for v, t, key in unit_entries if lo < v <= hi)
            assert iv.counts[u, k].item() == len(inside)
            got_tokens = [t for t in iv.tokens[u, k].tolist() if t >= 0]
            j = len(got_tokens)
            # The samples are the interval's first j tokens in key order, j <= per_interval.
            assert got_tokens == [t for _, t, _ in inside[:j]]
            assert iv.values[u, k, :j].tolist() == [v for _, _, v in inside[:j]]
            assert (iv.keys[u, k, j:] == EMPTY).all() and (iv.tokens[u, k, j:] == -1).all()
            if (state.keys[u, :, -1] == EMPTY).all():  # no sample bin is full: all kept
                assert j == min(len(inside), per_interval)
            for slot, t in enumerate(got_tokens):
                s, p = divmod(t, seq_len)
                window = iv.windows[u, k, slot].tolist()
                for w, at in zip(window, range(p - 2, p + 2), strict=True):
                    if 0 <= at < ends[s]:  # NaN on padding, as past the sequence's end
                        assert w == torch.tensor(acts[s, at, u].item()).half().float().item()
                    else:
                        assert math.isnan(w)


@settings(max_examples=150, deadline=None)
@given(streams(), st.integers(0, 2), st.sampled_from([None, "save", "reload"]))
def test_compiled_and_tensor_code_keep_the_same_state(stream, skip_first, checkpoint):
    """Checkpoints between batches too: the kernel's bars (``sample_bins.refresh_bars``) must
    follow slots that a ``state_dict`` or a reload moved."""
    acts, bounds, lengths = stream
    a = run(acts, bounds, skip_first, backend="compiled", checkpoint=checkpoint, lengths=lengths)
    b = run(acts, [0, acts.shape[0]], skip_first, backend="torch", lengths=lengths)
    assert_same_state(a, b)


@pytest.mark.parametrize("checkpoint", ["save", "reload"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_checkpoints_between_batches_change_nothing(checkpoint, seed):
    """Long enough (few distinct values) that sample bins fill and then take smaller keys
    after a checkpoint moved their slots."""
    gen = torch.Generator().manual_seed(seed)
    acts = torch.randint(-3, 9, (40, 9, 3), generator=gen).float()
    bounds = list(range(0, 41, 4))
    a = run(acts, bounds, 1, checkpoint=checkpoint)
    b = run(acts, [0, 40], 1, backend="torch")
    assert_same_state(a, b)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("shift", [0.0, -1.5], ids=["dense", "sparse"])
@pytest.mark.parametrize("padded", [False, True])
def test_a_long_stream_keeps_the_tensor_codes_state(seed, shift, padded):
    """Long enough that most sample bins fill and the compiled kernel stops testing most
    values against them (``sample_bins.LEVELS``): that shortcut must change nothing. Half
    the values positive (the kernel counts every value) or about 1 in 15 (it lists the
    positive ones first). Padded: a third of the sequences short, as from short
    documents (the kernel judges density on each sequence's last real row)."""
    gen = torch.Generator().manual_seed(seed)
    acts = torch.randn(512, 64, 3, generator=gen) * torch.tensor([1.0, 0.1, 30.0])
    acts[..., 2] = (acts[..., 2] / 3).exp() - 1  # a long tail (finite: up to ~1e19)
    acts += shift * torch.tensor([1.0, 0.1, 30.0])
    lengths = None
    if padded:
        short = torch.rand(512, generator=gen) < 1 / 3
        lengths = torch.where(short, torch.randint(1, 64, (512,), generator=gen), 64)
        acts = pad(acts, lengths, 1e30)
    bounds = list(range(0, 513, 32))
    a = run(acts, bounds, 1, backend="compiled", lengths=lengths)
    b = run(acts, bounds, 1, backend="torch", lengths=lengths)
    assert_same_state(a, b)
    if padded:
        assert a.ceiling.max() < 1e25, "padding raised a ceiling"


@pytest.mark.parametrize("backend", ["compiled", "torch"])
def test_a_positive_value_far_below_the_ceiling_still_counts(backend):
    """1e-30 against a ceiling of 2^127: its scaled value underflows to 0 in float32, yet it
    is positive, so it counts (bin 1) and may be sampled; the ceiling arrives after it."""
    acts = torch.tensor([0.0, 1e-30, 0.5, -1.0, 2.0**127, 2e-30]).reshape(3, 2, 1)
    state = run(acts, [0, 2, 3], skip_first=0, backend=backend)
    assert state.counts[0, 0].item() == 3  # 1e-30, 0.5, 2e-30: all below 2^127 / 512
    assert state.counts[0, -1].item() == 1  # 2^127 itself
    assert state.counts.sum().item() == 4
    kept = sorted(state.tokens[0, 0][state.tokens[0, 0] >= 0].tolist())
    assert kept == [1, 2, 5]


def assert_same_intervals(a, b):
    # Bit for bit: both backends do the same float64 element-wise operations in the same
    # order (no sums), then select and copy.
    for name in ("edges", "counts", "tokens", "values", "windows", "keys"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and x.shape == y.shape, name
        assert torch.equal(x.nan_to_num(-7.0), y.nan_to_num(-7.0)), name


@settings(max_examples=300, deadline=None)
@given(
    streams(), st.integers(0, 2), st.integers(1, 5), st.integers(1, 5), st.integers(1, 12),
    st.booleans(),
)  # fmt: skip
def test_compiled_choice_equals_the_tensor_code(
    stream, skip_first, per_bin, per_interval, n, off_max
):
    """The compiled interval choice against its specification, with maxes that are the
    stream's, or a bit off (a max below some values, above the ceiling, or zero). Few
    slots a bin fill bins, so that bounds θ bind."""
    acts, bounds, lengths = stream
    per_interval = min(per_interval, per_bin)
    state = run(acts, bounds, skip_first, per_bin=per_bin, lengths=lengths)
    ends = ends_of(lengths, acts.shape[0], acts.shape[1])
    mask = torch.arange(acts.shape[1]).view(1, -1) < torch.as_tensor(ends).view(-1, 1)
    mask[:, :skip_first] = False
    max_act = acts.masked_fill(~mask.unsqueeze(2), -torch.inf).amax((0, 1)).clamp(min=0)
    if off_max:
        max_act = max_act * torch.tensor([0.7, 1.0, 3.0, 0.0])[: max_act.shape[0]]
    a = choose_intervals(state, max_act, n=n, per_interval=per_interval, backend="compiled")
    b = choose_intervals(state, max_act, n=n, per_interval=per_interval, backend="torch")
    assert_same_intervals(a, b)


@pytest.mark.parametrize("seed", [0, 1])
def test_compiled_choice_equals_the_tensor_code_on_full_bins(seed):
    """A long stream, most sample bins full: intervals cut through bins whose part in them
    is not all known, so the bounds θ bind."""
    gen = torch.Generator().manual_seed(seed)
    acts = torch.randn(512, 64, 3, generator=gen) * torch.tensor([1.0, 0.1, 30.0])
    acts[..., 2] = (acts[..., 2] / 3).exp() - 1
    state = run(acts, list(range(0, 513, 64)), 1)
    assert (state.keys[:, :, -1] != EMPTY).float().mean() > 0.3
    max_act = acts[:, 1:].amax((0, 1))
    no_windows = dataclasses.replace(state, windows=state.windows[..., :0])  # as for latents
    for per_interval, st_ in ((1, state), (5, state), (5, no_windows)):
        a = choose_intervals(st_, max_act, per_interval=per_interval, backend="compiled")
        b = choose_intervals(st_, max_act, per_interval=per_interval, backend="torch")
        assert_same_intervals(a, b)
        sampled = (a.tokens >= 0).any(2)[a.counts > 0]
        assert sampled.float().mean() > 0.9


def test_intervals_of_a_smooth_distribution_get_their_five():
    """All but a rare sample (an interval that shares a sample bin with its neighbour may
    find the bin's slots spent on the other side: about 1% of samples) are there."""
    gen = torch.Generator().manual_seed(0)
    acts = torch.rand(64, 64, 3, generator=gen) * torch.tensor([1.0, 10.0, 1e-3])
    state = run(acts, list(range(0, 65, 8)), skip_first=1)
    iv = choose_intervals(state, acts[:, 1:].amax((0, 1)))
    found = iv.tokens >= 0
    assert found.double().mean().item() >= 0.98
    assert (found.sum(2) >= 4).all()  # at most one short in any interval
    assert (iv.values[found] > iv.edges[:, :-1, None].expand_as(found)[found]).all()
    assert (iv.values[found] <= iv.edges[:, 1:, None].expand_as(found)[found]).all()
    assert iv.counts.sum().item() == 64 * 63 * 3


def test_samples_reach_the_rare_top_of_a_long_tail():
    """Most mass near 0, a handful of large values: the top intervals still get samples,
    drawn from the whole stream rather than from the top examples."""
    gen = torch.Generator().manual_seed(1)
    acts = torch.rand(200, 32, 1, generator=gen) ** 8
    acts[5, 3, 0], acts[150, 7, 0], acts[199, 30, 0] = 2.0, 1.5, 1.9
    state = run(acts, list(range(0, 201, 16)) + [200], skip_first=0)
    iv = choose_intervals(state, torch.tensor([2.0]))
    assert iv.counts[0, 9].item() == 2  # (1.8, 2.0]: 1.9 and 2.0 and nothing else
    assert sorted(iv.tokens[0, 9][iv.tokens[0, 9] >= 0].tolist()) == [5 * 32 + 3, 199 * 32 + 30]
    assert iv.counts[0, 0].item() > 5000 and (iv.tokens[0, 0] >= 0).all()


def test_ceiling_exponent_is_exact_at_powers_of_two():
    x = torch.tensor([1.0, 2.0, 3.0, 0.5, 0.75, 1e-20, 2.0**100])
    assert ceiling_exponent(x).tolist() == [0, 1, 2, -1, 0, -66, 100]


def test_token_keys_are_stable_and_spread():
    keys = token_keys(torch.arange(100_000))
    assert keys.unique().numel() == 100_000
    assert token_keys(torch.tensor([7, 7])).tolist()[0] == token_keys(torch.tensor([7])).item()
    # Roughly uniform on [0, 2^63): each decile of the range holds about a tenth.
    deciles = torch.bincount((keys.double() / 2.0**63 * 10).long(), minlength=10)
    assert (deciles - 10_000).abs().max() < 500


@pytest.mark.parametrize("reload", [False, True])
def test_counts_move_to_int64_before_int32_could_overflow(reload):
    """The compiled state counts in int32 and adds them into int64 totals once a run
    nears 2^31 tokens (simulated): the counts stay those of a run that never did, through
    a checkpoint's save and load, and ceilings that grow after the move."""
    gen = torch.Generator().manual_seed(11)
    batches = [torch.randn(3, 7, 5, generator=gen) * 2.0**i for i in range(6)]
    plain = StreamingIntervals(5, per_bin=2, backend="compiled")
    moved = StreamingIntervals(5, per_bin=2, backend="compiled")
    for i, acts in enumerate(batches):
        plain.update(acts, 3 * i)
        if i == 2:
            moved._fresh_tokens = (1 << 31) - 1  # as if 2^31 tokens had been counted
        moved.update(acts, 3 * i)
        if reload and i == 3:
            state = moved.state_dict()
            state = {k: v.clone() if torch.is_tensor(v) else v for k, v in state.items()}
            moved = StreamingIntervals(5, per_bin=2, backend="compiled")
            moved.load_state_dict(state)
    assert plain.state_dict()["counts"].dtype == torch.int32
    assert moved.state_dict()["counts"].dtype == torch.int64
    assert_same_state(plain.state(), moved.state())


def test_a_key_names_its_token():
    """Sample slots keep keys only: ``key_tokens`` inverts ``token_keys`` exactly, and the
    keys stay uniform (1 in 64 below 2^57, as the kernels' key levels assume)."""
    from indexer.batches import key_tokens

    gen = torch.Generator().manual_seed(4)
    tokens = torch.cat(
        [torch.arange(200_000), torch.randint(0, 1 << 45, (200_000,), generator=gen)]
    )
    keys = token_keys(tokens)
    assert torch.equal(key_tokens(keys), tokens)
    assert ((keys >= 0) & (keys < EMPTY)).all() and keys.unique().numel() == keys.numel()
    assert abs((keys < (1 << 57)).double().mean().item() - 1 / 64) < 0.002
    assert key_tokens(torch.tensor([EMPTY])).item() == -1
