"""spyglass transcoders against SAELens itself, both ways: Spyglass-written folders load
in SAELens with the same latents and outputs, SAELens-saved transcoders load here, and a
set trained here gives SAELens the latents it gives Spyglass on the tiny model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

sae_lens = pytest.importorskip("sae_lens")

from sae_lens import SAE  # noqa: E402
from sae_lens.saes import transcoder as sl  # noqa: E402
from sae_lens.saes.sae import SAEMetadata  # noqa: E402

from spyglass.sae import Sae, SaeConfig, load_sae, save_sae  # noqa: E402
from spyglass.transcoders import load_transcoders  # noqa: E402

D_IN, D_OUT, D_SAE = 16, 12, 40
ATOL = 1e-5
CLASSES = {
    "transcoder": (sl.Transcoder, sl.TranscoderConfig),
    "skip_transcoder": (sl.SkipTranscoder, sl.SkipTranscoderConfig),
    "jumprelu_transcoder": (sl.JumpReLUTranscoder, sl.JumpReLUTranscoderConfig),
    "jumprelu_skip_transcoder": (sl.JumpReLUSkipTranscoder, sl.JumpReLUSkipTranscoderConfig),
}


def tensors(arch: str, seed: int) -> dict[str, torch.Tensor]:
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
    return t


def theirs_out(theirs, x: torch.Tensor) -> torch.Tensor:
    """SAELens's prediction: ``forward`` (which, for skip transcoders, adds the skip)."""
    return theirs(x)


@pytest.mark.parametrize("arch", list(CLASSES))
def test_spyglass_written_transcoders_match_sae_lens(arch, tmp_path: Path):
    ours = Sae(
        SaeConfig(
            architecture=arch, d_in=D_IN, d_sae=D_SAE, d_out=D_OUT,
            hook_name="blocks.3.ln2.hook_normalized", hook_name_out="blocks.3.hook_mlp_out",
            apply_b_dec_to_input=False, model_name="tiny",
        ),
        tensors(arch, 1),
    )  # fmt: skip
    save_sae(ours, tmp_path / "tc")
    theirs = SAE.load_from_disk(str(tmp_path / "tc"))
    assert isinstance(theirs, CLASSES[arch][0])
    assert theirs.cfg.metadata.hook_name_out == "blocks.3.hook_mlp_out"
    x = torch.randn(50, D_IN, generator=torch.Generator().manual_seed(2)) * 2
    with torch.no_grad():
        torch.testing.assert_close(ours.encode(x), theirs.encode(x), atol=ATOL, rtol=0)
        torch.testing.assert_close(ours.reconstruct(x), theirs_out(theirs, x), atol=ATOL, rtol=0)


@pytest.mark.parametrize("arch", list(CLASSES))
def test_sae_lens_saved_transcoders_load_in_spyglass(arch, tmp_path: Path):
    cls, cfg_cls = CLASSES[arch]
    meta = SAEMetadata(
        hook_name="blocks.1.ln2.hook_normalized",
        hook_name_out="blocks.1.hook_mlp_out",
        model_name="tiny",
    )
    theirs = cls(cfg_cls(d_in=D_IN, d_sae=D_SAE, d_out=D_OUT, apply_b_dec_to_input=False,
                         metadata=meta))  # fmt: skip
    with torch.no_grad():
        for name, t in tensors(arch, 3).items():
            getattr(theirs, name).copy_(t)
    theirs.save_model(tmp_path / "theirs")
    ours = load_sae(tmp_path / "theirs")
    assert ours.cfg.is_transcoder and ours.cfg.hook_name_out == "blocks.1.hook_mlp_out"
    assert load_transcoders(tmp_path / "theirs").layers == [1]
    x = torch.randn(50, D_IN, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(ours.encode(x), theirs.encode(x), atol=ATOL, rtol=0)
        torch.testing.assert_close(ours.reconstruct(x), theirs_out(theirs, x), atol=ATOL, rtol=0)


def test_a_set_trained_here_gives_sae_lens_the_same_latents(
    tiny_model_dir, tiny_corpus_dir, tmp_path: Path
):
    import cli
    from spyglass.model import load_model

    out = tmp_path / "set"
    args = ["train-transcoders", "--model", str(tiny_model_dir), "--corpus", str(tiny_corpus_dir)]
    args += ["--out", str(out), "--d-sae", "24", "--activation", "jumprelu", "--skip"]
    args += ["--tokens", "600", "--batch-tokens", "60", "--seq-len", "16"]
    args += ["--holdout-sequences", "8", "--format", "saelens", "--device", "cpu"]
    assert cli.main(args) == 0
    model = load_model(str(tiny_model_dir), "cpu")
    ids = torch.tensor([model.encode_prompt("the quick brown fox jumps over the lazy dog")])
    ours = load_transcoders(out)
    for layer in (0, 1):
        theirs = SAE.load_from_disk(str(out / f"layer_{layer}"))
        assert isinstance(theirs, sl.JumpReLUSkipTranscoder)
        x = model.activations(ids, [theirs.cfg.metadata.hook_name])[theirs.cfg.metadata.hook_name][
            0
        ]
        with torch.no_grad():
            torch.testing.assert_close(ours[layer].encode(x), theirs.encode(x), atol=ATOL, rtol=0)
            torch.testing.assert_close(
                ours[layer].reconstruct(x), theirs_out(theirs, x), atol=ATOL, rtol=0
            )
