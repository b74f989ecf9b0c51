"""Correctness checks of a stored index against an independent TransformerLens recompute.

Shared by the tiny-model integration tests and the embedded-model slow tests. Importable
as ``index_checks`` because pytest puts ``tests/`` (the conftest's folder, no __init__.py)
on sys.path.

Nothing here calls the indexer or ``spyglass.model.Model``: the reference activations come
from ``HookedTransformer.run_with_cache`` and the reference top-k from a plain sort.
The unit tests share ``assert_same_state`` and the padding helpers from here too.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from hypothesis import strategies as st

from spyglass import storage


def assert_same_state(a, b) -> None:
    """Two ``indexer.intervals.IntervalState``s equal field by field (windows with NaN as
    NaN)."""
    for name in ("ceiling", "counts", "keys", "tokens", "values"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert torch.equal(a.windows.nan_to_num(-9), b.windows.nan_to_num(-9))


def assert_top(ids: Sequence[int], reference: torch.Tensor, *, atol: float) -> None:
    """``ids`` are the indices of ``reference``'s ``len(ids)`` largest values, largest
    first, up to float rounding: entries whose reference values lie within ``atol`` of each
    other may come in either order. (Two computations of the same values, the app's and a
    test's, need not round alike, so comparing their rankings exactly would hang on
    near-ties.) For the smallest, pass ``-reference``."""
    assert len(set(ids)) == len(ids), ids
    ref = reference.detach().double().cpu()
    got = ref[torch.tensor(list(ids), dtype=torch.long)]
    torch.testing.assert_close(got, ref.topk(len(ids)).values, atol=atol, rtol=0)


# ---- padding: sequences shorter than their batch ----------------------------------------


POISON = 50.0
"""What padded positions hold in these tests: above every real value, so a statistic that
let padding in would show it (a top-k value, a window entry, a count, a moment)."""


def draw_lengths(draw, n_seq: int, seq_len: int) -> torch.Tensor | None:
    """Each sequence's real length (1..T, the last ones of documents being short), or
    None (every sequence full: the plain path) about a third of the time."""
    if draw(st.integers(0, 2)) == 0:
        return None
    return torch.tensor(
        draw(st.lists(st.integers(1, seq_len), min_size=n_seq, max_size=n_seq)),
        dtype=torch.long,
    )


def pad(acts: torch.Tensor, lengths: torch.Tensor | None, value: float = POISON):
    """``acts`` with every position at or after its sequence's length set to ``value``."""
    if lengths is None:
        return acts
    padded = torch.arange(acts.shape[1]).unsqueeze(0) >= lengths.unsqueeze(1)  # [S, T]
    return acts.masked_fill(padded.unsqueeze(-1), value)


def ends_of(lengths: torch.Tensor | None, n_seq: int, seq_len: int) -> list[int]:
    return [seq_len] * n_seq if lengths is None else lengths.tolist()


def part(lengths: torch.Tensor | None, lo: int, hi: int):
    return None if lengths is None else lengths[lo:hi]


@dataclass(frozen=True)
class StoredIndex:
    """Everything one model's index holds, read through the app's query functions."""

    model: storage.ModelRow
    sources: list[storage.SourceRow]
    sequences: list[storage.SequenceRow]
    """All sequences, by id 0..n-1."""
    units: dict[int, list[storage.UnitRow]]
    """layer -> units 0..U-1."""
    examples: dict[int, list[list[storage.ExampleRow]]]
    """layer -> unit -> examples by rank."""

    def token_lists(self) -> list[list[int]]:
        """Each sequence's real token ids (a document's last sequence may be short)."""
        return [s.tokens for s in self.sequences]


def read_index(db: str, slug: str) -> StoredIndex:
    engine = storage.make_engine(db)
    try:
        with engine.connect() as conn:
            model = storage.get_model(conn, slug)
            assert model is not None, f"no model {slug!r} in {db}"
            sources = storage.list_sources(conn, model.id)
            by_id = storage.get_sequences(conn, model.id, range(model.n_sequences))
            assert sorted(by_id) == list(range(model.n_sequences)), "sequence ids have gaps"
            units, examples = {}, {}
            for src in sources:
                units[src.layer] = [storage.get_unit(conn, src.id, u) for u in range(src.n_units)]
                examples[src.layer] = [
                    storage.get_examples(conn, src.id, u) for u in range(src.n_units)
                ]
    finally:
        engine.dispose()
    seqs = [by_id[i] for i in range(model.n_sequences)]
    return StoredIndex(model, sources, seqs, units, examples)


