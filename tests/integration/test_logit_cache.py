"""Logit summaries kept across runs: a second index of the same model reads them from the
cache and writes the same database; a damaged entry, or a cache that cannot be written,
costs only the time to compute them."""

from __future__ import annotations

from dataclasses import replace

import pytest
from db_dump import assert_same_index
from tiny_settings import tiny_config

from indexer import logit_cache, summaries
from indexer.pipeline import build_index


@pytest.fixture
def cfg(tiny_model_dir, tiny_corpus_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("SPYGLASS_CACHE_DIR", str(tmp_path / "cache"))
    return tiny_config(tiny_model_dir, tiny_corpus_dir, tmp_path / "a.db")


def test_a_second_run_reads_the_summaries_and_writes_the_same_index(cfg, tmp_path, monkeypatch):
    build_index(cfg)
    entries = sorted(logit_cache.cache_dir().glob("*.npz"))
    assert len(entries) == 2  # one block per MLP layer of the tiny model

    def not_again(effects):
        raise AssertionError("the summaries were computed again")

    monkeypatch.setattr(summaries, "logit_summary_arrays", not_again)
    build_index(replace(cfg, db=str(tmp_path / "b.db")))
    assert_same_index(cfg.db, str(tmp_path / "b.db"))


def test_a_damaged_entry_is_computed_again(cfg, tmp_path):
    build_index(cfg)
    for entry in logit_cache.cache_dir().glob("*.npz"):
        entry.write_bytes(entry.read_bytes()[:100])
    build_index(replace(cfg, db=str(tmp_path / "b.db")))
    assert_same_index(cfg.db, str(tmp_path / "b.db"))


def test_a_cache_that_cannot_be_written_is_skipped(cfg, tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("SPYGLASS_CACHE_DIR", str(blocker))
    build_index(cfg)
    monkeypatch.setenv("SPYGLASS_CACHE_DIR", "off")
    assert logit_cache.cache_dir() is None
    build_index(replace(cfg, db=str(tmp_path / "b.db")))
    assert_same_index(cfg.db, str(tmp_path / "b.db"))
