"""Transcoder training on the tiny model: every layer learns from one stream, the written
set encodes and decodes as a hand-written transcoder does on a fresh TransformerLens run,
a run resumes exactly, and the commands fail in one line."""

from __future__ import annotations

import itertools
import json
from dataclasses import replace

import pytest
import torch

import cli
from indexer.transcoder_training import TranscoderTrainConfig, TranscoderTrainer
from spyglass.model import load_model
from spyglass.transcoders import load_transcoders


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return load_model(str(tiny_model_dir), "cpu")


def config(tiny_corpus_dir, out, **overrides) -> TranscoderTrainConfig:
    fields = dict(
        model="tiny",
        corpus=str(tiny_corpus_dir),
        out=str(out),
        d_sae=32,
        k=4,
        tokens=60 * 40,
        holdout_sequences=8,
        seq_len=16,
        model_batch=4,
        buffer_batches=2,
        batch_tokens=60,
        lr=3e-3,
        aux_k=8,
        dead_after_tokens=600,
        checkpoint_every=3,
        device="cpu",
    )
    return TranscoderTrainConfig(**(fields | overrides))


def train(cfg, model) -> tuple[TranscoderTrainer, dict]:
    trainer = TranscoderTrainer(cfg, model)
    return trainer, trainer.run(progress=False)


def test_every_layer_learns_from_one_stream(model, tiny_corpus_dir, tmp_path):
    _, short = train(config(tiny_corpus_dir, tmp_path / "a", tokens=120), model)
    _, long = train(config(tiny_corpus_dir, tmp_path / "b", tokens=60 * 60), model)
    assert sorted(long["layers"]) == ["0", "1"]
    for layer in ("0", "1"):
        assert (
            long["layers"][layer]["train_fvu_last_batch"]
            < 0.6 * short["layers"][layer]["train_fvu_last_batch"]
        )
    assert long["tokens"] >= 60 * 60


def hand_encode_decode(x: torch.Tensor, t: dict, k: int):
    """A TopK transcoder written out: the k largest pre-activations keep their sign."""
    pre = x @ t["W_enc"] + t["b_enc"]
    top = pre.topk(k, dim=-1)
    f = torch.zeros_like(pre).scatter(-1, top.indices, top.values)
    y = f @ t["W_dec"] + t["b_dec"]
    if "W_skip" in t:
        y = y + x @ t["W_skip"].T
    return f, y


@pytest.mark.parametrize("layout", ["circuit-tracer", "saelens"])
@pytest.mark.parametrize("skip", [False, True])
def test_the_written_set_is_a_hand_written_transcoder(
    model, tiny_model_dir, tiny_corpus_dir, tmp_path, layout, skip
):
    out = tmp_path / "set"
    args = ["train-transcoders", "--model", str(tiny_model_dir), "--corpus", str(tiny_corpus_dir)]
    args += ["--out", str(out), "--d-sae", "32", "--k", "4", "--tokens", "600"]
    args += ["--batch-tokens", "60", "--seq-len", "16", "--holdout-sequences", "8"]
    args += ["--format", layout, "--device", "cpu"] + (["--skip"] if skip else [])
    assert cli.main(args) == 0
    record = json.loads((out / "metrics.json").read_text())
    assert record["layout"] == layout and record["tokens"] >= 600
    tcs = load_transcoders(out)
    assert tcs.layout == layout and tcs.layers == [0, 1]
    # A fresh TransformerLens run, read at the hooks the issue names.
    from transformer_lens import HookedTransformer

    from spyglass.model.loading import _load_folder

    hooked: HookedTransformer = _load_folder(tiny_model_dir, "cpu")
    _, cache = hooked.run_with_cache(torch.tensor([[model.bos_id, 5, 6, 7, 8, 9]]))
    for layer in (0, 1):
        tc = tcs[layer]
        assert (tc.cfg.hook_name, tc.cfg.hook_name_out) == (
            f"blocks.{layer}.ln2.hook_normalized",
            f"blocks.{layer}.hook_mlp_out",
        )
        assert (tc.W_skip is not None) == skip
        x = cache[f"blocks.{layer}.ln2.hook_normalized"][0]
        f, y = hand_encode_decode(x, tc.tensors, 4)
        assert torch.allclose(tc.encode(x), f, atol=1e-5)
        assert torch.allclose(tc.decode(tc.encode(x), x), y, atol=1e-5)


