"""SAE latents indexed in the same pass as neurons, checked against brute force, and served."""

from __future__ import annotations

import random
from dataclasses import replace

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from index_checks import (
    assert_top,
    check_example_windows,
    check_latent_correlations,
    check_layer_statistics,
    fresh_hooked,
    fresh_run,
    read_index,
    sae_latents,
    topk_encoder,
)
from safetensors.torch import load_file

import cli
from app.main import create_app
from indexer.pipeline import build_index
from indexer.sae_training import TrainConfig, train_sae, write_trained_sae
from spyglass import storage
from spyglass.model import load_model
from spyglass.settings import Settings

HOOK = "blocks.0.hook_resid_post"
SOURCE = "0-res-topk-32"


@pytest.fixture(scope="module")
def sae_dir(tiny_model_dir, tiny_corpus_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("sae") / "tiny-sae"
    cfg = TrainConfig(
        model=str(tiny_model_dir), corpus=str(tiny_corpus_dir), hook=HOOK, out=str(out),
        d_sae=32, k=4, tokens=64 * 30, holdout_sequences=8, seq_len=16, model_batch=4,
        buffer_batches=2, batch_tokens=64, lr=3e-3, aux_k=8, dead_after_tokens=640,
        device="cpu",
    )  # fmt: skip
    model = load_model(str(tiny_model_dir), "cpu")
    write_trained_sae(cfg, train_sae(cfg, model, progress=False), "test")
    args = ["eval-sae", str(out), "--model", str(tiny_model_dir), "--corpus", str(tiny_corpus_dir)]
    assert cli.main(args + ["--seq-len", "16", "--sequences", "8", "--device", "cpu"]) == 0
    return out


@pytest.fixture(scope="module")
def sae_index(tiny_index, sae_dir, tmp_path_factory):
    db = tmp_path_factory.mktemp("sae-index") / "index.db"
    cfg = replace(tiny_index.config, db=str(db), name="tinysae", layers=(1,), saes=(str(sae_dir),))
    report = build_index(cfg)
    assert report.sources == ["1-mlp", SOURCE]
    return cfg


def brute_force_latents(sae_dir, hooked, stored, batch_size: int) -> torch.Tensor:
    """Latent activations [S, T, 32] computed here: a fresh TL run, the saved weights, and
    the indexer's stated rule (``index_checks.sae_latents``); NaN past each sequence's end."""
    encode = topk_encoder(load_file(sae_dir / "sae_weights.safetensors"), 4)
    return fresh_latents(hooked, stored, batch_size, encode)


def fresh_latents(hooked, stored, batch_size: int, encode) -> torch.Tensor:
    """``encode`` of the fresh, unpadded run at HOOK, under the indexer's rule over its
    batches of ``batch_size`` consecutive sequences."""
    acts = fresh_run(hooked, stored.token_lists(), [HOOK])[HOOK]  # [S, T, d], NaN padding
    return sae_latents(acts, batch_size, encode)


def test_latent_statistics_equal_brute_force(sae_index, sae_dir, tiny_model_dir):
    stored = read_index(sae_index.db, "tinysae")
    latents = brute_force_latents(sae_dir, fresh_hooked(tiny_model_dir), stored, 3)
    check_layer_statistics(stored, 0, latents, skip_first=1, atol=1e-5, zero_tol=1e-6)
    for unit in random.Random(42).sample(range(32), 8):
        check_example_windows(
            stored.examples[0][unit], latents[:, :, unit], before=4, after=2, skip_first=1,
            atol=1e-5,
        )  # fmt: skip
    assert sum(len(e) for e in stored.examples[0]) > 32  # latents do fire
    # Latent correlations use every token (position 0 aside): Pearson by brute force.
    check_latent_correlations(stored, 0, latents)


@pytest.fixture(scope="module")
def client(sae_index):
    with TestClient(create_app(Settings(db=sae_index.db))) as c:
        yield c


def test_latent_pages_and_logit_effect(client, sae_dir, tiny_model_dir):
    data = client.get(f"/tinysae/{SOURCE}/5.json").json()
    assert data["kind"] == "sae" and data["hook"] == HOOK
    w_dec = load_file(sae_dir / "sae_weights.safetensors")["W_dec"]
    w_u = torch.load(tiny_model_dir / "state_dict.pt", weights_only=True)["unembed.W_U"]
    effect = w_dec[5] @ w_u
    # The ranking up to ties within 1e-5 (the app's sums and these round apart by ~1e-7).
    assert len(data["logits_top"]) == 10
    assert_top([t["token_id"] for t in data["logits_top"]], effect, atol=1e-5)
    html = client.get(f"/tinysae/{SOURCE}/5").text
    assert "W_dec row @ W_U" in html and "latent 5" in html


def test_latent_neighbours_equal_brute_force_cosines(client, sae_dir, tiny_model_dir):
    w_dec = load_file(sae_dir / "sae_weights.safetensors")["W_dec"]
    state = torch.load(tiny_model_dir / "state_dict.pt", weights_only=True)
    unit = torch.nn.functional.normalize(w_dec, dim=1)
    data = client.get(f"/tinysae/{SOURCE}/7.json").json()
    sims = unit @ unit[7]
    sims[7] = -2
    expect = sims.topk(10)
    got = data["decoder_neighbours"]
    # Rankings of cosines (|cos| <= 1, rounding ~1e-7) up to ties within 1e-5.
    assert len(got) == 10 and all(n["url"].startswith(f"/tinysae/{SOURCE}/") for n in got)
    assert_top([int(n["url"].rsplit("/", 1)[1]) for n in got], sims, atol=1e-5)
    assert [n["value"] for n in got] == pytest.approx(expect.values.tolist(), abs=1e-4)
    # The hook reads layer 0's residual: the neurons of layer 0 write to it.
    w_out = torch.nn.functional.normalize(state["blocks.0.mlp.W_out"], dim=1)
    cos = w_out @ unit[7]
    best = cos.topk(10)
    aligned = data["aligned_neurons"]
    assert len(aligned) == 10 and all(n["url"].startswith("/tinysae/0-mlp/") for n in aligned)
    assert_top([int(n["url"].rsplit("/", 1)[1]) for n in aligned], cos, atol=1e-5)
    assert [n["value"] for n in aligned] == pytest.approx(best.values.tolist(), abs=1e-4)
    html = client.get(f"/tinysae/{SOURCE}/7").text
    assert 'id="decoder-neighbours"' in html and 'id="aligned-neurons"' in html


def test_sae_units_sort_by_share_of_l0(client):
    data = client.get(f"/tinysae/{SOURCE}.json?sort=l0&order=desc").json()
    shares = [u["l0_share"] for u in data["units"]]
    assert shares == sorted(shares, reverse=True) and shares[0] > 0
    html = client.get(f"/tinysae/{SOURCE}?sort=l0").text
    assert "share of L0" in html


def test_the_sae_source_page_shows_its_metrics(client):
    data = client.get(f"/tinysae/{SOURCE}.json").json()
    ev = data["source"]["info"]["metrics"]["eval"]
    assert 0 < ev["l0"] <= 4 and ev["tokens"] > 0
    html = client.get(f"/tinysae/{SOURCE}").text
    assert 'id="sae-metrics"' in html and f"{ev['loss_recovered'] * 100:.1f}%" in html
    assert 'id="sae-errors"' in html and ev["kl_spliced"] > 0 and ev["kl_epsilon_random"] > 0
    assert f"{ev['kl_ratio']:.2f}" in html and "ε-random" in html
    assert [s["name"] for s in client.get("/tinysae.json").json()["sources"]] == [
        "0-res-topk-32",
        "1-mlp",
    ]


def test_live_latent_activations_and_steering(client, sae_dir, tiny_model_dir):
    model = load_model(str(tiny_model_dir), "cpu")
    prompt = "the quick brown fox"
    ids = model.encode_prompt(prompt)
    x = model.activations(torch.tensor([ids]), [HOOK])[HOOK][0]
    w = load_file(sae_dir / "sae_weights.safetensors")
    pre = (x - w["b_dec"]) @ w["W_enc"] + w["b_enc"]
    top = pre.topk(4, dim=-1)
    expect = torch.zeros_like(pre).scatter(-1, top.indices, top.values.relu())[:, 7]
    expect[0] = 0  # position 0 reads 0, as in the index
    got = client.post(f"/api/tinysae/{SOURCE}/7/activations", json={"prompt": prompt}).json()
    assert [t["value"] for t in got["tokens"]] == pytest.approx(expect.tolist(), abs=1e-5)
    base = {"prompt": prompt, "max_new_tokens": 6, "temperature": 0}
    zero = client.post(f"/api/tinysae/{SOURCE}/7/steer", json=base | {"coefficient": 0}).json()
    assert zero["steered"] == zero["default"]
    pushed = client.post(f"/api/tinysae/{SOURCE}/7/steer", json=base | {"coefficient": 300}).json()
    assert pushed["steered"] != pushed["default"]


def test_an_sae_saved_by_sae_lens_itself_indexes(tiny_index, tiny_model_dir, tmp_path):
    sae_lens = pytest.importorskip("sae_lens")
    from sae_lens.saes.sae import SAEMetadata

    cfg = sae_lens.JumpReLUSAEConfig(
        d_in=16,
        d_sae=24,
        metadata=SAEMetadata(hook_name=HOOK, model_name="tiny", prepend_bos=True),
    )
    theirs = sae_lens.JumpReLUSAE(cfg)
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        theirs.W_enc.copy_(torch.randn(16, 24, generator=gen))
        theirs.W_dec.copy_(torch.randn(24, 16, generator=gen) / 4)
        theirs.threshold.copy_(torch.rand(24, generator=gen))
    theirs.save_model(tmp_path / "jumprelu")

    db = tmp_path / "jr.db"
    saes = (str(tmp_path / "jumprelu"),)
    report = build_index(replace(tiny_index.config, db=str(db), name="jr", layers=(), saes=saes))
    assert report.sources == ["0-res-jumprelu-24"]
    stored = read_index(str(db), "jr")
    # The index's batches of 3, for the median-norm rule; sae-lens's own encode.
    latents = fresh_latents(fresh_hooked(tiny_model_dir), stored, 3, theirs.encode)
    check_layer_statistics(stored, 0, latents, skip_first=1, atol=1e-5, zero_tol=1e-6)


def test_steering_latents_and_neurons_together(client, sae_dir):
    units = [
        {"source": SOURCE, "index": 5, "mode": "add", "strength": 0.0},
        {"source": "1-mlp", "index": 7, "mode": "add", "strength": 0.0},
    ]
    body = {"prompt": "the fox", "units": units, "max_new_tokens": 8, "temperature": 0}
    data = client.post("/api/tinysae/steer", json=body).json()
    assert data["steered"] == data["default"]
    units[0] |= {"mode": "clamp", "strength": 50.0}
    clamped = client.post("/api/tinysae/steer", json=body).json()
    assert clamped["steered"] != clamped["default"]


def test_latent_clamp_adds_the_decoder_row_times_the_difference(sae_dir):
    from spyglass.sae import load_sae
    from spyglass.sources import Source

    sae = load_sae(sae_dir)
    src = Source(SOURCE, "sae", 0, HOOK, 32, sae, str(sae_dir))
    x = torch.randn(2, 5, sae.cfg.d_in, generator=torch.Generator().manual_seed(0)) * 3
    clamp = src.steer(5, 2.5, clamp=True)
    before = sae.encode(x.reshape(-1, sae.cfg.d_in))[:, 5].reshape(2, 5)
    delta = clamp.apply(x.clone()) - x
    expect = (2.5 - before).unsqueeze(-1) * sae.W_dec[5]
    torch.testing.assert_close(delta, expect, atol=1e-5, rtol=1e-5)


def test_ablating_a_latent_that_never_fires_changes_nothing(sae_index, sae_dir, tiny_model_dir):
    from spyglass.sae import load_sae
    from spyglass.sources import Source

    stored = read_index(sae_index.db, "tinysae")
    latents = brute_force_latents(sae_dir, fresh_hooked(tiny_model_dir), stored, 3)
    model = load_model(str(tiny_model_dir), "cpu")
    sae = load_sae(sae_dir)
    src = Source(SOURCE, "sae", 0, HOOK, 32, sae, str(sae_dir))
    # A sequence and a latent that is zero at every position of it (raw encode included).
    # Exact by construction: the latent is found in the model's own forward pass, whose
    # activations at the hook the clamp sees to the bit (same code, same input), so the
    # clamp adds (0 - 0) x its decoder row, and x + 0 is x. (A fresh TransformerLens run
    # may round apart, and a latent at the top-k's edge could fire in one and not the other.)
    ids = stored.sequences[0].tokens
    acts = model.activations(torch.tensor([ids]), [HOOK])[HOOK][0]
    raw = sae.encode(acts)
    quiet = next(u for u in range(32) if (raw[:, u] == 0).all())
    loud = int(latents[0].amax(0).argmax())
    clean = model.log_probs(ids)
    assert torch.equal(model.log_probs(ids, [src.steer(quiet, 0.0, clamp=True)]), clean)
    assert not torch.equal(model.log_probs(ids, [src.steer(loud, 0.0, clamp=True)]), clean)


def test_attribution_lists_latents_with_their_direct_effect(client, sae_dir, tiny_model_dir):
    from urllib.parse import quote

    text = "the quick brown fox jumps over the lazy dog"
    data = client.get(f"/tinysae/attribution.json?text={quote(text)}").json()
    hooked = fresh_hooked(tiny_model_dir)
    ids = load_model(str(tiny_model_dir), "cpu").encode_prompt(text)
    with torch.inference_mode():
        logits, cache = hooked.run_with_cache(torch.tensor([ids]))
    pos = len(ids) - 1
    target = int(logits[0, pos].argmax())
    w = load_file(sae_dir / "sae_weights.safetensors")
    x = cache[HOOK][0, pos].clone()
    pre = (x - w["b_dec"]) @ w["W_enc"] + w["b_enc"]
    top = pre.topk(4)
    # The app's run and this one round apart (~1e-6 here), so they pick the same target
    # and the same 4 latents only if neither choice is that close: check it is not.
    first, second = logits[0, pos].topk(2).values
    assert first - second > 1e-4, "the top prediction is a near-tie"
    assert top.values[-1] - pre.topk(5).values[-1] > 1e-4, "the 4th latent is a near-tie"
    f = torch.zeros_like(pre).scatter(0, top.indices, top.values.relu())
    direction = (hooked.W_U[:, target] * hooked.ln_final.w).detach()
    scale = cache["ln_final.hook_scale"][0, pos].clone()
    centred = w["W_dec"] - w["W_dec"].mean(1, keepdim=True)
    expect = f * (centred @ direction) / scale
    latents = [p for p in data["latents"] if p["label"].startswith(SOURCE)]
    assert latents, "some latent fires at the last token"
    for p in latents:
        i = int(p["label"].split("/")[1])
        assert p["value"] == pytest.approx(expect[i].item(), abs=1e-4)
        assert p["url"] == f"/tinysae/{SOURCE}/{i}"
    best = expect.abs().topk(len(latents)).indices.tolist()
    assert sorted(int(p["label"].split("/")[1]) for p in latents) == sorted(best)


@pytest.mark.parametrize("source", ["1-mlp", SOURCE])
def test_explain_negatives_measure_units_as_the_indexer_did(sae_index, source):
    """The LLM scorers' negatives are judged silent by a forward pass of their own
    (``indexer.explain.negatives``): on the stored top examples' windows it reads each
    unit's stored activations back."""
    from indexer.explain import negatives

    engine = storage.make_engine(sae_index.db)
    with engine.connect() as conn:
        m = storage.get_model(conn, sae_index.name)
        s = storage.get_source(conn, m.id, source)
        seqs = storage.sequence_tokens(conn, m.id)
        packed = list(storage.iter_packed_examples(conn, s.id, 0, s.n_units, interval=False))
    engine.dispose()
    model = load_model(m.spec, "cpu")
    recompute = negatives.Recompute(model, negatives.source_for(s, model), m.skip_first, seqs)
    recompute.run({int(f[2]) for p in packed for f in p.fields}, [p.unit for p in packed])
    checked = 0
    for p in packed:
        ends = np.cumsum(p.fields[:, 5])
        for i, (_interval, _rank, seq, _pos, start, length) in enumerate(p.fields.tolist()):
            got = recompute.window(p.unit, seq, start, length).acts
            want = p.acts[ends[i] - length : ends[i]].astype(np.float64)
            keep = np.isfinite(got)  # the first skip_first tokens are left out
            np.testing.assert_allclose(got[keep], want[keep], rtol=1e-3, atol=1e-4)
            checked += int(keep.sum())
    assert checked > 100
