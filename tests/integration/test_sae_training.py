"""TopK SAE training on the tiny model: it learns, resumes exactly, and folds its scale."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from indexer.corpus import iter_sequences
from indexer.sae_training import ActivationStream, TopKSae, TrainConfig, fold_scale, train_sae
from spyglass.model import load_model

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