def test_the_written_weights_are_the_trained_ones_unscaled(model, tiny_corpus_dir, tmp_path):
    """The trainer works on scaled inputs and outputs; the folded weights read raw ones."""
    trainer, _ = train(config(tiny_corpus_dir, tmp_path / "s", tokens=300, skip=True), model)
    x = torch.randn(2, 7, 16)  # [layers, rows, d_in]
    net = trainer.net
    a = trainer.scale_in.view(-1, 1, 1)
    c = trainer.scale_out.view(-1, 1, 1)
    with torch.no_grad():
        pre = net.pre_acts(x * a)
        top = pre.topk(4, dim=-1)
        scaled_y = net.decode_sparse(top.indices, top.values) + net.linear(x * a)
    for i, t in enumerate(trainer.folded()):
        _, y = hand_encode_decode(x[i], t, 4)
        assert torch.allclose(y, scaled_y[i] / c[i], atol=1e-4)


def test_an_interrupted_run_resumes_to_the_same_weights(model, tiny_corpus_dir, tmp_path):
    whole, _ = train(config(tiny_corpus_dir, tmp_path / "whole"), model)
    cut = config(tiny_corpus_dir, tmp_path / "cut")
    killed = TranscoderTrainer(cut, model)
    buffers = itertools.count()
    real_buffer = killed._buffer

    def dies_at_the_seventh():  # as kill -9 would, mid-run, past a few checkpoints
        if next(buffers) == 6:
            raise KeyboardInterrupt
        return real_buffer()

    killed._buffer = dies_at_the_seventh
    with pytest.raises(KeyboardInterrupt):
        killed.run(progress=False)
    assert 0 < killed.state.step < whole.state.step
    resumed, metrics = train(cut, model)
    assert metrics["steps"] == whole.state.step
    # Exact by construction: the checkpoint holds the weights, the optimiser and the
    # generator, and nothing crosses a buffer boundary but those.
    for a, b in zip(whole.folded(), resumed.folded(), strict=True):
        for name in a:
            assert torch.equal(a[name], b[name]), name


def test_the_learning_rate_falls_to_zero_over_the_last_share(model, tiny_corpus_dir, tmp_path):
    cfg = config(tiny_corpus_dir, tmp_path / "lr", lr=1e-3, lr_decay=0.25, tokens=4000)
    trainer = TranscoderTrainer(cfg, model)
    assert [trainer.lr_at(t) for t in (0, 2999, 3000, 3500, 4000, 4100)] == pytest.approx(
        [1e-3, 1e-3, 1e-3, 5e-4, 0, 0]
    )
    assert TranscoderTrainer(replace(cfg, out=str(tmp_path / "flat"), lr_decay=0), model).lr_at(
        3999
    ) == pytest.approx(1e-3)
    trainer.run(progress=False)
    last = trainer.opt.param_groups[0]["lr"]
    assert last <= 1e-3 * 120 / 1000  # the last step's: within a buffer of the end


def test_a_checkpoint_with_other_settings_is_refused(model, tiny_corpus_dir, tmp_path):
    cfg = config(tiny_corpus_dir, tmp_path / "x", tokens=120)
    train(cfg, model)
    with pytest.raises(ValueError, match="different settings"):
        TranscoderTrainer(replace(cfg, k=5), model)


def test_jumprelu_trains_and_thresholds_stay_positive(model, tiny_corpus_dir, tmp_path):
    cfg = config(tiny_corpus_dir, tmp_path / "j", activation="jumprelu", l0_coef=1e-3)
    trainer, metrics = train(replace(cfg, tokens=600), model)
    for t in trainer.folded():
        assert (t["threshold"] > 0).all()
        # The straight-through gradient moved them from where they started (0.1).
        assert (t["threshold"] - 0.1).abs().max() > 1e-4
    assert all(v["train_l0_last_batch"] < 32 for v in metrics["layers"].values())


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--k", "40"], "exceeds --d-sae"),
        (["--layers", "0,7"], "layer 7 is not in the model"),
        (["--layers", "a"], "--layers takes layer numbers"),
    ],
)
def test_train_transcoders_errors_are_one_line(
    tiny_model_dir, tiny_corpus_dir, tmp_path, capsys, extra, needle
):
    args = ["train-transcoders", "--model", str(tiny_model_dir), "--corpus", str(tiny_corpus_dir)]
    args += ["--out", str(tmp_path / "e"), "--d-sae", "32", "--tokens", "640"]
    args += ["--batch-tokens", "64", "--device", "cpu"]
    assert cli.main(args + extra) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1