@torch.inference_mode()
def fresh_run(
    hooked, sequences: Sequence[Sequence[int]], hooks: Sequence[str], batch_size: int = 16
) -> dict[str, torch.Tensor]:
    """``{hook: activations}`` [S, T, d] from plain ``run_with_cache`` calls on each
    sequence as it is, never padded: sequences of one length run together, and positions
    past a sequence's length hold NaN (T: the longest sequence)."""
    width = max(len(ids) for ids in sequences)
    out: dict[str, torch.Tensor] = {}
    device = next(hooked.parameters()).device
    by_length: dict[int, list[int]] = {}
    for i, ids in enumerate(sequences):
        by_length.setdefault(len(ids), []).append(i)
    for n, rows in sorted(by_length.items()):
        for lo in range(0, len(rows), batch_size):
            chunk = rows[lo : lo + batch_size]
            tokens = torch.tensor([list(sequences[i]) for i in chunk], device=device)
            _, cache = hooked.run_with_cache(tokens, names_filter=lambda name: name in hooks)
            for hook in hooks:
                act = cache[hook].float().cpu()
                if hook not in out:
                    out[hook] = torch.full((len(sequences), width, act.shape[-1]), float("nan"))
                out[hook][chunk, :n] = act
    return out


def fresh_mlp_acts(
    hooked, sequences: Sequence[Sequence[int]], layers: Sequence[int], batch_size: int = 16
) -> dict[int, torch.Tensor]:
    """``{layer: blocks.L.mlp.hook_post}`` [S, T, U] from ``fresh_run`` (NaN past each
    sequence's end)."""
    names = {f"blocks.{layer}.mlp.hook_post": layer for layer in layers}
    acts = fresh_run(hooked, sequences, list(names), batch_size)
    return {layer: acts[name] for name, layer in names.items()}


def topk_encoder(weights: dict[str, torch.Tensor], k: int):
    """A TopK SAE's encode written out from its weights (``W_enc``, ``b_enc``, ``b_dec``):
    the ``k`` largest pre-activations, ReLU'd, the rest 0."""

    def encode(x: torch.Tensor) -> torch.Tensor:
        pre = (x - weights["b_dec"]) @ weights["W_enc"] + weights["b_enc"]
        top = pre.topk(k, dim=-1)
        return torch.zeros_like(pre).scatter(-1, top.indices, top.values.relu())

    return encode


@torch.inference_mode()
def sae_latents(acts: torch.Tensor, batch_size: int, encode) -> torch.Tensor:
    """Latents [S, T, units] of the fresh hook activations ``acts`` [S, T, d] (NaN past each
    sequence's end, as ``fresh_run`` gives them) under the indexer's stated rule: position
    0, and rows over 10x the median norm of their batch's real tokens, read 0; the index's
    batches are ``batch_size`` consecutive sequences. Padding stays NaN."""
    out = []
    for lo in range(0, len(acts), batch_size):
        x = acts[lo : lo + batch_size]
        real = ~x.isnan().any(-1)  # [b, T]
        f = encode(x.nan_to_num(0))
        norms = x.nan_to_num(0).norm(dim=-1)
        f[norms > 10 * norms[real].median()] = 0
        f[:, 0] = 0
        f[~real] = float("nan")
        out.append(f)
    return torch.cat(out)


def check_example_windows(
    examples: list[storage.ExampleRow],
    unit_acts: torch.Tensor,
    *,
    before: int,
    after: int,
    skip_first: int,
    atol: float,
) -> None:
    """Each example's value and window against ``unit_acts`` [S, T] of the same unit (NaN
    past each sequence's real tokens)."""
    assert [e.rank for e in examples] == list(range(len(examples)))
    for ex in examples:
        row = unit_acts[ex.sequence_id]
        seq_len = int((~row.isnan()).sum())  # this sequence's real tokens
        assert not row[:seq_len].isnan().any()
        assert skip_first <= ex.position < seq_len
        # Windows are the requested span trimmed to the sequence.
        assert ex.window_start == max(0, ex.position - before)
        assert ex.window_start + len(ex.acts) == min(seq_len, ex.position + after + 1)
        want = row[ex.window_start : ex.window_start + len(ex.acts)]
        torch.testing.assert_close(torch.tensor(ex.acts), want, atol=atol, rtol=0)
        assert abs(ex.value - row[ex.position].item()) <= atol
        assert ex.value > 0, "only positive activations are examples"


def check_layer_statistics(
    stored: StoredIndex,
    layer: int,
    acts: torch.Tensor,
    *,
    skip_first: int,
    atol: float,
    zero_tol: float,
) -> None:
    """Top-k values, max_act and density of every unit of ``layer`` against brute force.

    ``acts`` [S, T, U] is the fresh recompute, NaN past each sequence's real tokens (which
    no statistic may count). ``zero_tol`` absorbs activations so close to
    0 that batched and unbatched float32 runs may disagree on their sign: such a token may
    or may not count as positive (and as an example) without failing the check.
    """
    k = stored.model.top_k
    eligible = acts[:, skip_first:, :].reshape(-1, acts.shape[-1])  # [S * (T - skip), U]
    eligible = eligible[~eligible.isnan().any(1)]  # real tokens only
    n_eligible = eligible.shape[0]
    top = eligible.sort(dim=0, descending=True).values[:k]  # [k, U] brute-force top-k
    sure = (eligible > zero_tol).sum(0)
    maybe = (eligible > -zero_tol).sum(0)
    for u, (unit, examples) in enumerate(
        zip(stored.units[layer], stored.examples[layer], strict=True)
    ):
        brute = top[:, u]
        values = torch.tensor([e.value for e in examples])
        n_min = int((brute > zero_tol).sum())
        n_max = int((brute > -zero_tol).sum())
        assert n_min <= len(values) <= n_max, f"layer {layer} unit {u}: example count"
        torch.testing.assert_close(values, brute[: len(values)], atol=atol, rtol=0)
        assert abs(unit.max_act - brute[0].item()) <= atol, f"layer {layer} unit {u}: max_act"
        positive = unit.density * n_eligible
        assert sure[u] - 0.01 <= positive <= maybe[u] + 0.01, f"layer {layer} unit {u}: density"


