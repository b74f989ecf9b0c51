"""Nothing a person made is lost on SQLite: labels and LLM explanations outlive re-indexing
under the same name, labels on a dropped source are kept and reported, and ``spyglass
labels export`` then ``import`` round-trips (the scenario: tests/labels_kept.py; the same
on PostgreSQL in tests/postgres/test_postgres_labels.py)."""

from __future__ import annotations

from dataclasses import replace

import labels_kept
from tiny_settings import tiny_config

from indexer.pipeline import build_index


def test_labels_and_explanations_outlive_reindexing(tiny_index, tmp_path, capsys):
    cfg = tiny_config(tiny_index.model_dir, tiny_index.corpus_dir, tmp_path / "lab.db", name="lab")
    backup = labels_kept.run(cfg, tmp_path, capsys)
    elsewhere = replace(cfg, db=str(tmp_path / "elsewhere.db"))
    build_index(elsewhere)
    labels_kept.import_into(elsewhere.db, backup, capsys)
