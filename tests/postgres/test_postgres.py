"""The same index in PostgreSQL and in SQLite serves the same pages; readers see the last
complete index while a new one is written; the server's engine refuses writes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, update
from sqlalchemy.exc import DBAPIError

from app.main import create_app
from indexer.pipeline import IndexConfig, build_index
from spyglass import storage
from spyglass.settings import Settings

pytestmark = pytest.mark.postgres

SLUG = "tinypg"
VOLATILE = {"created", "seconds"}
"""Fields that record when and how fast an index was written, not what it holds."""


@pytest.fixture(scope="module")
def sae_dir(tmp_path_factory) -> Path:
    """A random standard SAE on the tiny model's layer-0 residual stream."""
    from sae_weights import random_sae_tensors

    from spyglass.sae import Sae, SaeConfig, save_sae

    folder = tmp_path_factory.mktemp("pg-sae") / "sae"
    cfg = SaeConfig(
        architecture="standard", d_in=16, d_sae=24, hook_name="blocks.0.hook_resid_post"
    )
    save_sae(Sae(cfg, random_sae_tensors("standard", 3, 16, 24)), folder)
    return folder


@pytest.fixture(scope="module")
def indexes(tiny_index, sae_dir, postgres_server, tmp_path_factory) -> dict[str, str]:
    """One run's settings indexed twice: into SQLite and into PostgreSQL."""
    cfg = replace(tiny_index.config, name=SLUG, saes=(str(sae_dir),))
    dbs = {
        "sqlite": str(tmp_path_factory.mktemp("pg-compare") / "index.db"),
        "postgres": postgres_server.create_database("compare"),
    }
    for db in dbs.values():
        report = build_index(replace(cfg, db=db))
        assert report.sources == ["0-mlp", "1-mlp", "0-res-standard-24"]
    return dbs


@pytest.fixture(scope="module")
def clients(indexes) -> Iterator[dict[str, TestClient]]:
    with (
        TestClient(create_app(Settings(db=indexes["sqlite"], page_size=10))) as lite,
        TestClient(create_app(Settings(db=indexes["postgres"], page_size=10))) as pg,
    ):
        yield {"sqlite": lite, "postgres": pg}


def stable(data):
    """``data`` without the fields that differ between two runs of one index."""
    if isinstance(data, dict):
        return {k: stable(v) for k, v in data.items() if k not in VOLATILE}
    if isinstance(data, list):
        return [stable(v) for v in data]
    return data


def both(clients, path: str):
    """The JSON twin of ``path`` from each backend, after checking both answered 200."""
    out = []
    for name, client in clients.items():
        r = client.get(path)
        assert r.status_code == 200, f"{name} {path}: {r.text[:300]}"
        out.append(stable(r.json()))
    return out


# ---- the same pages from both backends ------------------------------------------------


def test_navigation_pages_are_the_same(clients):
    lite, pg = both(clients, "/.json")
    assert lite == pg and [m["slug"] for m in pg["models"]] == [SLUG]
    lite, pg = both(clients, f"/{SLUG}.json")
    assert lite == pg and len(pg["sources"]) == 3
    for source in pg["sources"]:
        name = source["name"]
        for sort, order in (("max_act", "desc"), ("density", "asc"), ("index", "asc")):
            page, n_pages = 1, 1
            while page <= n_pages:
                query = f"sort={sort}&order={order}&page={page}"
                lite, pg_page = both(clients, f"/{SLUG}/{name}.json?{query}")
                assert lite == pg_page, f"{name} {query}"
                n_pages = pg_page["n_pages"]
                page += 1


