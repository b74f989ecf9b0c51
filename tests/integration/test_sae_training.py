"""TopK SAE training on the tiny model: it learns, resumes exactly, and folds its scale."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

import cli
from indexer.corpus import iter_sequences
from indexer.sae_training import (
    ActivationStream,
    TopKSae,
    TrainConfig,
    fold_scale,
    train_sae,
    write_trained_sae,
)
from spyglass.model import load_model
from spyglass.sae import load_sae

HOOK = "blocks.0.hook_resid_post"


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return load_model(str(tiny_model_dir), "cpu")


def config(tiny_corpus_dir, out, **overrides) -> TrainConfig:
    fields = dict(
        model="tiny",
        corpus=str(tiny_corpus_dir),
        hook=HOOK,
        out=str(out),
        d_sae=32,
        k=4,
        tokens=64 * 40,
        holdout_sequences=8,
        seq_len=16,
        model_batch=4,
        buffer_batches=2,
        batch_tokens=64,
        lr=3e-3,
        aux_k=8,
        dead_after_tokens=640,
        checkpoint_every=7,
        device="cpu",
    )
    return TrainConfig(**(fields | overrides))


def test_training_reduces_unexplained_variance(model, tiny_corpus_dir, tmp_path):
    short = train_sae(config(tiny_corpus_dir, tmp_path / "a", tokens=64 * 2), model, False)
    long = train_sae(config(tiny_corpus_dir, tmp_path / "b", tokens=64 * 60), model, False)
    assert long["train_fvu_last_batch"] < 0.5 * short["train_fvu_last_batch"]
    assert long["tokens"] == 64 * 60 and long["steps"] == 60


def test_an_interrupted_run_resumes_to_the_same_weights(model, tiny_corpus_dir, tmp_path):
    whole = train_sae(config(tiny_corpus_dir, tmp_path / "whole"), model, False)
    # Stop partway (not on a buffer boundary: 64 * 13 tokens), then run the full command again.
    cut = config(tiny_corpus_dir, tmp_path / "cut")
    train_sae(replace(cut, tokens=64 * 13), model, False)
    resumed = train_sae(cut, model, False)
    assert resumed["steps"] == whole["steps"]
    # Exact by construction: the checkpoint stores the weights, the optimiser, the generator
    # and the pending rows bit for bit, and the resumed run then does the same operations
    # on batches of the same shapes as the whole one.
    for name, tensor in whole["folded"].items():
        assert torch.equal(tensor, resumed["folded"][name]), name


def test_a_checkpoint_with_other_settings_is_refused(model, tiny_corpus_dir, tmp_path):
    cfg = config(tiny_corpus_dir, tmp_path / "x", tokens=64 * 3)
    train_sae(cfg, model, False)
    with pytest.raises(ValueError, match="different settings"):
        train_sae(replace(cfg, k=5), model, False)


def test_folded_weights_read_raw_activations():
    gen = torch.Generator().manual_seed(0)
    sae = TopKSae(8, 24, 3, gen)
    with torch.no_grad():
        sae.b_dec.normal_(generator=gen)
        sae.b_enc.normal_(generator=gen)
    x = torch.randn(50, 8, generator=gen) * 30
    scale = 0.037
    w = fold_scale(sae, scale)
    pre = (x - w["b_dec"]) @ w["W_enc"] + w["b_enc"]
    top = pre.topk(3, dim=-1)
    f = torch.zeros_like(pre).scatter(-1, top.indices, top.values.relu())
    with torch.no_grad():
        assert torch.allclose(f, sae.encode(x * scale), atol=1e-5)
        assert torch.allclose(f @ w["W_dec"] + w["b_dec"], sae.decode(f) / scale, atol=1e-5)


def test_the_hold_out_and_position_zero_are_never_trained_on(model, tiny_corpus_dir):
    cfg = config(tiny_corpus_dir, "unused", holdout_sequences=5)
    stream = ActivationStream(model, cfg, torch.Generator().manual_seed(0))
    first_batch = next(iter(stream))
    buffer = torch.cat([first_batch, stream.pending])  # the whole first shuffled buffer

    seqs = list(iter_sequences(cfg.corpus, model.tokenize, seq_len=16, bos_id=model.bos_id))
    n = cfg.model_batch * cfg.buffer_batches
    acts = model.activations(torch.tensor([s.tokens for s in seqs[5 : 5 + n]]), [HOOK])[HOOK]
    expect = acts[:, 1:].reshape(-1, acts.shape[-1])  # sequences 5.., positions 1..
    assert stream.sequences == n
    assert torch.allclose(sort_rows(buffer), sort_rows(expect), atol=1e-6)


def sort_rows(rows: torch.Tensor) -> torch.Tensor:
    order = sorted(range(rows.shape[0]), key=lambda i: rows[i].tolist())
    return rows[order]


def test_the_trained_sae_is_saved_in_saelens_format(model, tiny_corpus_dir, tmp_path):
    cfg = config(tiny_corpus_dir, tmp_path / "sae", tokens=64 * 5)
    metrics = train_sae(cfg, model, False)
    write_trained_sae(cfg, metrics, "spyglass train-sae ...")
    loaded = load_sae(tmp_path / "sae")
    assert (loaded.cfg.architecture, loaded.cfg.k, loaded.cfg.hook_name) == ("topk", 4, HOOK)
    record = json.loads((tmp_path / "sae" / "metrics.json").read_text())
    assert record["tokens"] == 64 * 5 and record["command"].startswith("spyglass train-sae")
    # The saved SAE reads raw activations: it equals the trained one on scaled inputs.
    x = model.activations(torch.tensor([[model.bos_id, 5, 6, 7, 8]]), [HOOK])[HOOK][0]
    trained = TopKSae(16, 32, 4, torch.Generator())
    trained.load_state_dict(
        torch.load(tmp_path / "sae" / "checkpoint" / "state.pt", weights_only=False)["sae"]
    )
    with torch.no_grad():
        expect = trained.encode(x * metrics["input_scale"])
    assert torch.allclose(loaded.encode(x), expect, atol=1e-5)
    sae_lens = pytest.importorskip("sae_lens")
    theirs = sae_lens.SAE.load_from_disk(str(tmp_path / "sae"))
    assert torch.allclose(theirs.encode(x), expect, atol=1e-5)


def test_the_train_sae_command_writes_a_loadable_sae(tiny_model_dir, tiny_corpus_dir, tmp_path):
    out = tmp_path / "cli-sae"
    args = ["train-sae", "--model", str(tiny_model_dir), "--corpus", str(tiny_corpus_dir)]
    args += ["--hook", HOOK, "--out", str(out), "--d-sae", "32", "--k", "4", "--tokens", "640"]
    args += ["--batch-tokens", "64", "--seq-len", "16", "--holdout-sequences", "8"]
    assert cli.main(args + ["--device", "cpu"]) == 0
    assert load_sae(out).cfg.d_sae == 32
    assert json.loads((out / "metrics.json").read_text())["steps"] == 10


@pytest.mark.parametrize(
    ("extra", "needle"),
    [(["--k", "40"], "exceeds --d-sae"), (["--hook", "blocks.9.hook_resid_post"], "no hook point")],
)
def test_train_sae_errors_are_one_line(
    tiny_model_dir, tiny_corpus_dir, tmp_path, capsys, extra, needle
):
    args = ["train-sae", "--model", str(tiny_model_dir), "--corpus", str(tiny_corpus_dir)]
    args += [
        "--out",
        str(tmp_path / "e"),
        "--d-sae",
        "32",
        "--tokens",
        "640",
        "--batch-tokens",
        "64",
    ]
    assert cli.main(args + ["--hook", HOOK, *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1


def test_high_norm_rows_are_left_out(model, tiny_corpus_dir):
    cfg = config(tiny_corpus_dir, "unused", max_norm_ratio=1.0, buffer_batches=1, batch_tokens=16)
    stream = ActivationStream(model, cfg, torch.Generator().manual_seed(0))
    first = next(iter(stream))
    kept = torch.cat([first, stream.pending])
    seqs = list(iter_sequences(cfg.corpus, model.tokenize, seq_len=16, bos_id=model.bos_id))
    tokens = torch.tensor([s.tokens for s in seqs[8 : 8 + cfg.model_batch]])
    rows = model.activations(tokens, [HOOK])[HOOK][:, 1:].reshape(-1, 16)
    norms = rows.norm(dim=-1)
    expect = rows[norms <= norms.median()]
    assert stream.outliers == rows.shape[0] - expect.shape[0] > 0
    assert torch.allclose(sort_rows(kept), sort_rows(expect), atol=1e-6)
