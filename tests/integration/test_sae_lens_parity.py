"""spyglass.sae against SAELens itself, in both directions, on seeded random SAEs.

Spyglass-saved folders are loaded with ``SAE.load_from_disk``; SAELens-saved folders
(``save_model``, ``save_inference_model``) are loaded with ``load_sae``; encode and decode
must agree to float tolerance. The pretrained path runs against a hand-made SAE placed in
an offline hub cache where SAELens's directory says a real release lives.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from sae_weights import random_sae_tensors

sae_lens = pytest.importorskip("sae_lens")

from sae_lens import (  # noqa: E402
    SAE,
    GatedSAE,
    GatedSAEConfig,
    JumpReLUSAE,
    JumpReLUSAEConfig,
    StandardSAE,
    StandardSAEConfig,
    TopKSAE,
    TopKSAEConfig,
    TopKTrainingSAE,
    TopKTrainingSAEConfig,
)
from sae_lens.saes.sae import SAEMetadata  # noqa: E402

from spyglass.sae import (  # noqa: E402
    SAE_ARCHITECTURES,
    Sae,
    SaeConfig,
    SaeLoadError,
    load_pretrained,
    load_sae,
    pretrained_cfg_overrides,
    resolve_pretrained,
    save_sae,
)

D_IN, D_SAE, K = 32, 96, 12
HOOK = "blocks.2.hook_resid_post"
ATOL = 1e-5

SAE_LENS_CLASSES = {
    "standard": (StandardSAE, StandardSAEConfig),
    "topk": (TopKSAE, TopKSAEConfig),
    "jumprelu": (JumpReLUSAE, JumpReLUSAEConfig),
    "gated": (GatedSAE, GatedSAEConfig),
}

# Every architecture with and without b_dec centering, and each normalization mode that
# SAELens applies at encode time.
CASES = [
    (arch, apply_b_dec, norm)
    for arch in SAE_ARCHITECTURES
    for apply_b_dec, norm in [
        (True, "none"),
        (False, "none"),
        (True, "constant_norm_rescale"),
        (False, "layer_norm"),
        (True, "expected_average_only_in"),  # no factor known: both sides leave x alone
    ]
]


def random_tensors(arch: str, seed: int = 0, d_in: int = D_IN, d_sae: int = D_SAE) -> dict:
    return random_sae_tensors(arch, seed, d_in, d_sae)


def activations(seed: int, d_in: int = D_IN) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return 1.5 * torch.randn(4, 9, d_in, generator=gen) + 0.3  # [batch, pos, d_in]


def spyglass_sae(arch: str, apply_b_dec: bool, norm: str, seed: int = 0, **extra) -> Sae:
    cfg = SaeConfig(
        architecture=arch,
        d_in=D_IN,
        d_sae=D_SAE,
        hook_name=HOOK,
        model_name="pythia-70m-deduped",
        apply_b_dec_to_input=apply_b_dec,
        normalize_activations=norm,
        k=K if arch == "topk" else None,
        model_from_pretrained_kwargs={"center_writing_weights": False},
        **extra,
    )
    return Sae(cfg, random_tensors(arch, seed))


def sae_lens_load(folder: Path) -> SAE:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. its model_from_pretrained_kwargs advice
        return SAE.load_from_disk(str(folder), device="cpu")


def sae_lens_encode_decode(sae: SAE, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # SAELens keeps per-input normalization statistics from encode for the following decode.
    with torch.no_grad():
        f = sae.encode(x)
        return f, sae.decode(f)


def assert_same(ours: Sae, theirs: SAE, x: torch.Tensor) -> torch.Tensor:
    their_f, their_out = sae_lens_encode_decode(theirs, x)
    our_f = ours.encode(x)
    torch.testing.assert_close(our_f, their_f, atol=ATOL, rtol=0)
    torch.testing.assert_close(ours.decode(our_f, x), their_out, atol=ATOL, rtol=0)
    return our_f


def assert_nontrivial(f: torch.Tensor, arch: str) -> None:
    active = (f > 0).float().mean().item()
    assert 0.1 < active < 0.9, f"{arch}: {active:.2f} of latents active; the test needs a mix"
    if arch == "topk":
        assert ((f != 0).sum(-1) <= K).all() and ((f != 0).sum(-1) == K).float().mean() > 0.5


# ---- Spyglass writes, SAELens reads ---------------------------------------------------------


@pytest.mark.parametrize(("arch", "apply_b_dec", "norm"), CASES)
def test_spyglass_saved_sae_matches_sae_lens(arch, apply_b_dec, norm, tmp_path: Path):
    ours = spyglass_sae(arch, apply_b_dec, norm, seed=SAE_ARCHITECTURES.index(arch))
    save_sae(ours, tmp_path / "sae", extra_cfg={"context_size": 64})
    theirs = sae_lens_load(tmp_path / "sae")

    assert type(theirs) is SAE_LENS_CLASSES[arch][0]
    assert theirs.cfg.apply_b_dec_to_input is apply_b_dec
    assert theirs.cfg.normalize_activations == norm
    assert theirs.cfg.metadata.hook_name == HOOK
    assert theirs.cfg.metadata.model_name == "pythia-70m-deduped"
    assert theirs.cfg.metadata.context_size == 64
    if arch == "topk":
        assert theirs.cfg.k == K
    for name, tensor in ours.tensors.items():
        assert torch.equal(getattr(theirs, name).detach(), tensor), name

    f = assert_same(ours, theirs, activations(seed=10))
    assert_nontrivial(f, arch)


def test_topk_rescaled_by_decoder_norm_matches(tmp_path: Path):
    ours = spyglass_sae("topk", True, "none", rescale_acts_by_decoder_norm=True)
    ours.W_dec = ours.W_dec * torch.linspace(0.3, 3.0, D_SAE)[:, None]  # uneven norms
    save_sae(ours, tmp_path / "sae")
    theirs = sae_lens_load(tmp_path / "sae")
    assert theirs.cfg.rescale_acts_by_decoder_norm is True
    assert_same(ours, theirs, activations(seed=11))


def test_topk_with_negative_members_of_the_top_k_matches(tmp_path: Path):
    """k close to d_sae: some of the k largest pre-activations are negative and ReLU'd."""
    base = spyglass_sae("topk", False, "none")
    tensors = base.tensors | {"b_enc": torch.zeros(D_SAE)}
    ours = Sae(replace(base.cfg, k=80), tensors)
    save_sae(ours, tmp_path / "sae")
    f = assert_same(ours, sae_lens_load(tmp_path / "sae"), activations(seed=13))
    assert ((f != 0).sum(-1) < 80).all()