def check_source(
    stored: StoredIndex,
    layer: int,
    acts: torch.Tensor,
    *,
    before: int,
    after: int,
    skip_first: int,
    atol: float,
    zero_tol: float,
) -> None:
    """``check_layer_statistics`` of the source at ``layer``, then ``check_example_windows``
    of every one of its units, against the fresh ``acts`` [S, T, U]."""
    check_layer_statistics(stored, layer, acts, skip_first=skip_first, atol=atol, zero_tol=zero_tol)
    for unit, examples in enumerate(stored.examples[layer]):
        check_example_windows(
            examples, acts[:, :, unit], before=before, after=after, skip_first=skip_first,
            atol=atol,
        )  # fmt: skip


CONFIG_KEYS = (
    "n_layers",
    "d_model",
    "d_head",
    "n_heads",
    "d_mlp",
    "n_ctx",
    "d_vocab",
    "act_fn",
    "normalization_type",
)


def fresh_hooked(model_dir: Path):
    """A HookedTransformer rebuilt from the saved files, bypassing spyglass.model."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from transformer_lens import HookedTransformer, HookedTransformerConfig

        raw = json.loads((model_dir / "config.json").read_text())
        cfg = HookedTransformerConfig(**{k: raw[k] for k in CONFIG_KEYS}, device="cpu")
        hooked = HookedTransformer(cfg)
    state = torch.load(model_dir / "state_dict.pt", map_location="cpu", weights_only=True)
    hooked.load_state_dict(state, strict=True)
    return hooked.eval()


def save_random_topk_sae(out: Path, *, hook: str, d_in: int, width: int, k: int, seed: int):
    """A random TopK SAE (unit decoder rows, W_enc their transpose) saved in ``out``;
    returns its tensors."""
    from spyglass.sae import Sae, SaeConfig, save_sae

    gen = torch.Generator().manual_seed(seed)
    w_dec = torch.nn.functional.normalize(torch.randn(width, d_in, generator=gen), dim=1)
    tensors = {
        "W_enc": w_dec.t().contiguous(),
        "W_dec": w_dec,
        "b_enc": 0.01 * torch.randn(width, generator=gen),
        "b_dec": torch.zeros(d_in),
    }
    cfg = SaeConfig(architecture="topk", d_in=d_in, d_sae=width, hook_name=hook, k=k)
    save_sae(Sae(cfg, tensors), out)
    return tensors


def copy_index(db: str, folder) -> str:
    """A copy of the SQLite index ``db`` in ``folder`` (SQLite's backup: the WAL included),
    for tests that write to it (explanations, labels) while others read the original."""
    import sqlite3
    from pathlib import Path

    out = Path(folder) / Path(db).name
    with sqlite3.connect(db) as src, sqlite3.connect(out) as dst:
        src.backup(dst)
    return str(out)


def check_latent_correlations(
    stored: StoredIndex, layer: int, latents: torch.Tensor, rate: float | None = None
) -> None:
    """Every latent's mean and its correlated neighbours (values and order) against Pearson
    by brute force over ``latents`` [S, T, U] (NaN marks padding): over every token past
    position 0 (a sparse source), or over the tokens whose key falls below ``rate`` (a
    dense one: the indexer's uniform sample, ``indexer.batches.token_keys``)."""
    import pytest

    from indexer.batches import token_keys

    n_seq, seq_len, n = latents.shape
    x = latents[:, 1:, :].reshape(-1, n).double()
    keep = ~x.isnan().any(1)  # real tokens only
    if rate is not None:
        tokens = torch.tensor([s * seq_len + p for s in range(n_seq) for p in range(1, seq_len)])
        keep &= token_keys(tokens).double() < 2.0**63 * rate
    x = x[keep]
    corr = torch.corrcoef(x.t())
    means = torch.tensor([stored.units[layer][u].stats.mean for u in range(n)], dtype=torch.float64)
    torch.testing.assert_close(means, x.mean(0), rtol=1e-5, atol=1e-7)
    for unit in range(n):
        stats = stored.units[layer][unit].stats
        assert stats.correlation_tokens == x.shape[0]
        row = corr[unit].clone()
        row[unit] = float("nan")
        expect = sorted((v for v in row.tolist() if v == v), reverse=True)[:10]
        assert [r for _, r in stats.correlated] == pytest.approx(expect, abs=1e-3)
        for j, r in stats.correlated:
            assert corr[unit, j].item() == pytest.approx(r, abs=1e-3)
