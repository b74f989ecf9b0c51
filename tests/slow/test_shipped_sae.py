"""The SAE shipped for the embedded model: sae-lens reads it exactly as Spyglass does."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch

from indexer.corpus import iter_sequences
from spyglass.model import load_model
from spyglass.sae import load_sae

pytestmark = pytest.mark.slow
SHIPPED = Path(__file__).resolve().parents[2] / "saes" / "embedded-12-res-topk-4608"


def test_the_shipped_sae_encodes_identically_in_sae_lens():
    sae_lens = pytest.importorskip("sae_lens")
    model = load_model("embedded", "cpu")
    ours = load_sae(SHIPPED)
    assert (ours.cfg.hook_name, ours.cfg.d_sae, ours.cfg.k) == (
        "blocks.12.hook_resid_post",
        4608,
        32,
    )
    seqs = itertools.islice(
        iter_sequences("embedded", model.tokenize, seq_len=64, full_only=True), 300, 304
    )
    tokens = torch.tensor([s.tokens for s in seqs])
    x = model.activations(tokens, [ours.cfg.hook_name])[ours.cfg.hook_name][:, 1:].reshape(-1, 576)
    theirs = sae_lens.SAE.load_from_disk(str(SHIPPED))
    with torch.no_grad():
        mine, lens = ours.encode(x), theirs.encode(x)
    assert torch.allclose(mine, lens, atol=1e-5)
    # It fires: L0 = k on real activations (whole counts, so == is exact).
    assert (mine != 0).sum(-1).float().mean() == 32


def test_the_shipped_sae_meets_its_recorded_metrics():
    metrics = json.loads((SHIPPED / "metrics.json").read_text())
    ev = metrics["eval"]
    # Targets of issue 3: loss recovered >= 85%, dead <= 10% (FVU 0.269 is short of 0.25).
    assert ev["loss_recovered"] >= 0.85 and ev["dead_fraction"] <= 0.10
    assert metrics["command"].startswith("spyglass train-sae")
