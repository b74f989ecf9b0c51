"""Nothing a person made is lost on PostgreSQL: the scenario of tests/labels_kept.py (labels
and LLM explanations through re-indexing, a dropped source, export and import), and the
grants a server needs to take labels (docs/deploy.md)."""

from __future__ import annotations

from dataclasses import replace

import labels_kept
import psycopg
import pytest
from fastapi.testclient import TestClient
from tiny_settings import tiny_config

from app.main import create_app
from indexer.pipeline import build_index
from spyglass.settings import Settings

pytestmark = pytest.mark.postgres


def test_labels_and_explanations_outlive_reindexing(postgres_server, tiny_index, tmp_path, capsys):
    db = postgres_server.create_database("lab")
    cfg = tiny_config(tiny_index.model_dir, tiny_index.corpus_dir, db, name="lab")
    backup = labels_kept.run(cfg, tmp_path, capsys)
    elsewhere = replace(cfg, db=postgres_server.create_database("elsewhere"))
    build_index(elsewhere)
    labels_kept.import_into(elsewhere.db, backup, capsys)


def test_a_server_with_the_label_grants_takes_labels(postgres_server, tiny_index):
    """SELECT on the index and INSERT on explanations (with its id sequence): enough to
    label; nothing else is written."""
    db = postgres_server.create_database("grants")
    build_index(tiny_config(tiny_index.model_dir, tiny_index.corpus_dir, db, name="g"))
    postgres_server.psql(
        "grants",
        "CREATE ROLE labeller LOGIN; GRANT SELECT ON ALL TABLES IN SCHEMA public TO labeller; "
        "GRANT INSERT ON explanations TO labeller; "
        "GRANT USAGE ON SEQUENCE explanations_id_seq TO labeller",
    )
    url = f"postgresql+psycopg://labeller@127.0.0.1:{postgres_server.port}/grants"
    settings = Settings(db=url, write_token="k")
    with TestClient(create_app(settings)) as server:
        r = server.post(
            "/api/g/0-mlp/3/labels",
            json={"text": "a label", "author": "ada"},
            headers={"Authorization": "Bearer k"},
        )
        assert r.status_code == 201, r.text
        assert server.get("/g/0-mlp/3.json").json()["explanations"][0]["text"] == "a label"
        # While another transaction holds the table (as a re-index does, for minutes), a
        # label waits a few seconds (lock_timeout), then is told to come back.
        with psycopg.connect(db.replace("postgresql+psycopg", "postgresql")) as holder:
            holder.execute("LOCK TABLE explanations IN EXCLUSIVE MODE")
            busy = server.post(
                "/api/g/0-mlp/4/labels",
                json={"text": "later", "author": "ada"},
                headers={"Authorization": "Bearer k"},
            )
            holder.rollback()
        assert busy.status_code == 503 and busy.headers["Retry-After"] == "30", busy.text
        assert busy.json()["errors"][0]["rule"] == "busy"
