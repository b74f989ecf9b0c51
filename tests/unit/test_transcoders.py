"""Transcoder sets: both layouts round-trip weight for weight, encode and decode are the
formulas each layout's own tool uses, and the fold and centre conversions are exact."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from spyglass.sae import Sae, SaeConfig, SaeLoadError, load_sae
from spyglass.transcoders import (
    TranscoderSet,
    centre_output,
    fold_input_norm,
    is_transcoder_folder,
    load_transcoders,
    save_transcoders,
)

D_IN, D_OUT, D_SAE = 12, 10, 20


def random_transcoder(layer: int, arch: str, seed: int, hook_in="ln2.hook_normalized") -> Sae:
    g = torch.Generator().manual_seed(seed)
    t = {
        "W_enc": torch.randn(D_IN, D_SAE, generator=g),
        "b_enc": torch.randn(D_SAE, generator=g),
        "W_dec": torch.randn(D_SAE, D_OUT, generator=g),
        "b_dec": torch.randn(D_OUT, generator=g),
    }
    if "skip" in arch:
        t["W_skip"] = torch.randn(D_OUT, D_IN, generator=g)
    if "jumprelu" in arch:
        t["threshold"] = torch.rand(D_SAE, generator=g)
    cfg = SaeConfig(
        architecture=arch,
        d_in=D_IN,
        d_sae=D_SAE,
        d_out=D_OUT,
        hook_name=f"blocks.{layer}.{hook_in}",
        hook_name_out=f"blocks.{layer}.hook_mlp_out",
        apply_b_dec_to_input=False,
        k=5 if arch.startswith("topk") else None,
        model_name="tiny",
    )
    return Sae(cfg, t)


def random_set(arch: str) -> TranscoderSet:
    return TranscoderSet({i: random_transcoder(i, arch, i) for i in range(3)}, model_name="tiny")


ARCHS = [
    "transcoder",
    "skip_transcoder",
    "jumprelu_transcoder",
    "jumprelu_skip_transcoder",
    "topk_transcoder",
    "topk_skip_transcoder",
]


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("layout", ["circuit-tracer", "saelens"])
def test_each_layout_round_trips_weight_for_weight(tmp_path, arch, layout):
    tcs = random_set(arch)
    save_transcoders(tcs, tmp_path / "set", layout)
    assert is_transcoder_folder(tmp_path / "set")
    back = load_transcoders(tmp_path / "set")
    assert back.layout == layout and back.layers == [0, 1, 2] and back.model_name == "tiny"
    for layer in back.layers:
        a, b = tcs[layer], back[layer]
        assert (b.cfg.architecture, b.cfg.k, b.cfg.hook_name, b.cfg.hook_name_out) == (
            a.cfg.architecture, a.cfg.k, a.cfg.hook_name, a.cfg.hook_name_out
        )  # fmt: skip
        assert a.tensors.keys() == b.tensors.keys()
        for name, t in a.tensors.items():
            assert torch.equal(t, b.tensors[name]), name


@pytest.mark.parametrize("arch", ["topk_skip_transcoder", "jumprelu_transcoder"])
def test_converting_between_layouts_keeps_every_weight(tmp_path, arch):
    tcs = random_set(arch)
    save_transcoders(tcs, tmp_path / "ct", "circuit-tracer")
    save_transcoders(load_transcoders(tmp_path / "ct"), tmp_path / "sl", "saelens")
    save_transcoders(load_transcoders(tmp_path / "sl"), tmp_path / "ct2", "circuit-tracer")
    for name in ("layer_0.safetensors", "layer_2.safetensors"):
        a, b = load_file(tmp_path / "ct" / name), load_file(tmp_path / "ct2" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_circuit_tracer_layout_is_what_circuit_tracer_reads(tmp_path):
    save_transcoders(random_set("topk_skip_transcoder"), tmp_path / "ct", "circuit-tracer")
    cfg = yaml.safe_load((tmp_path / "ct" / "config.yaml").read_text())
    assert cfg["model_kind"] == "transcoder_set"
    assert (cfg["feature_input_hook"], cfg["feature_output_hook"]) == (
        "ln2.hook_normalized",
        "hook_mlp_out",
    )
    assert (cfg["activation"], cfg["k"]) == ("topk", 5)
    t = load_file(tmp_path / "ct" / "layer_1.safetensors")
    assert t.keys() == {"W_enc", "W_dec", "b_enc", "b_dec", "W_skip"}
    # circuit-tracer's orientation: W_enc [d_transcoder, d_model], used as x @ W_enc.T
    assert t["W_enc"].shape == (D_SAE, D_IN) and t["W_dec"].shape == (D_SAE, D_OUT)
    assert t["W_skip"].shape == (D_OUT, D_IN)


def circuit_tracer_forward(x, t: dict, activation: str, k: int | None):
    """circuit-tracer's per-layer transcoder, written out from its definitions."""
    pre = x @ t["W_enc"].T + t["b_enc"]
    if activation == "topk":
        top = pre.topk(k, dim=-1)
        f = torch.zeros_like(pre).scatter(-1, top.indices, top.values)
    elif activation == "jump_relu":
        f = pre * (pre > t["activation_function.threshold"])
    else:
        f = pre.relu()
    y = f @ t["W_dec"] + t["b_dec"]
    return f, y + x @ t["W_skip"].T if "W_skip" in t else y


