"""Labels and explanations outlive re-indexing: one scenario, run on SQLite
(tests/integration/test_labels_kept.py) and on PostgreSQL (tests/postgres/).

Nothing is mocked: real indexes of the tiny model, labels posted through the server's API
with its write token, ``spyglass explain`` and ``spyglass labels`` run as the CLI runs
them, and every count read back from the database.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import select

from app.main import create_app
from cli import main as spyglass
from indexer.explain.run import explain_index
from indexer.pipeline import IndexConfig, build_index
from spyglass import storage
from spyglass.settings import Settings

TOKEN = "a-long-random-write-token"
LABELS = [("0-mlp", 3, "fires on cats"), ("0-mlp", 7, "closing brackets"), ("1-mlp", 2, "verbs")]


def rows(db: str, **where) -> list[dict]:
    """The explanations table's rows (every one, attached or not)."""
    engine = storage.make_engine(db)
    try:
        with engine.connect() as conn:
            q = select(storage.explanations)
            for name, value in where.items():
                q = q.where(storage.explanations.c[name] == value)
            return [dict(r._mapping) for r in conn.execute(q.order_by(storage.explanations.c.id))]
    finally:
        engine.dispose()


def created(db: str, slug: str) -> str:
    engine = storage.make_engine(db)
    try:
        with engine.connect() as conn:
            return storage.get_model(conn, slug).created
    finally:
        engine.dispose()


def page(db: str, slug: str, source: str, unit: int) -> list[dict]:
    with TestClient(create_app(Settings(db=db))) as client:
        r = client.get(f"/{slug}/{source}/{unit}.json")
        assert r.status_code == 200, r.text
        return r.json()["explanations"]


def post_labels(db: str, slug: str) -> None:
    with TestClient(create_app(Settings(db=db, write_token=TOKEN))) as client:
        for source, unit, text in LABELS:
            r = client.post(
                f"/api/{slug}/{source}/{unit}/labels",
                json={"text": text, "author": "ada"},
                headers={"Authorization": f"Bearer {TOKEN}"},
            )
            assert r.status_code == 201, r.text


def add_llm_explanation(db: str, slug: str, source: str) -> tuple[int, str]:
    """An LLM explanation as ``explain --explainer openai:`` stores it, with an endpoint
    score that cost calls, of the first unit whose token pattern simulation scores (its
    text, so that simulation can score it offline). Returns the unit and the text."""
    engine = storage.make_engine(db)
    try:
        with engine.begin() as conn:
            s = storage.get_source(conn, storage.get_model(conn, slug).id, source)
            unit, text = next(
                (e.unit, e.text)
                for e in storage.source_explanations(conn, s.id, 0, s.n_units)
                if "simulation_r" in e.scores
            )
            paid = {"detection": {"value": 0.9, "lo": 0.8, "hi": 1.0, "n": 10}}
            row = {"unit": unit, "method": "llm", "settings": "llm-settings", "text": text,
                   "explainer": "paid-llm", "scores": paid,
                   "evidence": {"model": "paid-llm"}}  # fmt: skip
            storage.add_explanations(conn, s.id, [row])
        return unit, text
    finally:
        engine.dispose()


