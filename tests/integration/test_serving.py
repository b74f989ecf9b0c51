"""Serving under load: page views that never starve each other, the page cache (ETag, 304,
gzip, never stale after a re-index), and one error schema for every refusal."""

from __future__ import annotations

import asyncio
import gzip
import json
import shutil

import httpx
import pytest
from fastapi.testclient import TestClient
from index_checks import read_index
from served import serve
from tiny_settings import tiny_config

from app.main import create_app
from indexer.pipeline import build_index
from spyglass.settings import Settings

UNIT = "/tiny/0-mlp/3"


@pytest.fixture(scope="module")
def client(tiny_index):
    with TestClient(create_app(Settings(db=tiny_index.db))) as c:
        yield c


def test_cached_pages_answer_304_to_their_etag_and_gzip_to_who_takes_it(client):
    plain = client.get(UNIT, headers={"Accept-Encoding": "identity"})
    assert plain.status_code == 200 and "content-encoding" not in plain.headers
    etag = plain.headers["etag"]
    zipped = client.get(UNIT, headers={"Accept-Encoding": "gzip"})
    # httpx decodes gzip itself: the header says it was sent compressed, the text is the same.
    assert zipped.headers["content-encoding"] == "gzip" and zipped.text == plain.text
    assert zipped.headers["etag"] == etag and "Accept-Encoding" in zipped.headers["vary"]
    again = client.get(UNIT, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    # The JSON twin is another representation: another tag, and the same unit.
    twin = client.get(UNIT + ".json", headers={"If-None-Match": etag})
    assert twin.status_code == 200 and twin.headers["etag"] != etag
    assert twin.json()["index"] == 3


def test_a_reindex_under_the_same_name_is_never_served_stale(
    tiny_index, tiny_model_dir, tiny_corpus_dir, tmp_path
):
    db = tmp_path / "copy.db"
    shutil.copy(tiny_index.db, db)
    with TestClient(create_app(Settings(db=str(db)))) as c:
        before = c.get(UNIT + ".json")
        assert len(before.json()["examples"]) == tiny_index.config.top_k
        # Index again into the same file, under the same name, while the server runs.
        build_index(tiny_config(tiny_model_dir, tiny_corpus_dir, db, top_k=2))
        after = c.get(UNIT + ".json", headers={"If-None-Match": before.headers["etag"]})
        assert after.status_code == 200 and len(after.json()["examples"]) == 2
        assert after.headers["etag"] != before.headers["etag"]
        html = c.get(UNIT)
        assert html.text.count('class="example"') == 2


def test_kept_sequences_never_outlive_a_reindex(
    tiny_index, tiny_model_dir, tiny_corpus_dir, tmp_path
):
    """Sequences are kept in memory per index (app/index_cache.py): a re-index under the same
    name, cut differently, must show its own sequences on every page."""
    db = tmp_path / "seq.db"
    shutil.copy(tiny_index.db, db)
    with TestClient(create_app(Settings(db=str(db)))) as c:
        before = c.get("/tiny/sequences/0.json").json()
        assert len(c.get(UNIT + ".json").json()["examples"]) > 0  # its sequences now kept
        build_index(tiny_config(tiny_model_dir, tiny_corpus_dir, db, seq_len=12))
        stored = read_index(str(db), "tiny")
        after = c.get("/tiny/sequences/0.json").json()
        assert after["token_ids"] == stored.sequences[0].tokens != before["token_ids"]
        for ex in c.get(UNIT + ".json").json()["examples"]:
            shown = c.get(f"/tiny/sequences/{ex['sequence_id']}.json").json()
            assert shown["token_ids"] == stored.sequences[ex["sequence_id"]].tokens
            start = ex["window_start"]
            assert shown["tokens"][start : start + len(ex["tokens"])] == ex["tokens"]
            assert ex["position"] < len(shown["tokens"]) <= 12


def test_page_views_hold_at_many_more_connections_than_database_slots(tiny_index):
    """256 concurrent page views against 2 database slots: before the reader, sync routes
    held pooled connections while waiting for threads, and the pool's 30 s timeout turned
    such a burst into 500s."""
    paths = [f"/tiny/{layer}-mlp/{i}" for layer in (0, 1) for i in range(64)]
    paths += [p + ".json" for p in paths] + ["/tiny", "/tiny/0-mlp", "/.json"]

    async def burst(base: str) -> list[int]:
        limits = httpx.Limits(max_connections=256)
        async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as c:
            replies = await asyncio.gather(*(c.get(p) for p in paths))
        return [r.status_code for r in replies]

    with serve(Settings(db=tiny_index.db, db_threads=2)) as base:
        assert asyncio.run(burst(base)) == [200] * len(paths)


# ---- one error schema -----------------------------------------------------------------------

ACTIVATIONS = "/api/tiny/0-mlp/3/activations"
STEER = "/api/tiny/0-mlp/3/steer"


def _error(r, status: int, field: str | None, rule: str) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["status"] == status and body["detail"]
    assert any(e["field"] == field and e["rule"] == rule for e in body["errors"]), body
    return body


@pytest.mark.parametrize(
    ("path", "body", "field", "rule"),
    [
        (ACTIVATIONS, {"prompt": "\u0004"}, "prompt", "printable"),
        (ACTIVATIONS, {"prompt": "\u0004\u0007 \n"}, "prompt", "printable"),
        (ACTIVATIONS, {"prompt": "   "}, "prompt", "not_empty"),
        (ACTIVATIONS, {"prompt": "x" * 5000}, "prompt", "max_length"),
        (ACTIVATIONS, {"prompt": "hi", "temperature": 1}, "temperature", "extra_forbidden"),
        (ACTIVATIONS, {}, "prompt", "missing"),
        (ACTIVATIONS, {"prompt": 7}, "prompt", "string_type"),
        (STEER, {"prompt": "hi", "temperature": 1.4e-88}, "temperature", "range"),
        (STEER, {"prompt": "hi", "temperature": 5e-324}, "temperature", "range"),
        (STEER, {"prompt": "hi", "temperature": -0.5}, "temperature", "range"),
        (STEER, {"prompt": "hi", "coefficient": 1e300}, "coefficient", "range"),
        (STEER, {"prompt": "hi", "seed": -1}, "seed", "range"),
        (STEER, {"prompt": "hi", "max_new_tokens": 0}, "max_new_tokens", "range"),
    ],
)
def test_bad_live_input_is_a_422_naming_field_and_rule(client, path, body, field, rule):
    _error(client.post(path, json=body), 422, field, rule)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_are_422(client, literal):
    raw = f'{{"prompt": "hi", "coefficient": {literal}}}'
    r = client.post(STEER, content=raw, headers={"Content-Type": "application/json"})
    _error(r, 422, "coefficient", "finite_number")


def test_a_prompt_over_the_token_cap_is_checked_after_tokenizing(tiny_index):
    with TestClient(create_app(Settings(db=tiny_index.db, max_prompt_tokens=5))) as c:
        body = _error(
            c.post(ACTIVATIONS, json={"prompt": "café naïve Zürich"}), 422, "prompt", "max_tokens"
        )
        assert "tokens; the limit is 5" in body["detail"]


def test_a_prompt_past_the_model_context_is_a_422_on_every_live_view(client):
    """The tiny model's context is 32 tokens, far under the default prompt cap."""
    long = "the fox runs over the river " * 20
    body = _error(client.post(ACTIVATIONS, json={"prompt": long}), 422, "prompt", "max_tokens")
    assert "the model's context is 32" in body["detail"]
    r = client.get("/tiny/prompt.json", params={"text": long})
    _error(r, 422, "text", "max_tokens")
    r = client.get("/tiny/prompt", params={"text": long})
    assert r.status_code == 422 and "context is 32" in r.text


def test_malformed_json_is_a_documented_400(client):
    r = client.post(
        ACTIVATIONS, content=b'{"prompt": ', headers={"Content-Type": "application/json"}
    )
    _error(r, 400, None, "json")


def test_a_huge_body_is_413_before_it_is_read(client):
    huge = json.dumps({"prompt": "x" * 200_000})
    _error(
        client.post(ACTIVATIONS, content=huge, headers={"Content-Type": "application/json"}),
        413,
        None,
        "max_body_bytes",
    )

    def chunks():  # no Content-Length: counted as it arrives
        for _ in range(100):
            yield b"x" * 4096

    r = client.post(ACTIVATIONS, content=chunks(), headers={"Content-Type": "application/json"})
    _error(r, 413, None, "max_body_bytes")


def test_unknown_query_parameters_of_live_pages_are_422(client):
    r = client.get("/tiny/prompt.json", params={"text": "hi", "sorce": "0-mlp"})
    _error(r, 422, "sorce", "extra_forbidden")


def test_not_found_follows_the_schema_too(client):
    _error(client.get("/tiny/0-mlp/99999.json"), 404, None, "not_found")
    _error(
        client.post("/api/tiny/9-mlp/0/activations", json={"prompt": "hi"}), 404, None, "not_found"
    )


def test_static_files_are_compressed_once_and_cached_by_version(client):
    r = client.get("/static/vendor/htmx-2.0.11.min.js", headers={"Accept-Encoding": "gzip"})
    assert r.status_code == 200 and r.headers["content-encoding"] == "gzip"
    assert "immutable" in r.headers["cache-control"]
    raw = client.get("/static/vendor/htmx-2.0.11.min.js", headers={"Accept-Encoding": "identity"})
    assert raw.content == r.content and gzip.compress(raw.content)  # the same file either way
    assert client.get("/static/spyglass.js").headers["cache-control"] == "no-cache"