@pytest.mark.parametrize(
    ("arch", "activation"),
    [("topk_skip_transcoder", "topk"), ("jumprelu_transcoder", "jump_relu"),
     ("skip_transcoder", "relu")],
)  # fmt: skip
def test_read_circuit_tracer_files_give_circuit_tracers_latents(tmp_path, arch, activation):
    save_transcoders(random_set(arch), tmp_path / "ct", "circuit-tracer")
    tcs = load_transcoders(tmp_path / "ct")
    x = torch.randn(9, D_IN) * 3
    t = load_file(tmp_path / "ct" / "layer_2.safetensors")
    f, y = circuit_tracer_forward(x, t, activation, 5)
    assert torch.allclose(tcs[2].encode(x), f, atol=1e-5)
    assert torch.allclose(tcs[2].decode(tcs[2].encode(x), x), y, atol=1e-4)


def test_saelens_folders_hold_saelens_transcoder_configs(tmp_path):
    save_transcoders(random_set("jumprelu_skip_transcoder"), tmp_path / "sl", "saelens")
    cfg = json.loads((tmp_path / "sl" / "layer_1" / "cfg.json").read_text())
    assert cfg["architecture"] == "jumprelu_skip_transcoder"
    assert (cfg["d_in"], cfg["d_out"], cfg["d_sae"]) == (D_IN, D_OUT, D_SAE)
    assert cfg["apply_b_dec_to_input"] is False
    assert cfg["metadata"]["hook_name"] == "blocks.1.ln2.hook_normalized"
    assert cfg["metadata"]["hook_name_out"] == "blocks.1.hook_mlp_out"
    # One SAELens transcoder folder on its own is a set of one layer.
    assert load_transcoders(tmp_path / "sl" / "layer_1").layers == [1]
    assert load_sae(tmp_path / "sl" / "layer_1").cfg.is_transcoder


def test_folding_the_input_norm_gives_the_same_latents():
    tc = random_transcoder(0, "jumprelu_skip_transcoder", 7, hook_in="mlp.hook_in")
    g = torch.Generator().manual_seed(1)
    w, b = torch.rand(D_IN, generator=g) + 0.5, torch.randn(D_IN, generator=g)
    x_hat = torch.randn(30, D_IN, generator=g)
    folded = fold_input_norm(tc, w, b)
    assert folded.cfg.hook_name == "blocks.0.ln2.hook_normalized"
    mlp_in = x_hat * w + b  # what mlp.hook_in holds in the unprocessed model
    assert torch.allclose(folded.encode(x_hat), tc.encode(mlp_in), atol=1e-5)
    got = folded.decode(folded.encode(x_hat), x_hat)
    assert torch.allclose(got, tc.decode(tc.encode(mlp_in), mlp_in), atol=1e-4)


def test_centring_the_output_centres_every_prediction():
    tc = random_transcoder(0, "topk_skip_transcoder", 3)
    x = torch.randn(30, D_IN)
    y = tc.decode(tc.encode(x), x)
    centred = centre_output(tc)
    assert torch.equal(centred.encode(x), tc.encode(x))
    got = centred.decode(centred.encode(x), x)
    assert torch.allclose(got, y - y.mean(-1, keepdim=True), atol=1e-5)


def test_bad_sets_fail_in_one_line(tmp_path):
    save_transcoders(random_set("jumprelu_transcoder"), tmp_path / "ct", "circuit-tracer")
    cfg_path = tmp_path / "ct" / "config.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    cases = [
        ({**cfg, "model_kind": "cross_layer_transcoder"}, "model_kind"),
        ({k: v for k, v in cfg.items() if k != "feature_input_hook"}, "feature_input_hook"),
        ({**cfg, "activation": "topk"}, "positive integer k"),
    ]
    for bad, needle in cases:
        cfg_path.write_text(yaml.safe_dump(bad))
        with pytest.raises(SaeLoadError, match=needle) as e:
            load_transcoders(tmp_path / "ct")
        assert "\n" not in str(e.value)
    cfg_path.write_text(yaml.safe_dump(cfg))
    layer = tmp_path / "ct" / "layer_0.safetensors"
    t = load_file(layer)
    save_file({**t, "activation_function.threshold": -t["activation_function.threshold"]}, layer)
    with pytest.raises(SaeLoadError, match="negative JumpReLU thresholds"):
        load_transcoders(tmp_path / "ct")
    with pytest.raises(SaeLoadError, match="holds no transcoders"):
        load_transcoders(tmp_path)