def run(cfg: IndexConfig, tmp: Path, capsys) -> Path:
    """The whole scenario on ``cfg.db`` (an empty database), ``tmp`` a scratch folder.
    Returns the labels' backup (``spyglass labels export``)."""
    db, slug = cfg.db, cfg.name
    small = replace(cfg, tokens=400)
    build_index(small)
    explain_index(db, slug, progress=False)
    first = created(db, slug)
    post_labels(db, slug)
    llm_unit, llm_text = add_llm_explanation(db, slug, "1-mlp")
    n_patterns = len(rows(db, method="token-pattern"))
    assert n_patterns > 0

    # 1. The same name again, with more tokens, as a user adding data would.
    report = build_index(cfg)
    second = created(db, slug)
    assert second != first
    assert report.kept == [f"kept from earlier indexes: 3 labels, 1 LLM explanations, "
                           f"{n_patterns} token patterns"]  # fmt: skip
    for source, unit, text in LABELS:
        shown = page(db, slug, source, unit)
        assert shown[0]["method"] == "human" and shown[0]["text"] == text
        assert shown[0]["earlier_index"] == first  # marked as made on the earlier index
    llm = [e for e in page(db, slug, "1-mlp", llm_unit) if e["method"] == "llm"]
    assert [e["text"] for e in llm] == [llm_text] and llm[0]["earlier_index"] == first
    assert llm[0]["scored_earlier"] == first

    # 2. explain: token patterns made again on this index; the LLM's kept, then re-scored.
    report = explain_index(db, slug, progress=False)
    assert report.stale == 1
    patterns = rows(db, method="token-pattern")
    assert patterns and all(r["indexed"] == second for r in patterns)
    assert len({(r["source"], r["unit"]) for r in patterns}) == len(patterns)  # one each
    report = explain_index(db, slug, progress=False, rescore=True)
    assert report.rescored == 1
    (paid,) = rows(db, method="llm")
    assert paid["text"] == llm_text and paid["indexed"] == first and paid["scored"] == second
    scores, evidence = json.loads(paid["scores"]), json.loads(paid["evidence"])
    assert "simulation_r" in scores, (scores, evidence)
    assert evidence["earlier_scores"]["detection"]["value"] == 0.9
    assert explain_index(db, slug, progress=False, rescore=True).rescored == 0

    # 3. A source dropped: its labels are kept, reported, and come back with it.
    capsys.readouterr()
    assert spyglass([*_index_args(cfg), "--layers", "1"]) == 0
    out = capsys.readouterr().out
    assert "2 labels on sources no longer indexed: kept" in out
    humans = rows(db, method="human")
    assert len(humans) == 3 and sum(r["source_id"] is None for r in humans) == 2
    assert spyglass([*_index_args(cfg), "--layers", "0,1"]) == 0
    assert "no longer indexed" not in capsys.readouterr().out
    assert [e["text"] for e in page(db, slug, "0-mlp", 7) if e["method"] == "human"] == [
        "closing brackets"
    ]

    # 4. Another model under the same name and source names: not its units; kept aside.
    other = tmp / "other-model"
    shutil.copytree(cfg.model, other)
    build_index(replace(cfg, model=str(other)))
    assert all(r["source_id"] is None for r in rows(db, method="human"))
    assert all(e["method"] != "human" for e in page(db, slug, "0-mlp", 3))
    build_index(cfg)  # and back
    assert all(r["source_id"] is not None for r in rows(db, method="human"))

    # 5. labels export, then import: round-trips, and importing twice adds nothing.
    backup = tmp / "labels.jsonl"
    assert spyglass(["labels", "export", "--db", db, "--out", str(backup)]) == 0
    lines = [json.loads(line) for line in backup.read_text().splitlines()]
    assert sorted((x["source"], x["unit"], x["text"], x["author"]) for x in lines) == sorted(
        (s, u, t, "ada") for s, u, t in LABELS
    )
    capsys.readouterr()
    assert spyglass(["labels", "import", str(backup), "--db", db]) == 0
    assert "imported 0 labels (0 on sources not indexed here: kept), 3 already here" in (
        capsys.readouterr().out
    )
    assert len(rows(db, method="human")) == 3
    return backup


def _index_args(cfg: IndexConfig) -> list[str]:
    """``spyglass index`` arguments of the tiny settings (as the CLI takes them)."""
    return [
        "index", "--model", cfg.model, "--corpus", cfg.corpus, "--db", str(cfg.db),
        "--name", cfg.name, "--seq-len", str(cfg.seq_len), "--batch-size",
        str(cfg.batch_size), "--top-k", str(cfg.top_k), "--device", "cpu",
    ]  # fmt: skip


def import_into(db: str, backup: Path, capsys) -> None:
    """The labels of ``backup`` into another index of the same model (``db``): each lands
    on its unit; twice adds nothing."""
    capsys.readouterr()
    assert spyglass(["labels", "import", str(backup), "--db", db]) == 0
    assert "imported 3 labels (0 on sources not indexed here: kept), 0 already here" in (
        capsys.readouterr().out
    )
    assert spyglass(["labels", "import", str(backup), "--db", db]) == 0
    assert "3 already here" in capsys.readouterr().out
    humans = rows(db, method="human")
    assert len(humans) == 3 and all(r["source_id"] is not None for r in humans)