def test_every_unit_page_is_the_same(clients):
    model = clients["postgres"].get(f"/{SLUG}.json").json()
    n = 0
    for source in model["sources"]:
        for idx in range(source["n_units"]):
            lite, pg = both(clients, f"/{SLUG}/{source['name']}/{idx}.json")
            assert lite == pg, f"{source['name']}/{idx}"
            n += 1
    assert n == 64 + 64 + 24
    # The HTML, from the same view models, too (no field of a unit page is volatile).
    for path in (f"/{SLUG}/0-mlp/3", f"/{SLUG}/0-res-standard-24/5", f"/{SLUG}/1-mlp/63"):
        lite, pg = (c.get(path) for c in clients.values())
        assert lite.status_code == pg.status_code == 200
        assert lite.text == pg.text


def test_sequences_and_expanded_examples_are_the_same(clients, tiny_index):
    for sid in range(tiny_index.report.n_sequences):
        lite, pg = both(clients, f"/{SLUG}/sequences/{sid}.json")
        assert lite == pg
    unit = clients["postgres"].get(f"/{SLUG}/1-mlp/7.json").json()
    for e in unit["examples"]:
        path = f"/{SLUG}/1-mlp/7/examples/{e['rank']}"
        lite, pg = (c.get(path, headers={"HX-Request": "true"}) for c in clients.values())
        assert lite.status_code == pg.status_code == 200 and lite.text == pg.text


def test_stored_rows_are_identical(indexes):
    """Below the pages: every row the app can read, through storage's own queries."""
    from index_checks import read_index

    lite, pg = (read_index(db, SLUG) for db in indexes.values())
    assert replace(lite.model, id=0, created="", seconds=0) == replace(
        pg.model, id=0, created="", seconds=0
    )
    assert [replace(s, id=0, model_id=0) for s in lite.sources] == [
        replace(s, id=0, model_id=0) for s in pg.sources
    ]
    assert lite.sequences == pg.sequences
    for layer in lite.units:
        assert [replace(u, source_id=0) for u in lite.units[layer]] == [
            replace(u, source_id=0) for u in pg.units[layer]
        ]
        assert lite.examples[layer] == pg.examples[layer]
    engines = {name: storage.make_engine(db) for name, db in indexes.items()}
    try:
        vocab, densities = {}, {}
        for name, engine in engines.items():
            with engine.connect() as conn:
                m = storage.get_model(conn, SLUG)
                vocab[name] = storage.token_texts(conn, m.id, range(m.d_vocab))
                densities[name] = [
                    storage.unit_densities(conn, s.id) for s in storage.list_sources(conn, m.id)
                ]
        assert vocab["sqlite"] == vocab["postgres"]
        assert "\x00" in vocab["postgres"].values()  # the byte-level token for byte 0
        assert densities["sqlite"] == densities["postgres"]
    finally:
        for engine in engines.values():
            engine.dispose()


def test_pages_show_the_last_complete_index_while_it_is_replaced(clients, indexes):
    paths = ("/.json", f"/{SLUG}.json", f"/{SLUG}/0-mlp/3.json", f"/{SLUG}/sequences/2.json")
    for name, db in indexes.items():
        client = clients[name]
        before = [client.get(p).json() for p in paths]
        writer = storage.make_engine(db)
        with writer.connect() as conn:
            tx = conn.begin()
            # What the indexer does first: delete the old index, insert the new model row.
            storage.replace_model(
                conn, SLUG, spec="x", corpus="new", n_layers=1, d_model=1, d_vocab=1,
                seq_len=1, skip_first=0, top_k=1,
            )  # fmt: skip
            assert [client.get(p).json() for p in paths] == before, name
            tx.rollback()
        writer.dispose()
        assert [client.get(p).json() for p in paths] == before, name


def test_health_check_answers_on_both(clients):
    for client in clients.values():
        r = client.get("/healthz")
        assert r.status_code == 200 and r.json()["status"] == "ok"
    with pytest.raises(ValueError, match="invalid model name"):
        storage.check_slug("healthz")


