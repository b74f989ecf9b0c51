"""Transcoder latents indexed as units: statistics against brute force over a fresh
TransformerLens run, their pages, and steering that edits the MLP output only."""

from __future__ import annotations

import random
from dataclasses import replace

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
)
from tiny_transcoders import SOURCES, index_tiny_set, train_tiny_set

import cli
from app.main import create_app
from spyglass.model import load_model
from spyglass.model.steering import steer_hooks
from spyglass.settings import Settings
from spyglass.sources import transcoder_sources
from spyglass.transcoders import load_transcoders


@pytest.fixture(scope="module")
def tc_dir(tiny_index, tmp_path_factory):
    out = train_tiny_set(tiny_index, tmp_path_factory.mktemp("tc") / "tiny-tc", "saelens")
    args = ["eval-transcoders", str(out), "--model", str(tiny_index.model_dir)]
    args += ["--corpus", str(tiny_index.corpus_dir), "--seq-len", "16", "--sequences", "8"]
    assert cli.main(args + ["--loss-sequences", "4", "--device", "cpu"]) == 0
    return out


@pytest.fixture(scope="module")
def tc_index(tiny_index, tc_dir, tmp_path_factory):
    db = str(tmp_path_factory.mktemp("tc-index") / "index.db")
    return replace(tiny_index.config, db=index_tiny_set(tiny_index, tc_dir, db, "tinytc"))


def hand_latents(tc, x: torch.Tensor) -> torch.Tensor:
    """The TopK transcoder's encode written out: k largest pre-activations, sign kept."""
    t = tc.tensors
    pre = x @ t["W_enc"] + t["b_enc"]
    top = pre.topk(tc.cfg.k, dim=-1)
    return torch.zeros_like(pre).scatter(-1, top.indices, top.values)


def brute_force(tc_dir, tiny_model_dir, stored, layer: int) -> torch.Tensor:
    """Latents [S, T, 24] of layer ``layer``'s transcoder on a fresh, unpadded TL run at
    its input hook; position 0 reads 0 and padding NaN (the normalised input is never a
    massive activation, so the norm rule leaves every row in)."""
    tc = load_transcoders(tc_dir)[layer]
    hook = f"blocks.{layer}.ln2.hook_normalized"
    acts = fresh_run(fresh_hooked(tiny_model_dir), stored.token_lists(), [hook])[hook]
    real = ~acts.isnan().any(-1)
    with torch.no_grad():
        f = hand_latents(tc, acts.nan_to_num(0))
    f[:, 0] = 0
    f[~real] = float("nan")
    return f


@pytest.fixture(scope="module")
def tc_dense_index(tiny_index, tc_dir, tmp_path_factory):
    """The set indexed as the default rule indexes a transcoder: dense (24 latents, k=3),
    with its windows in memory and sampled correlations, as neurons are."""
    db = str(tmp_path_factory.mktemp("tc-dense") / "index.db")
    return replace(
        tiny_index.config,
        db=index_tiny_set(tiny_index, tc_dir, db, "tinytc", log_below_density=1 / 64),
        log_below_density=1 / 64,
    )


