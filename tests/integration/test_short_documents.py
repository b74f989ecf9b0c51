"""A corpus of many short documents, of every length around a sequence's: every document is
indexed, none across another, and every statistic equals brute force over the real tokens.

The reference runs each sequence alone and unpadded through a HookedTransformer rebuilt
from the saved files (``index_checks.fresh_run``), so padding cannot reach it; the index
ran the same sequences padded on the right in batches of 5.
"""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from index_checks import (
    check_source,
    fresh_hooked,
    fresh_run,
    read_index,
    sae_latents,
    topk_encoder,
)
from sae_weights import random_sae_tensors
from transformers import AutoTokenizer

import cli
from app.main import create_app
from indexer.batches import token_keys
from indexer.pipeline import build_index
from spyglass.sae import Sae, SaeConfig, save_sae
from spyglass.settings import Settings

SEQ_LEN, BATCH = 16, 5
HOOK = "blocks.0.hook_resid_post"
D_SAE, K = 24, 4
WORDS = "the fox runs over river and owl sleeps in forest page link user server day"
BLANK = ["", "   ", "\n\t \n"]
SAE_SOURCE = f"0-res-topk-{D_SAE}"


def short_texts() -> list[str]:
    """40 documents of 1 to 40 words (1 word to several sequences), blanks among them."""
    rng, words = random.Random(7), WORDS.split()
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 40))) for _ in range(40)]
    for i, blank in zip((3, 17, 31), BLANK, strict=True):
        texts.insert(i, blank)
    return texts


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("short-docs") / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in short_texts()))
    return path


@pytest.fixture(scope="module")
def sae_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("short-sae") / "sae"
    cfg = SaeConfig(architecture="topk", d_in=16, d_sae=D_SAE, hook_name=HOOK, k=K)
    save_sae(Sae(cfg, random_sae_tensors("topk", 3, 16, D_SAE)), folder)
    return folder


@pytest.fixture(scope="module")
def index(tiny_index, corpus, sae_dir, tmp_path_factory):
    db = tmp_path_factory.mktemp("short-index") / "short.db"
    cfg = replace(
        tiny_index.config,
        corpus=str(corpus),
        db=str(db),
        name="short",
        seq_len=SEQ_LEN,
        batch_size=BATCH,
        layers=(1,),  # layer 0's slot in StoredIndex is the SAE's (it reads block 0)
        saes=(str(sae_dir),),
    )
    return cfg, build_index(cfg), read_index(str(db), "short")


@pytest.fixture(scope="module")
def doc_ids(tiny_model_dir) -> list[list[int]]:
    """Each document's token ids, by the tokenizer itself (blank documents: [])."""
    tok = AutoTokenizer.from_pretrained(tiny_model_dir / "tokenizer")
    return [
        tok(t, add_special_tokens=False)["input_ids"] if t.strip() else [] for t in short_texts()
    ]


@pytest.fixture(scope="module")
def fresh(tiny_model_dir, index) -> dict[str, torch.Tensor]:
    _, _, stored = index
    hooks = ["blocks.1.mlp.hook_post", HOOK]
    return fresh_run(fresh_hooked(tiny_model_dir), stored.token_lists(), hooks)


def test_every_document_is_indexed_whole_and_counted(index, doc_ids, corpus):
    cfg, report, stored = index
    bos = stored.sequences[0].tokens[0]
    body = SEQ_LEN - 1
    expected = [
        (f"{corpus.name}:{line}", start, [bos, *ids[start : start + body]])
        for line, ids in enumerate(doc_ids, 1)
        for start in range(0, len(ids), body)
    ]
    got = [(s.document, s.offset, s.tokens) for s in stored.sequences]
    assert sorted(got) == sorted(expected)
    lengths = [len(s.tokens) for s in stored.sequences]
    assert min(lengths) == 2 and max(lengths) == SEQ_LEN  # one word, and whole sequences
    assert len(set(lengths)) > 8, "lengths of every kind"
    assert report.n_documents == sum(bool(ids) for ids in doc_ids) == 40
    assert report.skipped == {"empty or whitespace only": 3}
    assert report.n_tokens == stored.model.n_tokens == sum(lengths)
    assert report.n_sequences == stored.model.n_sequences == len(expected)


