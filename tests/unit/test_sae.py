"""spyglass.sae on hand-made SAEs: encode semantics, SAELens-format round trips, errors.

No sae-lens needed here; tests/integration/test_sae_lens_parity.py compares against it.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from sae_weights import random_sae_tensors
from safetensors.torch import load_file, save_file

from spyglass.sae import (
    ENCODE_ROWS,
    SAE_ARCHITECTURES,
    Sae,
    SaeConfig,
    SaeLoadError,
    check_sae_for_model,
    fold_norm_scaling,
    load_sae,
    resolve_pretrained,
    save_sae,
)

D_IN, D_SAE = 8, 24
HOOK = "blocks.3.hook_resid_post"


def make_tensors(arch: str, seed: int = 0, d_in: int = D_IN, d_sae: int = D_SAE) -> dict:
    return random_sae_tensors(arch, seed, d_in, d_sae)


def make_sae(arch: str = "standard", seed: int = 0, **cfg_kwargs) -> Sae:
    cfg_kwargs.setdefault("k", 5 if arch == "topk" else None)
    cfg = SaeConfig(architecture=arch, d_in=D_IN, d_sae=D_SAE, hook_name=HOOK, **cfg_kwargs)
    return Sae(cfg, make_tensors(arch, seed))


def inputs(seed: int = 1, shape: tuple[int, ...] = (3, 5)) -> torch.Tensor:
    return 2 * torch.randn(*shape, D_IN, generator=torch.Generator().manual_seed(seed))


def one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message and message
    return message


# ---- encode semantics ----------------------------------------------------------------------


def test_standard_is_relu_of_affine_map_after_b_dec():
    sae = make_sae("standard")
    x = inputs()
    expected = torch.relu((x - sae.b_dec) @ sae.W_enc + sae.b_enc)
    f = sae.encode(x)
    assert f.shape == (3, 5, D_SAE)
    torch.testing.assert_close(f, expected)
    assert 0 < (f > 0).float().mean() < 1  # non-trivial: some latents fire, some do not


def test_apply_b_dec_to_input_false_skips_the_centering():
    sae = make_sae("standard", apply_b_dec_to_input=False)
    x = inputs()
    torch.testing.assert_close(sae.encode(x), torch.relu(x @ sae.W_enc + sae.b_enc))


def test_topk_keeps_exactly_k_largest_when_preactivations_are_positive():
    sae = make_sae("topk", k=5)
    sae.b_enc = sae.b_enc + 50.0  # every pre-activation positive
    x = inputs(shape=(40,))
    f = sae.encode(x)
    pre = (x - sae.b_dec) @ sae.W_enc + sae.b_enc
    # encode sums in another order (addmm), rounding apart by ~1e-5 at |pre| ~ 60: the
    # comparison of which 5 it keeps is exact because the 5th and 6th are further apart.
    ranked = pre.topk(6, dim=-1).values
    assert (ranked[:, 4] - ranked[:, 5]).min() > 1e-3
    assert ((f != 0).sum(dim=-1) == 5).all()
    top = pre.topk(5, dim=-1).indices
    assert torch.equal((f != 0), torch.zeros_like(f, dtype=torch.bool).scatter(-1, top, True))
    torch.testing.assert_close(f.gather(-1, top), pre.gather(-1, top))


def test_topk_relus_negative_members_of_the_top_k():
    sae = make_sae("topk", k=D_SAE)  # every latent is in the top k, so only ReLU decides
    sae.b_enc = torch.zeros(D_SAE)
    x = inputs()
    torch.testing.assert_close(sae.encode(x), torch.relu((x - sae.b_dec) @ sae.W_enc))


def test_topk_rescale_by_decoder_norm_selects_on_scaled_preacts_and_undoes_it_on_decode():
    sae = make_sae("topk", k=4, rescale_acts_by_decoder_norm=True)
    sae.W_dec = sae.W_dec * torch.linspace(0.5, 3.0, D_SAE)[:, None]
    x = inputs()
    norms = sae.W_dec.norm(dim=-1)
    pre = ((x - sae.b_dec) @ sae.W_enc + sae.b_enc) * norms
    vals, idx = pre.topk(4, dim=-1)
    expected = torch.zeros_like(pre).scatter(-1, idx, torch.relu(vals))
    f = sae.encode(x)
    torch.testing.assert_close(f, expected)
    torch.testing.assert_close(sae.decode(f), (f / norms) @ sae.W_dec + sae.b_dec)


@pytest.mark.parametrize("rescale", [False, True])
def test_topk_encodes_a_long_batch_slice_by_slice_like_all_at_once(rescale):
    """More rows than ``ENCODE_ROWS``, the last slice partial: each row's latents are the
    formula's, wherever the slices fall."""
    sae = make_sae("topk", k=4, rescale_acts_by_decoder_norm=rescale)
    x = inputs(shape=(3, ENCODE_ROWS - 6))
    scale = sae.W_dec.norm(dim=-1) if rescale else 1.0
    pre = ((x - sae.b_dec) @ sae.W_enc + sae.b_enc) * scale
    vals, idx = pre.topk(4, dim=-1)
    expected = torch.zeros_like(pre).scatter(-1, idx, torch.relu(vals))
    f = sae.encode(x)
    assert f.shape == (3, ENCODE_ROWS - 6, D_SAE)
    torch.testing.assert_close(f, expected)