@pytest.mark.parametrize("arch", SAE_ARCHITECTURES)
def test_known_scaling_factor_matches_sae_lens_fold(arch, tmp_path: Path):
    """expected_average_only_in with a factor: Spyglass scales at encode time; SAELens folds
    the factor into the weights (as its from_pretrained and trainer do). Same function."""
    ours = spyglass_sae(arch, True, "expected_average_only_in", norm_scaling_factor=0.4)
    save_sae(ours, tmp_path / "sae")
    theirs = sae_lens_load(tmp_path / "sae")
    assert theirs.cfg.normalize_activations == "none"  # folded on save
    f = assert_same(ours, theirs, 5 * activations(seed=12))
    assert_nontrivial(f, arch)


# ---- SAELens writes, Spyglass reads ---------------------------------------------------------


def sae_lens_sae(arch: str, apply_b_dec: bool, norm: str, seed: int) -> SAE:
    sae_cls, cfg_cls = SAE_LENS_CLASSES[arch]
    kwargs = {"k": K} if arch == "topk" else {}
    metadata = SAEMetadata(
        model_name="gpt2-small",
        hook_name=HOOK,
        hook_head_index=None,
        model_from_pretrained_kwargs={"center_writing_weights": True},
        prepend_bos=True,
    )
    cfg = cfg_cls(
        d_in=D_IN,
        d_sae=D_SAE,
        apply_b_dec_to_input=apply_b_dec,
        normalize_activations=norm,
        metadata=metadata,
        **kwargs,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sae = sae_cls(cfg)
    with torch.no_grad():
        for name, tensor in random_tensors(arch, seed).items():
            getattr(sae, name).copy_(tensor)
    return sae


@pytest.mark.parametrize(("arch", "apply_b_dec", "norm"), CASES)
def test_sae_lens_saved_sae_loads_in_spyglass(arch, apply_b_dec, norm, tmp_path: Path):
    theirs = sae_lens_sae(arch, apply_b_dec, norm, seed=20 + SAE_ARCHITECTURES.index(arch))
    theirs.save_model(tmp_path / "sae")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # expected_average_only_in without a factor warns
        ours = load_sae(tmp_path / "sae")

    c = ours.cfg
    assert (c.architecture, c.d_in, c.d_sae, c.hook_name, c.model_name) == (
        arch,
        D_IN,
        D_SAE,
        HOOK,
        "gpt2-small",
    )
    assert c.apply_b_dec_to_input is apply_b_dec and c.normalize_activations == norm
    assert c.model_from_pretrained_kwargs == {"center_writing_weights": True}
    assert c.hook_head_index is None and ours.layer == 2
    assert c.k == (K if arch == "topk" else None)
    assert c.raw["metadata"]["sae_lens_version"] == sae_lens.__version__

    f = assert_same(ours, theirs, activations(seed=30))
    assert_nontrivial(f, arch)


def test_sae_lens_training_sae_inference_save_loads_in_spyglass(tmp_path: Path):
    """A TopK training SAE's save_inference_model folds the decoder norms into the weights."""
    cfg = TopKTrainingSAEConfig(
        d_in=D_IN, d_sae=D_SAE, k=K, metadata=SAEMetadata(hook_name=HOOK, model_name="gpt2")
    )
    training = TopKTrainingSAE(cfg)
    with torch.no_grad():
        for name, tensor in random_tensors("topk", seed=40).items():
            getattr(training, name).copy_(tensor)
        training.W_dec.mul_(torch.linspace(0.5, 2.0, D_SAE)[:, None])
    training.save_inference_model(tmp_path / "sae")
    ours = load_sae(tmp_path / "sae")
    assert_same(ours, sae_lens_load(tmp_path / "sae"), activations(seed=41))
    # And the training SAE itself (unfolded weights, rescaled selection) encodes the same.
    x = activations(seed=42)
    with torch.no_grad():
        torch.testing.assert_close(ours.encode(x), training.encode(x), atol=ATOL, rtol=0)


def test_sae_lens_scaling_fold_matches_spyglass_runtime_scaling(tmp_path: Path):
    theirs = sae_lens_sae("jumprelu", True, "expected_average_only_in", seed=50)
    theirs.save_model(tmp_path / "sae")
    ours = load_sae(tmp_path / "sae", cfg_overrides={"norm_scaling_factor": 2.5})
    theirs.fold_activation_norm_scaling_factor(2.5)
    assert_same(ours, theirs, activations(seed=51) / 2)


def test_legacy_cfg_reads_like_sae_lens(tmp_path: Path):
    """A pre-6 cfg.json (SAELens converts it on load): both sides must read it the same."""
    folder = tmp_path / "old"
    save_sae(spyglass_sae("topk", True, "none"), folder)
    legacy = {
        "model_name": "gpt2-small",
        "hook_point": HOOK,
        "hook_point_layer": 2,
        "hook_point_head_index": None,
        "d_in": D_IN,
        "d_sae": D_SAE,
        "activation_fn_str": "topk",
        "activation_fn_kwargs": {"k": 7},
        "apply_b_dec_to_input": False,
        "normalize_activations": False,
        "dtype": "float32",
        "device": "cpu",
        "sae_lens_training_version": "3.5.0",
    }
    (folder / "cfg.json").write_text(json.dumps(legacy))
    ours, theirs = load_sae(folder), sae_lens_load(folder)
    assert (ours.cfg.architecture, ours.cfg.k, theirs.cfg.k) == ("topk", 7, 7)
    assert theirs.cfg.metadata.hook_name == ours.cfg.hook_name == HOOK
    assert theirs.cfg.apply_b_dec_to_input is ours.cfg.apply_b_dec_to_input is False
    assert_same(ours, theirs, activations(seed=60))


# ---- the pretrained path, offline -----------------------------------------------------------

# A real SAELens-format release: twelve GPT-2 small MLP-out SAEs, each with a norm scaling
# factor and config overrides in SAELens's directory (read from its pretrained_saes.yaml).
RELEASE = "gpt2-small-mlp-tm"
SAE_ID = "blocks.0.hook_mlp_out"
REPO_ID = "tommmcgrath/gpt2-small-mlp-out-saes"
REPO_PATH = "sae_group_gpt2_blocks.0.hook_mlp_out_24576:v1"
FAKE_COMMIT = "fedcba9876543210fedcba9876543210fedcba98"


def go_offline(monkeypatch: pytest.MonkeyPatch, hf_home: Path) -> None:
    """A private hub cache and offline mode; huggingface_hub is already imported, so its
    module constants are patched as well as the environment."""
    import huggingface_hub.constants as hub

    hub_cache = hf_home / "hub"
    for key, value in {
        "HF_HOME": str(hf_home),
        "HF_HUB_CACHE": str(hub_cache),
        "HF_HUB_OFFLINE": "1",
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(hub, "HF_HOME", str(hf_home))
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(hub_cache))
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)