def test_the_cli_says_what_it_read_and_skipped(tiny_model_dir, corpus, tmp_path, capsys):
    argv = ["index", "--model", str(tiny_model_dir), "--corpus", str(corpus)]
    argv += ["--db", str(tmp_path / "cli.db"), "--seq-len", str(SEQ_LEN), "--device", "cpu"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "read 40 documents -> " in out
    assert "skipped 3 documents (empty or whitespace only)" in out


def test_neuron_statistics_equal_brute_force_on_real_tokens(index, fresh):
    cfg, _, stored = index
    layer = 1
    acts = fresh[f"blocks.{layer}.mlp.hook_post"]  # [S, T, U], NaN past each sequence
    check_source(
        stored, layer, acts, before=cfg.window_before, after=cfg.window_after, skip_first=1,
        atol=1e-5, zero_tol=1e-6,
    )  # fmt: skip
    real = acts[:, 1:, :].reshape(-1, acts.shape[-1])
    real = real[~real.isnan().any(1)]
    for u, unit in enumerate(stored.units[layer]):
        positives = int((real[:, u] > 0).sum())
        hist = unit.stats.hist
        assert abs((sum(hist.counts) if hist else 0) - positives) <= 2, u
        if unit.stats.intervals:
            assert sum(c for *_, c in unit.stats.intervals) == sum(hist.counts)
    # Correlations over the sampled real tokens only: Pearson by brute force.
    seq_ids = torch.arange(acts.shape[0]).repeat_interleave(SEQ_LEN - 1)
    keys = token_keys(seq_ids * SEQ_LEN + torch.arange(1, SEQ_LEN).repeat(acts.shape[0]))
    picked = (keys.double() < 2.0**63 / 32) & ~acts[:, 1:, 0].reshape(-1).isnan()
    x = acts[:, 1:, :].reshape(-1, acts.shape[-1])[picked].double()
    corr = torch.corrcoef(x.t())
    for u in range(0, acts.shape[-1], 5):
        stats = stored.units[layer][u].stats
        assert stats.correlation_tokens == int(picked.sum()) > 0
        for j, r in stats.correlated:
            assert corr[u, j].item() == pytest.approx(r, abs=2e-3)


def test_latent_statistics_equal_brute_force_on_real_tokens(index, fresh, sae_dir):
    """The SAE's rule, stated: position 0 and rows over 10x the median norm of their batch's
    real tokens read 0; padding is in no median and no statistic."""
    cfg, _, stored = index
    weights = random_sae_tensors("topk", 3, 16, D_SAE)  # what sae_dir holds
    latents = sae_latents(fresh[HOOK], BATCH, topk_encoder(weights, K))  # the index's batches
    assert [(s.name, s.layer) for s in stored.sources] == [(SAE_SOURCE, 0), ("1-mlp", 1)]
    layer = 0
    check_source(
        stored, layer, latents, before=cfg.window_before, after=cfg.window_after, skip_first=1,
        atol=1e-5, zero_tol=1e-6,
    )  # fmt: skip
    assert sum(len(e) for e in stored.examples[layer]) > D_SAE  # latents do fire


def test_pages_show_only_real_tokens(index):
    cfg, _, stored = index
    short = min(range(len(stored.sequences)), key=lambda i: len(stored.sequences[i].tokens))
    with TestClient(create_app(Settings(db=cfg.db))) as client:
        page = client.get(f"/short/sequences/{short}.json")
        assert page.status_code == 200, page.text
        assert page.json()["token_ids"] == stored.sequences[short].tokens
        assert len(page.json()["tokens"]) == len(stored.sequences[short].tokens) == 2
        unit = client.get("/short/1-mlp/0.json").json()
        assert unit["n_tokens"] == stored.model.n_tokens - stored.model.n_sequences
        for ex in unit["examples"]:
            n = len(stored.sequences[ex["sequence_id"]].tokens)
            assert ex["position"] < n and len(ex["tokens"]) == len(ex["acts"])