def test_jumprelu_zeroes_below_threshold_and_passes_the_rest_unchanged():
    sae = make_sae("jumprelu")
    x = inputs(shape=(50,))
    pre = (x - sae.b_dec) @ sae.W_enc + sae.b_enc
    f = sae.encode(x)
    above = pre > sae.threshold
    # encode rounds apart from ``pre`` (~1e-6 at |pre| < 10); no pre-activation is that
    # close to its threshold, so both put each on the same side of it.
    assert ((pre - sae.threshold).abs() > 1e-5).all()
    torch.testing.assert_close(f[above], pre[above])
    assert (f[~above] == 0).all()  # exactly 0: a zeroed latent is no float sum
    # The cut matters: many latents are positive yet below their threshold.
    assert ((pre > 0) & ~above).sum() > 20 and above.sum() > 20


def test_jumprelu_negative_threshold_still_blocks_negative_preactivations():
    sae = make_sae("jumprelu")
    sae.threshold = torch.full((D_SAE,), -10.0)
    x = inputs()
    torch.testing.assert_close(sae.encode(x), torch.relu((x - sae.b_dec) @ sae.W_enc + sae.b_enc))


def test_gated_formula():
    sae = make_sae("gated")
    assert sae.b_enc is None  # as in SAELens: the gate has its own bias
    x = inputs(shape=(60,))
    centered = x - sae.b_dec
    gate_pre = centered @ sae.W_enc + sae.b_gate
    assert (gate_pre.abs() > 1e-4).all()  # no gate so near 0 that rounding could flip it
    gate = gate_pre > 0
    magnitude = torch.relu(centered @ (sae.W_enc * sae.r_mag.exp()) + sae.b_mag)
    f = sae.encode(x)
    torch.testing.assert_close(f, gate.float() * magnitude, atol=1e-6, rtol=1e-5)
    # Both paths bite: gate closed with positive magnitude, and gate open with zero magnitude.
    assert (~gate & (magnitude > 0)).any() and (gate & (magnitude == 0)).any()


@pytest.mark.parametrize("arch", SAE_ARCHITECTURES)
def test_decode_is_affine_map_back(arch):
    sae = make_sae(arch)
    f = torch.rand(4, D_SAE)
    torch.testing.assert_close(sae.decode(f), f @ sae.W_dec + sae.b_dec)


def test_input_is_cast_to_the_sae_dtype():
    sae = make_sae("standard")
    x = inputs().double()
    f = sae.encode(x)
    assert f.dtype == torch.float32
    torch.testing.assert_close(f, sae.encode(x.float()))