@pytest.fixture
def release_in_hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Sae:
    """A hand-made 768-wide SAE where the hub cache would hold the release's first SAE."""
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    entry = get_pretrained_saes_directory()[RELEASE]
    assert (entry.repo_id, entry.saes_map[SAE_ID]) == (REPO_ID, REPO_PATH)

    hf_home = tmp_path / "hf-home"
    repo = hf_home / "hub" / ("models--" + REPO_ID.replace("/", "--"))
    cfg = SaeConfig(
        architecture="standard",
        d_in=768,
        d_sae=64,
        hook_name=SAE_ID,
        model_name="gpt2-small",
        normalize_activations="expected_average_only_in",
    )
    sae = Sae(cfg, random_tensors("standard", seed=70, d_in=768, d_sae=64))
    save_sae(sae, repo / "snapshots" / FAKE_COMMIT / REPO_PATH)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(FAKE_COMMIT)
    go_offline(monkeypatch, hf_home)
    return sae


def test_resolve_pretrained_finds_the_release_in_the_offline_cache(release_in_hub_cache):
    folder = resolve_pretrained(RELEASE, SAE_ID)
    assert folder.name == REPO_PATH and (folder / "cfg.json").is_file()

    overrides = pretrained_cfg_overrides(RELEASE, SAE_ID)
    assert overrides["model_from_pretrained_kwargs"] == {"center_writing_weights": True}
    factor = overrides["norm_scaling_factor"]
    assert factor == pytest.approx(1.049317316132615)

    ours = load_pretrained(RELEASE, SAE_ID)
    assert ours.cfg.norm_scaling_factor == factor
    assert ours.cfg.model_from_pretrained_kwargs == {"center_writing_weights": True}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = SAE.from_pretrained(RELEASE, SAE_ID, device="cpu")  # folds the factor
    x = activations(seed=71, d_in=768)
    f = assert_same(ours, theirs, x)
    assert 0.1 < (f > 0).float().mean() < 0.9


def test_resolve_pretrained_errors_are_one_line(release_in_hub_cache):
    cases = {
        ("no-such-release", SAE_ID): "unknown SAE release 'no-such-release'",
        (RELEASE, "blocks.99.hook_mlp_out"): "has no SAE 'blocks.99.hook_mlp_out'",
        # Gemma Scope ships npz-derived files that SAELens converts; not this format.
        ("gemma-scope-2b-pt-res-canonical", "layer_0/width_16k/canonical"): "'gemma_2' format",
        # In the directory and SAELens format, but absent from the (offline) cache.
        ("gpt2-small-res-jb", "blocks.0.hook_resid_pre"): "cannot fetch blocks.0.hook_resid_pre/",
    }
    for (release, sae_id), expected in cases.items():
        with pytest.raises(SaeLoadError) as err:
            resolve_pretrained(release, sae_id)
        assert expected in str(err.value) and "\n" not in str(err.value), str(err.value)
