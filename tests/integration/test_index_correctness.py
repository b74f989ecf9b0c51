"""The tiny index against an independent recompute: the stored numbers are the model's.

Reference activations come from a HookedTransformer built here from the saved folder's
config.json and state_dict.pt (not through spyglass.model), and the reference top-k from
sorting every eligible activation of the corpus.
"""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from index_checks import (
    CONFIG_KEYS,
    StoredIndex,
    check_source,
    fresh_hooked,
    fresh_mlp_acts,
    read_index,
)
from sqlalchemy import func, select
from transformers import AutoTokenizer

import cli
from indexer.corpus import CorpusError
from indexer.pipeline import build_index
from spyglass import storage

ATOL = 1e-5
# Batched and unbatched float32 runs agree to ~1e-7 on this model; a token closer to 0
# than this may count as positive or not.
ZERO_TOL = 1e-6


@pytest.fixture(scope="module")
def hooked(tiny_model_dir: Path):
    return fresh_hooked(tiny_model_dir)


@pytest.fixture(scope="module")
def stored(tiny_index) -> StoredIndex:
    return read_index(tiny_index.db, tiny_index.slug)


@pytest.fixture(scope="module")
def fresh_acts(hooked, stored: StoredIndex) -> dict[int, torch.Tensor]:
    """{layer: [S, T, d_mlp]} over every stored sequence."""
    return fresh_mlp_acts(hooked, stored.token_lists(), [0, 1])


def table_count(db: str, table, model_id: int | None = None) -> int:
    """Rows of ``table`` (of one model, when given), straight from SQL."""
    engine = storage.make_engine(db)
    try:
        q = select(func.count()).select_from(table)
        if model_id is not None:
            if "model_id" in table.c:
                q = q.where(table.c.model_id == model_id)
            else:
                ids = select(storage.sources.c.id).where(storage.sources.c.model_id == model_id)
                q = q.where(table.c.source_id.in_(ids))
        with engine.connect() as conn:
            return conn.execute(q).scalar_one()
    finally:
        engine.dispose()


# ---- the index exists and has the expected shape ------------------------------------------


def test_index_is_not_empty(tiny_index, stored: StoredIndex):
    cfg = tiny_index.config
    assert stored.model.slug == "tiny"
    assert stored.model.spec == cfg.model
    assert stored.model.n_layers == 2
    assert stored.model.seq_len == cfg.seq_len
    assert stored.model.top_k == cfg.top_k
    assert stored.model.skip_first == 1
    assert stored.model.n_sequences > 10
    assert stored.model.n_sequences == tiny_index.report.n_sequences
    assert [(s.name, s.layer, s.n_units) for s in stored.sources] == [
        ("0-mlp", 0, 64),
        ("1-mlp", 1, 64),
    ]
    for layer in (0, 1):
        assert [u.idx for u in stored.units[layer]] == list(range(64))
        with_examples = sum(bool(ex) for ex in stored.examples[layer])
        assert with_examples >= 0.9 * 64, f"layer {layer}: only {with_examples} units fire"
        assert all(len(ex) <= cfg.top_k for ex in stored.examples[layer])


def test_saved_config_round_trips(tiny_model_dir: Path, hooked):
    from spyglass.model import load_model

    model = load_model(str(tiny_model_dir), device="cpu")
    for key in CONFIG_KEYS:
        assert getattr(model._tl.cfg, key) == getattr(hooked.cfg, key), key
    assert model._tl.cfg.default_prepend_bos


# ---- stored sequences are the corpus -------------------------------------------------------


