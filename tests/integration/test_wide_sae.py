"""A wide SAE on the tiny model: neighbours without any [U, U] state, checked against brute
force; shards by tokens and by units merged to the single run; the memory plan."""

from __future__ import annotations

import random
import subprocess
import sys
from dataclasses import replace

import pytest
import torch
from db_dump import assert_same_index
from index_checks import (
    fresh_hooked,
    fresh_run,
    read_index,
    sae_latents,
    save_random_topk_sae,
    topk_encoder,
)
from tiny_settings import tiny_config

from indexer import memory
from indexer.config import plan_index
from indexer.pipeline import build_index, merge_shards
from spyglass import storage

HOOK = "blocks.1.hook_resid_post"
WIDTH, K = 3000, 6
SOURCE = f"1-res-topk-{WIDTH}"


@pytest.fixture(scope="module")
def wide_sae(tmp_path_factory) -> tuple[str, dict[str, torch.Tensor]]:
    """A random TopK SAE of 3,000 latents on a 16-wide residual stream."""
    out = tmp_path_factory.mktemp("wide-sae") / "sae"
    tensors = save_random_topk_sae(out, hook=HOOK, d_in=16, width=WIDTH, k=K, seed=5)
    return str(out), tensors


@pytest.fixture(scope="module")
def wide_config(tiny_model_dir, tiny_corpus_dir, wide_sae, tmp_path_factory):
    db = tmp_path_factory.mktemp("wide") / "wide.db"
    return tiny_config(
        tiny_model_dir, tiny_corpus_dir, db, name="wide", layers=(1,), saes=(wide_sae[0],)
    )


@pytest.fixture(scope="module")
def wide_index(wide_config):
    build_index(wide_config)
    return wide_config.db


def test_wide_latent_neighbours_equal_brute_force(wide_index, wide_sae, tiny_model_dir):
    """Correlated latents (every real token but position 0), nearest decoder rows and
    aligned neurons, against torch.corrcoef and cosines of the weights."""
    stored = read_index(wide_index, "wide")
    units = latent_units(wide_index)
    hooked = fresh_hooked(tiny_model_dir)
    acts = fresh_run(hooked, stored.token_lists(), [HOOK])[HOOK]
    latents = sae_latents(acts, 3, topk_encoder(wide_sae[1], K))
    x = latents[:, 1:, :].reshape(-1, WIDTH).double()
    x = x[~x.isnan().any(1)]
    corr = torch.corrcoef(x.t())
    w_dec = wide_sae[1]["W_dec"].double()
    w_dec = w_dec / w_dec.norm(dim=1, keepdim=True)
    cos = w_dec @ w_dec.t()
    w_out = torch.cat([hooked.blocks[i].mlp.W_out.detach().double() for i in (0, 1)])
    aligned = w_dec @ (w_out / w_out.norm(dim=1, keepdim=True)).t()
    fired = 0
    for unit in random.Random(3).sample(range(WIDTH), 80):
        stats = units[unit].stats
        assert stats.correlation_tokens == x.shape[0]
        row = corr[unit].clone()
        row[unit] = float("nan")
        valid = sorted((v for v in row.tolist() if v == v), reverse=True)[:10]
        got = stats.correlated
        assert [r for _, r in got] == pytest.approx(valid, abs=1e-4), unit
        for j, r in got:
            assert corr[unit, j].item() == pytest.approx(r, abs=1e-4)
        fired += bool(valid)
        row = cos[unit].clone()
        row[unit] = -2
        near = row.topk(10).values.tolist()
        assert [c for _, c in stats.decoder] == pytest.approx(near, abs=1e-4)
        for j, c in stats.decoder:
            assert cos[unit, j].item() == pytest.approx(c, abs=1e-4)
        best = aligned[unit].topk(10).values.tolist()
        assert [c for *_, c in stats.neurons] == pytest.approx(best, abs=1e-4)
        for layer, neuron, c in stats.neurons:
            assert aligned[unit, layer * 64 + neuron].item() == pytest.approx(c, abs=1e-4)
    assert fired > 20  # most sampled latents fire, so their neighbours mean something


def latent_units(db: str) -> list[storage.UnitRow]:
    engine = storage.make_engine(db)
    try:
        with engine.connect() as conn:
            model = storage.get_model(conn, "wide")
            src = next(s for s in storage.list_sources(conn, model.id) if s.name == SOURCE)
            return [storage.get_unit(conn, src.id, u) for u in range(src.n_units)]
    finally:
        engine.dispose()


def test_shards_by_tokens_and_units_merge_to_the_single_run(wide_index, wide_config, tmp_path):
    """2 token shards x 3 slices of the units (neurons and latents), each run alone, then
    `merge`: the same database as one run, correlations to the bit."""
    for i in range(2):
        for j in range(3):
            cfg = replace(wide_config, db=str(tmp_path / "x.db"), shard=(i, 2), units=(j, 3))
            build_index(cfg)
    folders = sorted((tmp_path / "x.db.work").glob("*/shard-*"))
    assert len(folders) == 6
    random.Random(1).shuffle(folders)
    merge_shards(folders, db=str(tmp_path / "merged.db"), progress=False)
    assert_same_index(wide_index, str(tmp_path / "merged.db"))


def test_merge_refuses_a_missing_unit_slice(wide_config, tmp_path):
    for j in (0, 2):
        build_index(replace(wide_config, db=str(tmp_path / "x.db"), units=(j, 3)))
    folders = sorted((tmp_path / "x.db.work").glob("*/shard-*"))
    with pytest.raises(ValueError, match="for each of the 3 unit slices"):
        merge_shards(folders, db=str(tmp_path / "m.db"), progress=False)


def test_a_plan_that_cannot_fit_is_refused_with_the_flag_that_fits(wide_config):
    """Under a budget between the slice's and the whole's need: refused, naming --units
    I/2; the run it names then fits."""
    plan = plan_index(wide_config)
    est = memory.estimate(plan, wide_config.tokens)
    assert est.state >= WIDTH * memory.unit_state_bytes(wide_config, sparse=True)
    budget = (est.resident + est.working + 0.6 * est.state) / memory.GB
    with pytest.raises(ValueError, match=r"--units I/2 \(about"):
        build_index(replace(wide_config, memory=budget))
    memory.check(plan_index(replace(wide_config, memory=budget, units=(1, 2))))


def test_cli_prints_the_estimate_and_refuses_in_one_line(wide_config, tmp_path):
    args = [sys.executable, "-m", "cli", "index", "--model", wide_config.model]
    args += ["--corpus", wide_config.corpus, "--layers", "1", "--sae", wide_config.saes[0]]
    args += ["--seq-len", "16", "--db", str(tmp_path / "c.db"), "--tokens", "64"]
    done = subprocess.run([*args, "--memory", "0.01"], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith("spyglass: error: this index needs about")
    done = subprocess.run(args, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("memory: about ") and " GB available" in done.stdout