# ---- readers and writers ------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def empty_db(request, postgres_server, tmp_path) -> str:
    """An empty database of each backend, with the schema."""
    if request.param == "sqlite":
        db = str(tmp_path / "rw.db")
    else:
        db = postgres_server.create_database(f"rw_{tmp_path.name.lower()}"[:60])
    storage.make_engine(db, create=True).dispose()
    return db


OLD = ("old", [1.0] * 4, ["a", "\x00", "\uffff0"], "doc\x00with NUL \uffff")
"""What `read_all` reads back of ``write_index(conn, "old", 1.0)``."""


def write_index(conn, corpus: str, value: float, n_units: int = 4) -> int:
    """A small index called ``m`` written as the indexer writes one: replace, then add."""
    model_id = storage.replace_model(
        conn, "m", spec="spec", corpus=corpus, n_layers=1, d_model=4, d_vocab=3,
        seq_len=2, skip_first=1, top_k=1,
    )  # fmt: skip
    storage.add_sequences(conn, model_id, [(0, "doc\x00with NUL \uffff", 0, [1, 2])])
    storage.add_vocab(conn, model_id, ["a", "\x00", "\uffff0"])
    source_id = storage.add_source(
        conn, model_id, name="0-mlp", kind="mlp", layer=0, hook="h", n_units=n_units
    )
    logits = [{"top": [[0, value]], "bottom": [[1, -value]]}] * n_units
    storage.add_units(conn, source_id, np.full(n_units, value), np.full(n_units, 0.5), logits)
    storage.finish_model(conn, model_id, n_sequences=1, seconds=1.0)
    return model_id


def write_old_index(db: str) -> None:
    engine = storage.make_engine(db, create=True)
    with engine.begin() as conn:
        write_index(conn, "old", 1.0)
    engine.dispose()


def read_all(conn) -> tuple[str, list[float], list[str], str] | None:
    model = storage.get_model(conn, "m")
    if model is None:
        return None
    (source,) = storage.list_sources(conn, model.id)
    texts = storage.token_texts(conn, model.id, range(3))
    (seq,) = storage.get_sequences(conn, model.id, [0]).values()
    return model.corpus, storage.unit_max_acts(conn, source.id), list(texts.values()), seq.document


def test_text_with_nul_and_the_escape_character_round_trips(empty_db):
    write_old_index(empty_db)
    engine = storage.make_read_engine(empty_db)
    with engine.connect() as conn:
        assert read_all(conn) == OLD
    engine.dispose()


def test_readers_see_the_last_complete_index_while_a_new_one_is_written(empty_db):
    writer = storage.make_engine(empty_db)
    reader = storage.make_read_engine(empty_db)
    with writer.begin() as conn:
        write_index(conn, "old", 1.0)
    with writer.connect() as w:
        tx = w.begin()
        # Half-way through a re-index: the old index is deleted, the new one half written.
        model_id = storage.replace_model(
            w, "m", spec="spec", corpus="new", n_layers=1, d_model=4, d_vocab=3,
            seq_len=2, skip_first=1, top_k=1,
        )  # fmt: skip
        storage.add_vocab(w, model_id, ["a", "b", "c"])
        with reader.connect() as r:
            assert read_all(r) == OLD
        tx.rollback()
    with reader.connect() as r:
        assert read_all(r) == OLD

    # A request that began before a commit reads its one snapshot to the end.
    with reader.connect() as r:
        assert storage.get_model(r, "m").corpus == "old"
        with writer.begin() as w:
            write_index(w, "new", 2.0, n_units=3)
        assert read_all(r) == OLD
    with reader.connect() as r:
        assert read_all(r)[:2] == ("new", [2.0] * 3)
    writer.dispose()
    reader.dispose()