@pytest.mark.parametrize("path", ["logged", "dense"])
def test_transcoder_statistics_equal_brute_force(path, request, tc_dir, tiny_model_dir):
    index = request.getfixturevalue("tc_index" if path == "logged" else "tc_dense_index")
    stored = read_index(index.db, "tinytc")
    kinds = {s.name: (s.kind, s.layer) for s in stored.sources}
    assert [kinds[n] for n in SOURCES] == [("transcoder", 0), ("transcoder", 1)]
    # read_index keys units by layer: the MLP source and layer 1's transcoder share layer 1,
    # so check layer 0's transcoder, which is alone on its layer.
    latents = brute_force(tc_dir, tiny_model_dir, stored, 0)
    check_layer_statistics(stored, 0, latents, skip_first=1, atol=1e-5, zero_tol=1e-6)
    for unit in random.Random(3).sample(range(24), 6):
        check_example_windows(
            stored.examples[0][unit], latents[:, :, unit], before=4, after=2, skip_first=1,
            atol=1e-5,
        )  # fmt: skip
    assert sum(len(e) for e in stored.examples[0]) > 24
    # Intervals: each of the 10 bins of (0, max] counts the fresh run's tokens in it, and
    # its samples are fresh values inside it.
    from spyglass import storage

    engine = storage.make_engine(index.db)
    with engine.connect() as conn:
        sid = next(s.id for s in stored.sources if s.name == SOURCES[0])
        samples = [storage.get_samples(conn, sid, u) for u in range(24)]
    engine.dispose()
    tol, checked = 1e-6, 0
    for u, unit in enumerate(stored.units[0]):
        values = latents[:, 1:, u].reshape(-1)
        values = values[~values.isnan()]
        if unit.max_act <= 0:
            continue
        for k, (lo, hi, count) in enumerate(unit.stats.intervals):
            inside = int(((values > lo + tol) & (values <= hi - tol)).sum())
            near = int(((values - lo).abs() <= tol).sum() + ((values - hi).abs() <= tol).sum())
            assert inside <= count <= inside + near, (u, k)
            for smp in samples[u].get(k, []):
                assert latents[smp.sequence_id, smp.position, u].item() == pytest.approx(
                    smp.value, abs=1e-5
                )
                assert lo - 1e-5 < smp.value <= hi + 1e-5
                checked += 1
    assert checked > 24
    # Pearson by brute force: a logged source's over every token (position 0 aside), a
    # dense one's over the sampled tokens, as neurons' (which tells the two paths apart).
    check_latent_correlations(
        stored, 0, latents, None if path == "logged" else index.correlation_rate
    )


@pytest.fixture(scope="module")
def client(tc_index):
    with TestClient(create_app(Settings(db=tc_index.db))) as c:
        yield c


def test_transcoder_latent_pages(client, tc_dir, tiny_model_dir):
    src = SOURCES[0]
    data = client.get(f"/tinytc/{src}/5.json").json()
    assert data["kind"] == "transcoder" and data["hook"] == "blocks.0.ln2.hook_normalized"
    info = client.get(f"/tinytc/{src}.json").json()["source"]["info"]
    assert info["hook_out"] == "blocks.0.hook_mlp_out"
    assert info["metrics"]["eval"]["tokens"] > 0  # this layer's row of eval-transcoders
    tc = load_transcoders(tc_dir)[0]
    w_u = torch.load(tiny_model_dir / "state_dict.pt", weights_only=True)["unembed.W_U"]
    assert_top([t["token_id"] for t in data["logits_top"]], tc.W_dec[5] @ w_u, atol=1e-5)
    # Aligned neurons: the replaced MLP's own, by cosine of W_out rows to the decoder row.
    state = torch.load(tiny_model_dir / "state_dict.pt", weights_only=True)
    w_out = torch.nn.functional.normalize(state["blocks.0.mlp.W_out"], dim=1)
    cos = w_out @ torch.nn.functional.normalize(tc.W_dec[5], dim=0)
    aligned = data["aligned_neurons"]
    assert all(n["url"].startswith("/tinytc/0-mlp/") for n in aligned) or not aligned
    if aligned:
        assert_top([int(n["url"].rsplit("/", 1)[1]) for n in aligned], cos, atol=1e-5)
    html = client.get(f"/tinytc/{src}/5").text
    assert "latent 5" in html and "W_dec row @ W_U" in html


def test_live_activations_read_the_input_hook(client, tc_dir, tiny_model_dir):
    model = load_model(str(tiny_model_dir), "cpu")
    prompt = "the quick brown fox"
    ids = model.encode_prompt(prompt)
    hook = "blocks.0.ln2.hook_normalized"
    x = model.activations(torch.tensor([ids]), [hook])[hook][0]
    expect = hand_latents(load_transcoders(tc_dir)[0], x)[:, 5]
    expect[0] = 0
    got = client.post(f"/api/tinytc/{SOURCES[0]}/5/activations", json={"prompt": prompt}).json()
    assert [t["value"] for t in got["tokens"]] == pytest.approx(expect.tolist(), abs=1e-5)