def test_sequences_are_the_corpus(tiny_index, stored: StoredIndex):
    """Every document, whole: consecutive chunks of at most seq_len - 1 tokens after BOS,
    the last one (or a short document's only one) holding what remains, never padding."""
    tok = AutoTokenizer.from_pretrained(tiny_index.model_dir / "tokenizer")
    bos = tok.convert_tokens_to_ids("<bos>")
    body = tiny_index.config.seq_len - 1  # BOS takes the first slot
    by_doc: dict[str, list[int]] = {}
    for seq in stored.sequences:
        assert 2 <= len(seq.tokens) <= tiny_index.config.seq_len
        assert seq.tokens[0] == bos
        text = (tiny_index.corpus_dir / seq.document).read_text(encoding="utf-8")
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert seq.tokens[1:] == ids[seq.offset : seq.offset + body], seq.document
        by_doc.setdefault(seq.document, []).append(seq.offset)

    files = {
        p.relative_to(tiny_index.corpus_dir).as_posix()
        for p in tiny_index.corpus_dir.rglob("*.txt")
    }
    assert set(by_doc) == files, "every file is indexed"
    n_tokens = 0
    for doc, offsets in by_doc.items():
        text = (tiny_index.corpus_dir / doc).read_text(encoding="utf-8")
        n_ids = len(tok(text, add_special_tokens=False)["input_ids"])
        assert offsets == list(range(0, n_ids, body)), doc
        n_tokens += n_ids + len(offsets)  # each sequence's BOS
    report = tiny_index.report
    assert report.n_documents == len(files) and report.skipped == {}
    assert stored.model.n_tokens == report.n_tokens == n_tokens
    assert stored.model.n_sequences == report.n_sequences == len(stored.sequences)


def test_markup_reaches_stored_sequences(tiny_index, stored: StoredIndex):
    """The literal markup of html.txt is in the index, for the app's escaping tests."""
    tok = AutoTokenizer.from_pretrained(tiny_index.model_dir / "tokenizer")
    texts = [tok.decode(s.tokens[1:]) for s in stored.sequences if s.document == "html.txt"]
    assert any("<script>" in t for t in texts)
    assert any("&amp;" in t for t in texts)


def test_short_document_is_one_sequence(tiny_index, stored: StoredIndex):
    tok = AutoTokenizer.from_pretrained(tiny_index.model_dir / "tokenizer")
    text = (tiny_index.corpus_dir / "short.txt").read_text(encoding="utf-8")
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert len(ids) < tiny_index.config.seq_len - 1
    [seq] = [s for s in stored.sequences if s.document == "short.txt"]
    assert seq.offset == 0 and seq.tokens[1:] == ids


# ---- stored activations are the model's ---------------------------------------------------


def test_random_neuron_windows_match_a_fresh_run(tiny_index, stored: StoredIndex, hooked):
    """Each example window against run_with_cache on that sequence alone (batch of one)."""
    cfg = tiny_index.config
    rng = random.Random(42)
    picks = [(rng.randrange(2), rng.randrange(64)) for _ in range(8)]
    checked = 0
    for layer, unit in picks:
        for ex in stored.examples[layer][unit]:
            tokens = torch.tensor([stored.sequences[ex.sequence_id].tokens])
            _, cache = hooked.run_with_cache(tokens)
            acts = cache[f"blocks.{layer}.mlp.hook_post"][0, :, unit]
            window = acts[ex.window_start : ex.window_start + len(ex.acts)]
            torch.testing.assert_close(torch.tensor(ex.acts), window, atol=ATOL, rtol=0)
            assert abs(ex.value - acts[ex.position].item()) <= ATOL
            assert ex.window_start <= ex.position < ex.window_start + len(ex.acts)
            assert ex.position - ex.window_start <= cfg.window_before
            checked += 1
    assert checked >= 20, "too few examples among the sampled neurons to mean anything"


@pytest.mark.parametrize("layer", [0, 1])
def test_topk_density_and_max_equal_brute_force(
    tiny_index, stored: StoredIndex, fresh_acts, layer: int
):
    cfg = tiny_index.config
    check_source(
        stored, layer, fresh_acts[layer], before=cfg.window_before, after=cfg.window_after,
        skip_first=1, atol=ATOL, zero_tol=ZERO_TOL,
    )  # fmt: skip


SINK_UNIT = 7
"""Layer-0 neuron of the sink model that fires at the BOS token and nowhere else."""
LOUD_UNIT = 8
"""Layer-0 neuron of the sink model that fires hardest at BOS and as before elsewhere."""