# ---- activation normalization --------------------------------------------------------------


def test_expected_average_only_in_scales_inputs_and_unscales_outputs():
    plain = make_sae("standard")
    scaled = make_sae("standard", normalize_activations="expected_average_only_in")
    scaled = Sae(replace(scaled.cfg, norm_scaling_factor=0.25), scaled.tensors)
    x = inputs()
    torch.testing.assert_close(scaled.encode(x), plain.encode(0.25 * x))
    f = scaled.encode(x)
    torch.testing.assert_close(scaled.decode(f), plain.decode(f) / 0.25)


def test_expected_average_only_in_without_a_factor_leaves_inputs_alone():
    plain = make_sae("standard")
    unknown = make_sae("standard", normalize_activations="expected_average_only_in")
    x = inputs()
    torch.testing.assert_close(unknown.encode(x), plain.encode(x))


def test_constant_norm_rescale_is_scale_invariant_and_decode_restores_scale():
    sae = make_sae("standard", normalize_activations="constant_norm_rescale")
    x = inputs()
    torch.testing.assert_close(sae.encode(7.0 * x), sae.encode(x))
    torch.testing.assert_close(sae.reconstruct(7.0 * x), 7.0 * sae.reconstruct(x))
    coeff = D_IN**0.5 / x.norm(dim=-1, keepdim=True)
    expected_f = torch.relu((x * coeff - sae.b_dec) @ sae.W_enc + sae.b_enc)
    torch.testing.assert_close(sae.encode(x), expected_f)
    torch.testing.assert_close(
        sae.decode(expected_f, x), (expected_f @ sae.W_dec + sae.b_dec) / coeff
    )