@pytest.mark.parametrize("clamp", [False, True])
def test_steering_edits_the_mlp_output_by_the_decoder_row(tc_dir, tiny_model_dir, clamp):
    model = load_model(str(tiny_model_dir), "cpu")
    (src,) = transcoder_sources(str(tc_dir), model, (0,))
    tc = src.sae
    ids = torch.tensor([model.encode_prompt("the quick brown fox jumps")])
    hooks = ["blocks.0.ln2.hook_normalized", "blocks.0.hook_mlp_out"]
    hooked = model._tl
    clean = {}
    hooked.run_with_hooks(
        ids, fwd_hooks=[(h, lambda a, hook: clean.__setitem__(hook.name, a.clone())) for h in hooks]
    )
    steer = src.steer(5, 2.5, clamp=clamp)
    assert steer.hook == "blocks.0.hook_mlp_out"  # the output, never the input
    seen = {}
    edits = steer_hooks([steer], lambda act, s: s.apply(act))
    keep = [(h, lambda a, hook: seen.__setitem__(hook.name, a.clone())) for h in hooks]
    hooked.run_with_hooks(ids, fwd_hooks=edits + keep)
    assert torch.equal(seen["blocks.0.ln2.hook_normalized"], clean["blocks.0.ln2.hook_normalized"])
    out = clean["blocks.0.hook_mlp_out"]
    if clamp:
        now = hand_latents(tc, clean["blocks.0.ln2.hook_normalized"][0])[:, 5]
        delta = (2.5 - now).unsqueeze(-1) * tc.W_dec[5]
        torch.testing.assert_close(
            seen["blocks.0.hook_mlp_out"][0], out[0] + delta, atol=1e-5, rtol=0
        )
    else:
        # Exact: the steered output is the clean one plus 2.5 x W_dec[5], at every position.
        assert torch.equal(seen["blocks.0.hook_mlp_out"], out + 2.5 * tc.W_dec[5])


def test_the_eval_reports_every_layer(tc_dir):
    import json

    ev = json.loads((tc_dir / "metrics.json").read_text())["eval"]
    assert sorted(ev["layers"]) == ["0", "1"]
    for row in ev["layers"].values():
        assert 0 <= row["fvu"] < 1.5 and 0 < row["l0"] <= 3 and row["kl"] >= 0
    assert ev["all_layers"]["kl"] >= 0 and ev["loss_tokens"] > 0


def test_transcoder_latents_are_explained_searched_and_labelled(tc_index, tmp_path):
    from index_checks import copy_index

    from cli.parser import main as cli_main
    from spyglass import storage

    db = copy_index(tc_index.db, tmp_path)
    assert cli_main(["explain", "--db", db, "--model", "tinytc", "--sources", SOURCES[1]]) == 0
    engine = storage.make_engine(db)
    with engine.connect() as conn:
        m = storage.get_model(conn, "tinytc")
        src = next(s for s in storage.list_sources(conn, m.id) if s.name == SOURCES[1])
        labels = storage.unit_labels(conn, src.id)
    engine.dispose()
    assert len(labels) > 12  # the latents that fire get a token pattern
    unit, text = sorted(labels.items())[0]
    word = storage.search_terms(text.split(";")[0])[0]
    with TestClient(create_app(Settings(db=db)), client=("127.0.0.1", 50000)) as c:
        page = c.get(f"/tinytc/{SOURCES[1]}/{unit}.json").json()
        assert page["explanations"][0]["text"] == text
        hits = c.get("/tinytc/search.json", params={"q": word, "source": SOURCES[1]}).json()
        assert (SOURCES[1], unit) in [(h["source"], h["index"]) for h in hits["hits"]]
        posted = c.post(
            f"/api/tinytc/{SOURCES[1]}/{unit}/labels",
            json={"text": "a person's label", "author": "tester"},
        )
        assert posted.status_code == 201
        texts = [
            e["text"] for e in c.get(f"/tinytc/{SOURCES[1]}/{unit}.json").json()["explanations"]
        ]
        assert "a person's label" in texts