def sink_state(state: dict[str, torch.Tensor], bos: int) -> dict[str, torch.Tensor]:
    """The tiny weights edited so layer-0 neurons SINK_UNIT and LOUD_UNIT see BOS (position 0).

    Everything that writes to the residual stream before block 0's MLP is projected off a
    zero-mean direction ``v``, except BOS's embedding, which points along ``v``; the
    neuron reads ``v`` only. LayerNorm (weight 1, bias 0 at init; centring keeps a
    zero-mean direction) preserves the orthogonality, so elsewhere its input is ~0 and a
    bias of -1 keeps it clearly negative (gelu(-1) = -0.16), not at float noise around 0.
    LOUD_UNIT keeps its weights plus a read of ``v``, which only BOS writes.
    """
    state = {k: v.clone() for k, v in state.items()}
    v = torch.randn(state["embed.W_E"].shape[1], generator=torch.Generator().manual_seed(0))
    v -= v.mean()
    v /= v.norm()
    off_v = torch.eye(len(v)) - torch.outer(v, v)
    for key in ("embed.W_E", "pos_embed.W_pos", "blocks.0.attn.W_O", "blocks.0.attn.b_O"):
        state[key] = state[key] @ off_v
    state["embed.W_E"][bos] = 10 * v
    state["blocks.0.ln2.w"].fill_(1.0)
    state["blocks.0.ln2.b"].zero_()
    state["blocks.0.mlp.W_in"][:, SINK_UNIT] = 4 * v
    state["blocks.0.mlp.b_in"][SINK_UNIT] = -1.0
    state["blocks.0.mlp.W_in"][:, LOUD_UNIT] += 4 * v
    return state


