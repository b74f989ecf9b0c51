"""Attribution patching of transcoder latents on the tiny model: a latent is read at the
MLP's normalised input and acts at the MLP's output, so its gradient is taken there and
its patch is made there. Checked against autograd on a fresh TransformerLens run (the
latents as a leaf added at the output hook) and against patching each latent by hand."""

from __future__ import annotations

import pytest
import torch
from index_checks import fresh_hooked

from spyglass.model import load_model
from spyglass.patching import attribution_patching
from spyglass.sae import Sae, SaeConfig
from spyglass.sources import transcoder_source

D, LATENTS, K, LAYER, SKIP = 16, 24, 6, 0, 1
HOOK_IN, HOOK_OUT = f"blocks.{LAYER}.ln2.hook_normalized", f"blocks.{LAYER}.hook_mlp_out"


@pytest.fixture(scope="module")
def setup(tiny_model_dir):
    model = load_model(str(tiny_model_dir), "cpu")
    g = torch.Generator().manual_seed(1)
    cfg = SaeConfig(architecture="topk_skip_transcoder", d_in=D, d_sae=LATENTS, d_out=D,
                    hook_name=HOOK_IN, hook_name_out=HOOK_OUT, apply_b_dec_to_input=False,
                    k=K)  # fmt: skip
    tc = Sae(cfg, {"W_enc": torch.randn(D, LATENTS, generator=g) / 4,
                   "b_enc": torch.randn(LATENTS, generator=g) / 10,
                   "W_dec": torch.randn(LATENTS, D, generator=g) / 2,
                   "b_dec": torch.zeros(D),
                   "W_skip": torch.randn(D, D, generator=g) / 8})  # fmt: skip
    source = transcoder_source(tc, "unused", LAYER)
    clean = model.tokenize("the quick brown fox jumps over the lazy dog near the river")[:10]
    corrupt = list(clean)
    corrupt[2], corrupt[5] = corrupt[5], corrupt[2]
    return model, tc, source, clean, corrupt, clean[-1], clean[3]


def _metric(logits, target, other):
    return logits[0, -1, target] - logits[0, -1, other]


def test_transcoder_latents_against_autograd_and_hand_patches(setup, tiny_model_dir):
    model, tc, source, clean, corrupt, target, other = setup
    r = attribution_patching(model, [source], clean, corrupt, target, other, skip_first=SKIP,
                             heads=False, verify=10_000)  # fmt: skip
    hooked = fresh_hooked(tiny_model_dir)
    for p in hooked.parameters():
        p.requires_grad_(False)
    store = {}

    def latents(x):
        f = tc.encode(x).clone()
        f[:SKIP] = 0
        return f

    def read(act, hook):
        store["x"] = act[0].detach()

    def leaf(act, hook):  # the latents as a leaf whose gradient is taken at the output
        f = latents(store["x"]).requires_grad_(True)
        store["f"] = f
        return act + ((f - f.detach()) @ tc.W_dec)[None]

    embed = [("hook_embed", lambda act, hook: act.requires_grad_(True))]
    logits = hooked.run_with_hooks(
        torch.tensor([clean]), fwd_hooks=embed + [(HOOK_IN, read), (HOOK_OUT, leaf)]
    )
    m_clean = _metric(logits, target, other)
    m_clean.backward()
    f_clean, grad = store["f"].detach(), store["f"].grad
    with torch.no_grad():
        _, cache = hooked.run_with_cache(torch.tensor([corrupt]))
    delta = latents(cache[HOOK_IN][0]) - f_clean
    torch.testing.assert_close(
        r.estimates[source.name], (delta * grad).sum(0), rtol=1e-4, atol=1e-5
    )
    assert len(r.patched) > 5
    for (_, unit), value in r.patched.items():

        def patch(act, hook, unit=unit):
            return act + (delta[:, unit, None] * tc.W_dec[unit])[None]

        with torch.no_grad():
            out = hooked.run_with_hooks(torch.tensor([clean]), fwd_hooks=[(HOOK_OUT, patch)])
        expect = float(_metric(out, target, other) - m_clean.detach())
        assert value == pytest.approx(expect, rel=1e-3, abs=1e-4), unit