def test_layer_norm_mode_is_shift_and_scale_invariant():
    sae = make_sae("jumprelu", normalize_activations="layer_norm")
    x = inputs()
    torch.testing.assert_close(sae.encode(3.0 * x + 1.5), sae.encode(x), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(
        sae.reconstruct(3.0 * x + 1.5), 3.0 * sae.reconstruct(x) + 1.5, atol=1e-4, rtol=1e-4
    )


def test_decode_of_a_per_input_normalized_sae_needs_the_input():
    sae = make_sae("standard", normalize_activations="constant_norm_rescale")
    with pytest.raises(ValueError, match="needs x"):
        sae.decode(sae.encode(inputs()))


def test_hook_z_sae_flattens_heads():
    sae = make_sae("standard", reshape_activations="hook_z")
    x = inputs()
    per_head = x.reshape(3, 5, 2, D_IN // 2)  # [batch, pos, n_heads, d_head]
    torch.testing.assert_close(sae.encode(per_head), sae.encode(x))


# ---- save / load ---------------------------------------------------------------------------


@pytest.mark.parametrize("arch", SAE_ARCHITECTURES)
def test_save_load_round_trip(arch, tmp_path: Path):
    sae = make_sae(
        arch,
        model_name="gpt2",
        apply_b_dec_to_input=False,
        normalize_activations="constant_norm_rescale",
        model_from_pretrained_kwargs={"center_writing_weights": True},
        hook_head_index=None,
    )
    save_sae(sae, tmp_path / "sae", extra_cfg={"context_size": 128, "note": "hand-made"})
    back = load_sae(tmp_path / "sae")

    assert set(back.tensors) == set(sae.tensors)
    for name, tensor in sae.tensors.items():
        assert torch.equal(back.tensors[name], tensor), name
    for field in (
        "architecture",
        "d_in",
        "d_sae",
        "hook_name",
        "model_name",
        "apply_b_dec_to_input",
        "normalize_activations",
        "k",
        "model_from_pretrained_kwargs",
        "hook_head_index",
    ):
        assert getattr(back.cfg, field) == getattr(sae.cfg, field), field
    x = inputs()
    assert torch.equal(back.encode(x), sae.encode(x))  # the same tensors, code and input

    raw = back.cfg.raw
    assert raw == json.loads((tmp_path / "sae" / "cfg.json").read_text())
    assert raw["metadata"]["hook_name"] == HOOK
    assert raw["metadata"]["context_size"] == 128 and raw["metadata"]["note"] == "hand-made"
    assert int(raw["metadata"]["sae_lens_version"].split(".")[0]) >= 6
    assert (raw.get("k") is not None) == (arch == "topk")


def test_save_folds_a_known_scaling_factor(tmp_path: Path):
    sae = make_sae("jumprelu", normalize_activations="expected_average_only_in")
    sae = Sae(replace(sae.cfg, norm_scaling_factor=3.0), sae.tensors)
    save_sae(sae, tmp_path / "sae")
    back = load_sae(tmp_path / "sae")
    assert back.cfg.normalize_activations == "none"
    x = inputs()
    torch.testing.assert_close(back.encode(x), sae.encode(x))
    f = sae.encode(x)
    torch.testing.assert_close(back.decode(f), sae.decode(f))
    torch.testing.assert_close(back.W_enc, 3.0 * sae.W_enc)
    assert fold_norm_scaling(make_sae("standard")).cfg.normalize_activations == "none"


def test_resave_keeps_metadata_of_the_loaded_file(tmp_path: Path):
    save_sae(make_sae("topk"), tmp_path / "a", extra_cfg={"neuronpedia_id": "x/1"})
    save_sae(load_sae(tmp_path / "a"), tmp_path / "b")
    raw = json.loads((tmp_path / "b" / "cfg.json").read_text())
    assert raw["metadata"]["neuronpedia_id"] == "x/1"


def test_extra_cfg_cannot_override_the_config(tmp_path: Path):
    with pytest.raises(ValueError, match="hook_name"):
        save_sae(make_sae(), tmp_path / "s", extra_cfg={"hook_name": "blocks.0.hook_resid_pre"})


def test_legacy_cfg_is_converted(tmp_path: Path):
    """A pre-6 SAELens cfg.json: hook_point, activation_fn topk + kwargs, bool normalization."""
    folder = tmp_path / "old"
    folder.mkdir()
    tensors = make_tensors("topk")
    save_file(tensors, str(folder / "sae_weights.safetensors"))
    legacy = {
        "model_name": "pythia-70m",
        "hook_point": "blocks.2.hook_resid_pre",
        "hook_point_layer": 2,
        "hook_point_head_index": None,
        "d_in": D_IN,
        "d_sae": D_SAE,
        "activation_fn_str": "topk",
        "activation_fn_kwargs": {"k": 3},
        "normalize_activations": False,
        "dtype": "torch.float32",
        "sae_lens_version": "3.12.0",
    }
    (folder / "cfg.json").write_text(json.dumps(legacy))
    sae = load_sae(folder)
    c = sae.cfg
    assert (c.architecture, c.k, c.hook_name, c.model_name) == (
        "topk",
        3,
        "blocks.2.hook_resid_pre",
        "pythia-70m",
    )
    assert c.apply_b_dec_to_input is True and c.normalize_activations == "none"
    assert sae.layer == 2 and c.raw == legacy


def test_jumprelu_log_threshold_is_converted(tmp_path: Path):
    save_sae(make_sae("jumprelu"), tmp_path / "s")
    weights = tmp_path / "s" / "sae_weights.safetensors"
    tensors = load_file(str(weights))
    threshold = tensors.pop("threshold")
    save_file({**tensors, "log_threshold": threshold.log()}, str(weights))
    torch.testing.assert_close(load_sae(tmp_path / "s").threshold, threshold)


def test_scaling_factor_from_a_training_checkpoint(tmp_path: Path):
    save_sae(make_sae("standard", normalize_activations="expected_average_only_in"), tmp_path / "s")
    (tmp_path / "s" / "activation_scaler.json").write_text('{"scaling_factor": 0.5}')
    assert load_sae(tmp_path / "s").cfg.norm_scaling_factor == 0.5


def test_unknown_scaling_factor_warns(tmp_path: Path):
    save_sae(make_sae("standard", normalize_activations="expected_average_only_in"), tmp_path / "s")
    with pytest.warns(UserWarning, match="norm_scaling_factor"):
        sae = load_sae(tmp_path / "s")
    assert sae.cfg.norm_scaling_factor is None


def test_cfg_overrides_and_dtype(tmp_path: Path):
    save_sae(make_sae("standard"), tmp_path / "s")
    sae = load_sae(
        tmp_path / "s",
        cfg_overrides={"dtype": "float64", "model_from_pretrained_kwargs": {"a": 1}},
    )
    assert sae.dtype == torch.float64 and sae.cfg.model_from_pretrained_kwargs == {"a": 1}
    assert load_sae(tmp_path / "s").cfg.model_from_pretrained_kwargs == {}


def test_to_moves_every_tensor():
    sae = make_sae("gated").to("meta")
    assert all(t.device.type == "meta" for t in sae.tensors.values())
    assert sae.device.type == "meta"


def test_layer_from_hook_name():
    assert make_sae().layer == 3
    cfg = SaeConfig(architecture="standard", d_in=D_IN, d_sae=D_SAE, hook_name="hook_embed")
    assert Sae(cfg, make_tensors("standard")).layer is None


# ---- errors ---------------------------------------------------------------------------------


def saved(tmp_path: Path, arch: str = "standard") -> Path:
    folder = tmp_path / "sae"
    save_sae(make_sae(arch), folder)
    return folder


def edit_cfg(folder: Path, **changes) -> None:
    path = folder / "cfg.json"
    cfg = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            cfg.pop(key, None)
        else:
            cfg[key] = value
    path.write_text(json.dumps(cfg))


def test_missing_folder(tmp_path: Path):
    with pytest.raises(SaeLoadError) as err:
        load_sae(tmp_path / "nope")
    assert "not found" in one_line(err) and "nope" in one_line(err)


@pytest.mark.parametrize("filename", ["cfg.json", "sae_weights.safetensors"])
def test_missing_file_is_named(tmp_path: Path, filename: str):
    folder = saved(tmp_path)
    (folder / filename).unlink()
    with pytest.raises(SaeLoadError) as err:
        load_sae(folder)
    assert f"missing {filename}" in one_line(err)


def test_bad_json(tmp_path: Path):
    folder = saved(tmp_path)
    (folder / "cfg.json").write_text("{not json")
    with pytest.raises(SaeLoadError) as err:
        load_sae(folder)
    assert "cfg.json" in one_line(err) and "not valid JSON" in one_line(err)


def test_unknown_architecture_lists_the_supported_ones(tmp_path: Path):
    folder = saved(tmp_path)
    edit_cfg(folder, architecture="matryoshka_batchtopk")
    with pytest.raises(SaeLoadError) as err:
        load_sae(folder)
    message = one_line(err)
    assert "'matryoshka_batchtopk'" in message
    assert "standard, topk, jumprelu, gated" in message


@pytest.mark.parametrize("mode", ["covariance_whitening", "mystery"])
def test_unsupported_normalization_is_named(tmp_path: Path, mode: str):
    folder = saved(tmp_path)
    edit_cfg(folder, normalize_activations=mode)
    with pytest.raises(SaeLoadError) as err:
        load_sae(folder)
    assert repr(mode) in one_line(err) and "normalize_activations" in one_line(err)


def test_shape_mismatch_names_the_tensor_and_both_shapes(tmp_path: Path):
    folder = saved(tmp_path)
    edit_cfg(folder, d_sae=D_SAE + 1)
    with pytest.raises(SaeLoadError) as err:
        load_sae(folder)
    message = one_line(err)
    assert "'W_enc'" in message
    assert f"[{D_IN}, {D_SAE}]" in message and f"[{D_IN}, {D_SAE + 1}]" in message


def test_missing_and_unexpected_tensors(tmp_path: Path):
    folder = saved(tmp_path, "jumprelu")
    edit_cfg(folder, architecture="gated")
    with pytest.raises(SaeLoadError) as err:
        load_sae(folder)
    assert "missing tensor 'b_gate'" in one_line(err)
    edit_cfg(folder, architecture="standard")
    with pytest.raises(SaeLoadError) as err:
        load_sae(folder)
    assert "unexpected tensor 'threshold'" in one_line(err)


def test_topk_k_out_of_range(tmp_path: Path):
    folder = saved(tmp_path, "topk")
    edit_cfg(folder, k=D_SAE + 1)
    with pytest.raises(SaeLoadError) as err:
        load_sae(folder)
    assert f"k={D_SAE + 1}" in one_line(err)


@pytest.mark.parametrize("key", ["d_in", "architecture"])
def test_missing_required_cfg_key(tmp_path: Path, key: str):
    folder = saved(tmp_path)
    edit_cfg(folder, **{key: None})
    with pytest.raises(SaeLoadError) as err:
        load_sae(folder)
    assert repr(key) in one_line(err)


def test_missing_hook_name(tmp_path: Path):
    folder = saved(tmp_path)
    cfg = json.loads((folder / "cfg.json").read_text())
    del cfg["metadata"]["hook_name"]
    (folder / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(SaeLoadError) as err:
        load_sae(folder)
    assert "hook_name" in one_line(err)


def test_in_memory_config_is_validated_too():
    with pytest.raises(SaeLoadError, match="supported: standard"):
        SaeConfig(architecture="relu", d_in=4, d_sae=4, hook_name=HOOK)
    with pytest.raises(SaeLoadError, match="'b_dec'.*\\[4\\]"):
        tensors = make_tensors("standard", d_in=4, d_sae=4)
        tensors["b_dec"] = torch.zeros(5)
        Sae(SaeConfig(architecture="standard", d_in=4, d_sae=4, hook_name=HOOK), tensors)


# ---- fitting a model ------------------------------------------------------------------------


def test_check_sae_for_model():
    sae = make_sae()  # blocks.3.hook_resid_post, d_in 8
    check_sae_for_model(sae, d_model=D_IN, n_layers=4)

    with pytest.raises(SaeLoadError) as err:
        check_sae_for_model(sae, d_model=16, n_layers=4)
    assert f"d_in is {D_IN}" in one_line(err) and "d_model is 16" in one_line(err)

    with pytest.raises(SaeLoadError) as err:
        check_sae_for_model(sae, d_model=D_IN, n_layers=3)
    assert "layer 3" in one_line(err) and "3 layers" in one_line(err)

    # An MLP-neuron hook is d_mlp wide, not d_model: only the layer is checked.
    mlp_cfg = SaeConfig(
        architecture="standard", d_in=D_IN, d_sae=D_SAE, hook_name="blocks.1.mlp.hook_post"
    )
    check_sae_for_model(Sae(mlp_cfg, make_tensors("standard")), d_model=64, n_layers=2)


def test_resolve_pretrained_without_sae_lens(monkeypatch: pytest.MonkeyPatch):
    for name in ("sae_lens", "sae_lens.loading", "sae_lens.loading.pretrained_saes_directory"):
        monkeypatch.setitem(sys.modules, name, None)  # import of any of these now fails
    with pytest.raises(SaeLoadError) as err:
        resolve_pretrained("gpt2-small-res-jb", "blocks.0.hook_resid_pre")
    assert "pip install sae-lens" in one_line(err)


def test_package_does_not_import_transformer_lens_or_sae_lens():
    package = Path(sys.modules[Sae.__module__].__file__).parent
    source = "\n".join(p.read_text() for p in sorted(package.glob("*.py")))
    imports = [line.strip() for line in source.splitlines() if "import " in line]
    assert not [line for line in imports if "transformer_lens" in line]
    assert [line for line in imports if "sae_lens" in line] == [
        "from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory"
    ]