def test_the_server_engine_refuses_writes(empty_db):
    write_old_index(empty_db)
    reader = storage.make_read_engine(empty_db)

    def new_model(conn):
        storage.replace_model(
            conn, "m2", spec="s", corpus="c", n_layers=1, d_model=1, d_vocab=1, seq_len=1,
            skip_first=0, top_k=1,
        )  # fmt: skip

    writes = [
        new_model,
        lambda c: storage.add_vocab(c, 1, ["x"]),
        lambda c: c.execute(update(storage.models).values(corpus="changed")),
        lambda c: c.execute(delete(storage.units)),
    ]
    for write in writes:
        with reader.connect() as conn:
            with pytest.raises(DBAPIError, match="readonly|read-only"):
                write(conn)
            conn.rollback()
    with reader.connect() as conn:
        assert read_all(conn)[:2] == ("old", [1.0] * 4)
    reader.dispose()


def test_the_server_refuses_a_database_without_an_index(postgres_server, tmp_path):
    url = postgres_server.create_database("empty")
    with pytest.raises(FileNotFoundError, match="no Spyglass index in"):
        create_app(Settings(db=url))
    with pytest.raises(FileNotFoundError, match="no index database"):
        create_app(Settings(db=str(tmp_path / "missing.db")))


def test_health_check_is_503_once_the_database_is_gone(postgres_server):
    url = postgres_server.create_database("going")
    write_old_index(url)
    with TestClient(create_app(Settings(db=url))) as client:
        assert client.get("/healthz").status_code == 200
        postgres_server.psql("postgres", "DROP DATABASE going WITH (FORCE)")
        r = client.get("/healthz")
        assert r.status_code == 503 and r.json()["status"] == "unavailable"
        assert "going" in r.json()["detail"]


def test_a_select_only_role_serves_but_cannot_index(postgres_server, indexes):
    postgres_server.psql(
        "compare", "CREATE ROLE viewer LOGIN; GRANT SELECT ON ALL TABLES IN SCHEMA public TO viewer"
    )
    url = f"postgresql+psycopg://viewer@127.0.0.1:{postgres_server.port}/compare"
    with TestClient(create_app(Settings(db=url)), client=("127.0.0.1", 50000)) as viewer:
        assert viewer.get(f"/{SLUG}/0-mlp/3.json").status_code == 200
        label = viewer.post(f"/api/{SLUG}/0-mlp/3/labels", json={"text": "a", "author": "b"})
        assert label.status_code == 503 and "cannot be stored" in label.json()["detail"]
    postgres_server.create_database("viewer_cannot_create")
    with pytest.raises(storage.DatabaseUnavailable, match="cannot create tables in .*denied"):
        storage.make_engine(url.replace("/compare", "/viewer_cannot_create"), create=True)


# ---- bad URLs give one line -------------------------------------------------------------


