"""A transcoder set written for circuit-tracer's unprocessed model gives, read by Spyglass
into its folded and centred model, the latents circuit-tracer computes, and predictions
that are the unprocessed ones centred, as the processed model's MLP output is.

The tiny model is a LayerNorm model, so both conversions are exercised: the norm's weight
and bias folded into the encoder (for a set reading ``mlp.hook_in``) and the output's
mean removed (TransformerLens centres LayerNorm models' writing weights)."""

from __future__ import annotations

import warnings

import pytest
import torch
from index_checks import fresh_hooked

from spyglass.model import load_model, save_model
from spyglass.sae import Sae, SaeConfig
from spyglass.transcoders import TranscoderSet, load_transcoders_for_model, save_transcoders

D, D_SAE = 16, 20


@pytest.fixture(scope="module")
def models(tiny_model_dir, tmp_path_factory):
    """(circuit-tracer's view: the unprocessed HookedTransformer, Spyglass's processed Model)."""
    raw = fresh_hooked(tiny_model_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from transformer_lens import HookedTransformer

        processed = HookedTransformer(
            raw.cfg, tokenizer=load_model(str(tiny_model_dir))._tl.tokenizer
        )
    processed.load_and_process_state_dict(
        raw.state_dict(), fold_ln=True, center_writing_weights=True, center_unembed=True,
        fold_value_biases=True,
    )  # fmt: skip
    folder = tmp_path_factory.mktemp("processed") / "model"
    save_model(processed, folder)
    model = load_model(str(folder), "cpu")
    state = raw.state_dict()
    # What the loader provides for a model it can reload (the GGUF for the embedded one).
    model.norms_before_folding = lambda: {k: v for k, v in state.items() if ".ln2." in k}
    return raw, model


def random_set(hook_in: str, arch: str) -> TranscoderSet:
    out = {}
    for layer in (0, 1):
        g = torch.Generator().manual_seed(layer)
        t = {"W_enc": torch.randn(D, D_SAE, generator=g), "b_enc": torch.randn(D_SAE, generator=g),
             "W_dec": torch.randn(D_SAE, D, generator=g), "b_dec": torch.randn(D, generator=g),
             "W_skip": torch.randn(D, D, generator=g) / 4}  # fmt: skip
        if "jumprelu" in arch:
            t["threshold"] = torch.rand(D_SAE, generator=g)
        cfg = SaeConfig(architecture=arch, d_in=D, d_sae=D_SAE, d_out=D,
                        hook_name=f"blocks.{layer}.{hook_in}",
                        hook_name_out=f"blocks.{layer}.hook_mlp_out",
                        apply_b_dec_to_input=False,
                        k=5 if arch.startswith("topk") else None)  # fmt: skip
        out[layer] = Sae(cfg, t)
    return TranscoderSet(out)


def circuit_tracer_view(raw, ids, layer: int, hook_in: str):
    """The input circuit-tracer's transcoder reads and the MLP output it predicts, from the
    unprocessed model (``mlp.hook_in``: the ln2 output, its weight and bias applied)."""
    _, cache = raw.run_with_cache(ids)
    resid_mid = cache[f"blocks.{layer}.hook_resid_mid"]
    x = (
        raw.blocks[layer].ln2(resid_mid)
        if hook_in == "mlp.hook_in"
        else cache[f"blocks.{layer}.{hook_in}"]
    )
    return x[0].detach(), cache[f"blocks.{layer}.hook_mlp_out"][0]


@pytest.mark.parametrize("hook_in", ["mlp.hook_in", "ln2.hook_normalized"])
@pytest.mark.parametrize("arch", ["topk_skip_transcoder", "jumprelu_skip_transcoder"])
def test_read_into_the_processed_model_gives_circuit_tracers_latents(
    models, tmp_path, hook_in, arch
):
    raw, model = models
    assert model.centred_writes
    tcs = random_set(hook_in, arch)
    save_transcoders(tcs, tmp_path / "ct", "circuit-tracer")
    ours = load_transcoders_for_model(tmp_path / "ct", model)
    ids = torch.tensor([model.encode_prompt("the quick brown fox jumps over the lazy dog")])
    for layer in (0, 1):
        theirs = tcs[layer]
        x_ct, y_raw = circuit_tracer_view(raw, ids, layer, hook_in)
        f_ct = theirs.encode(x_ct)
        pred_ct = theirs.decode(f_ct, x_ct)
        tc = ours[layer]
        assert tc.cfg.hook_name == f"blocks.{layer}.ln2.hook_normalized"
        acts = model.activations(ids, [tc.cfg.hook_name, tc.cfg.hook_name_out])
        x, y = acts[tc.cfg.hook_name][0], acts[tc.cfg.hook_name_out][0]
        # The normalised input is the same in both models; the output is centred.
        if hook_in == "ln2.hook_normalized":
            torch.testing.assert_close(x, x_ct, atol=1e-5, rtol=0)
        torch.testing.assert_close(y, y_raw - y_raw.mean(-1, keepdim=True), atol=1e-4, rtol=0)
        f = tc.encode(x)
        torch.testing.assert_close(f, f_ct, atol=1e-4, rtol=0)
        pred = tc.decode(f, x)
        torch.testing.assert_close(
            pred, pred_ct - pred_ct.mean(-1, keepdim=True), atol=1e-4, rtol=0
        )
