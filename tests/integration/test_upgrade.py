"""An index written before labels outlived re-indexing keeps every label: its older
explanations table is upgraded in place (``spyglass upgrade``, or any command that
writes), and the demo rebuilds an outdated index around it."""

from __future__ import annotations

import sqlite3
from dataclasses import replace

import pytest
from fastapi.testclient import TestClient
from index_checks import copy_index

from app.main import create_app
from cli import main as spyglass
from cli.demo import _remove_outdated_demo_index
from indexer.pipeline import build_index
from spyglass import storage
from spyglass.settings import Settings

OLD_TABLE = """CREATE TABLE explanations (
    id INTEGER NOT NULL PRIMARY KEY, source_id INTEGER NOT NULL REFERENCES sources (id),
    unit INTEGER NOT NULL, method VARCHAR(40) NOT NULL, settings VARCHAR(64) NOT NULL,
    text TEXT NOT NULL, evidence TEXT, scores TEXT, explainer TEXT,
    created VARCHAR(40) NOT NULL)"""
"""The table as Spyglass wrote it up to b98dcb5."""


def older_index(db: str) -> None:
    """``db`` with its explanations table as an older Spyglass wrote it, holding a label."""
    con = sqlite3.connect(db)
    for name in ("insert", "delete", "update"):
        con.execute(f"DROP TRIGGER IF EXISTS explanations_fts_{name}")
    con.execute("DROP TABLE IF EXISTS explanations_fts")
    con.execute("DROP TABLE IF EXISTS explanations")
    con.execute(OLD_TABLE)
    (source_id,) = con.execute("SELECT id FROM sources WHERE name = '0-mlp'").fetchone()
    con.execute(
        "INSERT INTO explanations VALUES (41, ?, 3, 'human', '', 'fires on cats', NULL, NULL, "
        "'ada', '2026-11-30T10:00:00+00:00')",
        (source_id,),
    )
    con.commit()
    con.close()


def shown(db: str, slug: str) -> list[str]:
    with TestClient(create_app(Settings(db=db))) as client:
        hits = client.get(f"/{slug}/search.json", params={"q": "cats"}).json()["hits"]
        assert ("0-mlp", 3) in {(h["source"], h["index"]) for h in hits}  # full-text too
        explained = client.get(f"/{slug}/0-mlp/3.json").json()["explanations"]
        return [e["text"] for e in explained if e["method"] == "human"]


def test_spyglass_upgrade_keeps_every_label(tiny_index, tmp_path, capsys):
    db = copy_index(tiny_index.db, tmp_path)
    older_index(db)
    with pytest.raises(storage.OutdatedIndexError, match="spyglass upgrade"):
        storage.make_read_engine(db)
    assert spyglass(["upgrade", "--db", db]) == 0
    assert "upgraded: 1 labels and explanations kept" in capsys.readouterr().out
    assert shown(db, tiny_index.slug) == ["fires on cats"]
    assert spyglass(["upgrade", "--db", db]) == 0
    assert "nothing to upgrade" in capsys.readouterr().out
    build_index(replace(tiny_index.config, db=db))
    assert shown(db, tiny_index.slug) == ["fires on cats"]  # and through a re-index


def test_the_demo_rebuilds_an_outdated_index_around_its_labels(tiny_index, tmp_path):
    db = copy_index(tiny_index.db, tmp_path)
    older_index(db)
    con = sqlite3.connect(db)
    con.execute("ALTER TABLE units DROP COLUMN stats")  # and an index older still
    con.commit()
    con.close()
    _remove_outdated_demo_index(db)
    con = sqlite3.connect(db)
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    con.close()
    assert "units" not in tables and "explanations" in tables
    build_index(replace(tiny_index.config, db=db))
    assert shown(db, tiny_index.slug) == ["fires on cats"]