def test_postgres_url_without_psycopg_names_the_extra(monkeypatch):
    for name in [m for m in sys.modules if m == "psycopg" or m.startswith("psycopg.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "psycopg", None)  # import psycopg now fails
    for url in ("postgresql+psycopg://u@localhost/db", "postgresql://u@localhost/db"):
        with pytest.raises(storage.DatabaseUnavailable) as err:
            storage.make_engine(url)
        assert "pip install 'spyglass[postgres]'" in str(err.value)
        assert "\n" not in str(err.value)


def test_unreachable_server_and_bad_urls_are_one_line_errors(postgres_server):
    url = f"postgresql+psycopg://spy:s3cret@127.0.0.1:{_free_port()}/nothing"
    with pytest.raises(storage.DatabaseUnavailable, match="cannot open the database") as err:
        storage.make_engine(url)
    assert "s3cret" not in str(err.value) and "\n" not in str(err.value)
    missing = postgres_server.url("no_such_database")
    with pytest.raises(storage.DatabaseUnavailable, match="no_such_database"):
        storage.make_read_engine(missing)
    with pytest.raises(storage.DatabaseUnavailable, match="not a usable database URL"):
        storage.make_engine("nosuchdialect://x/y")


def test_postgres_and_postgresql_urls_use_psycopg():
    assert storage.database_url("postgresql://u@h/d") == "postgresql+psycopg://u@h/d"
    assert storage.database_url("postgres://u@h/d") == "postgresql+psycopg://u@h/d"
    assert storage.database_url("postgresql+psycopg://u@h/d") == "postgresql+psycopg://u@h/d"
    assert storage.database_url("sqlite:///x.db") == "sqlite:///x.db"


# ---- the command line -----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spyglass(*args: str) -> list[str]:
    return [sys.executable, "-m", "cli", *args]


def test_cli_indexes_into_postgres_and_serves_it(
    postgres_server, tiny_model_dir, tiny_corpus_dir, tmp_path
):
    url = postgres_server.create_database("cli")
    flags = ["--seq-len", "16", "--batch-size", "3", "--top-k", "5", "--device", "cpu"]
    env = os.environ | {"TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(
        _spyglass("index", "--model", str(tiny_model_dir), "--corpus", str(tiny_corpus_dir),
                  "--db", url, "--name", "tinycli", *flags),
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"-> {url}" in done.stdout

    # The same settings into SQLite, in process: the reference the served pages must match.
    lite = tmp_path / "cli.db"
    build_index(
        IndexConfig(
            model=str(tiny_model_dir), corpus=str(tiny_corpus_dir), db=str(lite),
            name="tinycli", seq_len=16, batch_size=3, top_k=5, device="cpu", progress=False,
        )
    )  # fmt: skip

    port = _free_port()
    server = subprocess.Popen(
        _spyglass("serve", "--db", url, "--port", str(port)),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, server.stdout.read()
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "spyglass serve did not answer in 120 s"
            time.sleep(0.5)
        with TestClient(create_app(Settings(db=str(lite)))) as reference:
            for path in ("/.json", "/tinycli.json", "/tinycli/0-mlp/5.json", "/tinycli/1-mlp/6"):
                served = httpx.get(base + path, timeout=30)
                assert served.status_code == 200, served.text[:300]
                expect = reference.get(path)
                if path.endswith(".json"):
                    assert stable(served.json()) == stable(expect.json()), path
                else:
                    assert served.text == expect.text, path
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_cli_serve_on_an_unreachable_database_is_one_line(capsys):
    import cli

    url = f"postgresql+psycopg://postgres:pw@127.0.0.1:{_free_port()}/x"
    assert cli.main(["serve", "--db", url]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("spyglass: error: cannot open the database at postgresql+psycopg://")
    assert ":pw@" not in line


# ---- explanations (last: they add to the shared indexes) ---------------------------------


def test_explanations_and_search_are_the_same_on_both(indexes, clients):
    from indexer.explain.run import explain_index

    reports = {name: explain_index(db, SLUG, progress=False) for name, db in indexes.items()}
    assert reports["sqlite"].explained == reports["postgres"].explained > 0
    for source in ("0-mlp", "0-res-standard-24"):
        for unit in range(4):
            lite, pg = both(clients, f"/{SLUG}/{source}/{unit}.json")
            assert lite["explanations"] == pg["explanations"]
            assert lite["correlated"] == pg["correlated"]
    page = clients["sqlite"].get(f"/{SLUG}/0-mlp/0.json").json()
    word = next(w for e in page["explanations"] for w in storage.search_terms(e["text"]))
    hits = []
    for client in clients.values():
        got = client.get(f"/{SLUG}/search.json", params={"q": word, "source": "0-mlp"})
        assert got.status_code == 200, got.text[:300]
        hits.append({(h["source"], h["index"]) for h in got.json()["hits"]})
    assert hits[0] and ("0-mlp", 0) in hits[0]
    for hostile, status in (('NEAR( "x" AND', 200), ("a:* & !b | c", 200), ("'' <-> ()", 422)):
        for client in clients.values():
            r = client.get(f"/{SLUG}/search.json", params={"q": hostile})
            assert r.status_code == status, r.text[:300]