@pytest.fixture(scope="module")
def sink_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with the BOS-only neuron, saved the way spyglass saves models."""
    from spyglass.model import load_model, save_model

    model = load_model(str(tiny_model_dir), device="cpu")
    model._tl.load_state_dict(sink_state(model._tl.state_dict(), model.bos_id))
    folder = tmp_path_factory.mktemp("sink-model") / "model"
    save_model(model._tl, folder)
    return folder


@pytest.mark.parametrize("include_first_token", [False, True])
def test_first_token_in_or_out(
    tiny_index, sink_model_dir: Path, tmp_path: Path, include_first_token
):
    """Position 0 enters top-k and density exactly when include_first_token is set."""
    cfg = replace(
        tiny_index.config,
        model=str(sink_model_dir),
        db=str(tmp_path / "sink.db"),
        name="sink",
        include_first_token=include_first_token,
        # Every sequence of a batch puts its BOS in LOUD_UNIT's batch top: with more
        # sequences than top_k, a top-k that drops position 0 after selecting would
        # find nothing eligible in any batch.
        batch_size=16,
    )
    build_index(cfg)
    stored = read_index(cfg.db, "sink")
    skip = 0 if include_first_token else 1
    assert stored.model.skip_first == skip
    acts = fresh_mlp_acts(fresh_hooked(sink_model_dir), stored.token_lists(), [0, 1])
    sink = acts[0][:, :, SINK_UNIT]
    real = ~sink.isnan()
    real[:, 0] = False  # every position but BOS
    # The edit did what it says: positive at BOS, negative everywhere else.
    assert (sink[:, 0] > 1).all()
    torch.testing.assert_close(sink[real], torch.full_like(sink[real], -0.1587), atol=1e-3, rtol=0)
    loud = acts[0][:, :, LOUD_UNIT]
    assert loud[:, 0].min() > loud[real].max() > 0

    for layer in (0, 1):
        check_source(
            stored, layer, acts[layer], before=cfg.window_before, after=cfg.window_after,
            skip_first=skip, atol=ATOL, zero_tol=ZERO_TOL,
        )  # fmt: skip

    unit = stored.units[0][SINK_UNIT]
    examples = stored.examples[0][SINK_UNIT]
    if include_first_token:
        assert [e.position for e in examples] == [0] * cfg.top_k
        assert unit.max_act == pytest.approx(sink[0, 0].item(), abs=ATOL)
        # Fires at every BOS: one token per sequence, of all the real tokens.
        n_tokens = sum(len(s.tokens) for s in stored.sequences)
        assert unit.density == pytest.approx(len(stored.sequences) / n_tokens, abs=1e-6)
        assert [e.position for e in stored.examples[0][LOUD_UNIT]] == [0] * cfg.top_k
    else:
        assert examples == [], "position 0 leaked into top-k"
        assert unit.max_act == pytest.approx(-0.1587, abs=1e-3)
        assert unit.density == 0
        loud = stored.examples[0][LOUD_UNIT]
        assert len(loud) == cfg.top_k and all(e.position > 0 for e in loud)


# ---- re-indexing -----------------------------------------------------------------------------


def test_reindex_replaces_and_names_coexist(tiny_index, tmp_path: Path):
    db = tmp_path / "re.db"
    full = replace(tiny_index.config, db=str(db))
    tables = (storage.sequences, storage.vocab, storage.sources, storage.units, storage.examples)

    build_index(full)
    once = {t.name: table_count(str(db), t) for t in tables}
    build_index(full)
    assert {t.name: table_count(str(db), t) for t in tables} == once, "counts doubled"
    assert table_count(str(db), storage.models) == 1

    # A smaller run under the same name leaves nothing of the bigger one behind.
    build_index(replace(full, tokens=5 * 16))
    assert table_count(str(db), storage.sequences) == 5
    assert read_index(str(db), "tiny").model.n_sequences == 5

    build_index(replace(full, name="other", layers=(1,)))
    engine = storage.make_engine(str(db))
    with engine.connect() as conn:
        slugs = [m.slug for m in storage.list_models(conn)]
        other = storage.get_model(conn, "other")
        tiny = storage.get_model(conn, "tiny")
        assert [s.name for s in storage.list_sources(conn, other.id)] == ["1-mlp"]
        assert [s.name for s in storage.list_sources(conn, tiny.id)] == ["0-mlp", "1-mlp"]
    engine.dispose()
    assert slugs == ["other", "tiny"]
    assert tiny.n_sequences == 5
    assert table_count(str(db), storage.sequences, tiny.id) == 5
    assert table_count(str(db), storage.sequences, other.id) == other.n_sequences > 5
    assert table_count(str(db), storage.units, tiny.id) == 128
    assert table_count(str(db), storage.units, other.id) == 64


# ---- CLI errors ------------------------------------------------------------------------------


def _cli_cases():
    """(label, extra argv, text the one-line message must contain)."""
    return [
        ("unknown model", ["--model", "no-such-model-xyz"], "unknown model 'no-such-model-xyz'"),
        ("missing corpus", ["--corpus", "/no/such/corpus-dir"], "unknown corpus spec"),
        ("layer out of range", ["--layers", "7"], "layers must be in 0..1"),
        ("layers not ints", ["--layers", "1,x"], "--layers must be comma-separated"),
        ("tokens below a sequence", ["--tokens", "3"], "--tokens must be at least one sequence"),
        ("bad name", ["--name", "a/b"], "invalid model name 'a/b'"),
        ("reserved name", ["--name", "api"], "invalid model name 'api'"),
        ("seq_len over context", ["--seq-len", "33"], "exceeds the model's context of 32"),
    ]


@pytest.mark.parametrize(
    ("label", "extra", "needle"), _cli_cases(), ids=[c[0] for c in _cli_cases()]
)
def test_cli_errors_are_one_line(
    label, extra, needle, tiny_model_dir: Path, tiny_corpus_dir: Path, tmp_path: Path, capsys
):
    base = {
        "--model": str(tiny_model_dir),
        "--corpus": str(tiny_corpus_dir),
        "--db": str(tmp_path / "cli.db"),
        "--seq-len": "16",
    }
    args = base | dict(zip(extra[::2], extra[1::2], strict=True))
    argv = ["index", *[x for kv in args.items() for x in kv]]

    rc = cli.main(argv)

    err = capsys.readouterr().err
    assert rc == 2, label
    assert "Traceback" not in err
    assert err.endswith("\n") and err.count("\n") == 1, f"not one line: {err!r}"
    assert err.startswith("spyglass: error: ")
    assert needle in err, err


def test_a_failed_run_creates_no_database(tmp_path, tiny_index):
    db = tmp_path / "never.db"
    with pytest.raises(CorpusError):
        build_index(replace(tiny_index.config, corpus=str(tmp_path / "missing"), db=str(db)))
    assert not db.exists()
