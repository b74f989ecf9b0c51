"""Writes need a key (app/write_access.py): without one only loopback clients write, a
token is checked, a page of another site is refused, a flood gets 429, and a label's text
is cleaned. Each answer is the error schema; each refused write leaves the index as it was.
"""

from __future__ import annotations

import sqlite3

import pytest
from fastapi.testclient import TestClient
from index_checks import copy_index
from pydantic import ValidationError

from app.main import create_app
from app.write_access import serve_notice
from spyglass import storage
from spyglass.settings import Settings

OUTSIDE = ("203.0.113.7", 41000)  # a documentation address: any client off this machine
LOOPBACK = ("127.0.0.1", 41000)
BODY = {"text": "fires on cats", "author": "ada"}


@pytest.fixture(scope="module")
def db(tiny_index, tmp_path_factory) -> str:
    return copy_index(tiny_index.db, tmp_path_factory.mktemp("writes"))


def labels(db: str) -> int:
    engine = storage.make_engine(db)
    try:
        with engine.connect() as conn:
            return sum(1 for _ in storage.export_labels(conn))
    finally:
        engine.dispose()


def post(client: TestClient, slug: str, headers=None, body=BODY):
    return client.post(f"/api/{slug}/0-mlp/3/labels", json=body, headers=headers or {})


def refused(r, status: int, rule: str, words: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["status"] == status and words in body["detail"]
    assert body["errors"][0]["rule"] == rule


def test_without_a_token_only_loopback_clients_write(db, tiny_index):
    slug, before = tiny_index.slug, labels(db)
    with TestClient(create_app(Settings(db=db)), client=OUTSIDE) as outside:
        refused(post(outside, slug), 403, "forbidden", "SPYGLASS_WRITE_TOKEN")
    assert labels(db) == before
    with TestClient(create_app(Settings(db=db)), client=LOOPBACK) as local:
        assert post(local, slug).status_code == 201
        cross = post(local, slug, {"Origin": "http://evil.example"})  # a forged form post
        refused(cross, 403, "forbidden", "another site")
        same = post(local, slug, {"Origin": "http://testserver"})  # our own page's fetch
        assert same.status_code == 201, same.text
        # A reverse proxy on this machine forwards others' requests from loopback.
        for header in ("X-Forwarded-For", "Forwarded", "X-Real-IP"):
            refused(post(local, slug, {header: "203.0.113.7"}), 403, "forbidden", "TOKEN")
    assert labels(db) == before + 2


def test_with_a_token_every_client_needs_it(db, tiny_index):
    slug, before = tiny_index.slug, labels(db)
    settings = Settings(db=db, write_token="s3cret-token")
    for address in (OUTSIDE, LOOPBACK):
        with TestClient(create_app(settings), client=address) as client:
            none = post(client, slug)
            refused(none, 401, "unauthorized", "Authorization: Bearer")
            assert none.headers["WWW-Authenticate"].startswith("Bearer")
            refused(post(client, slug, {"Authorization": "Bearer s3cret-tokem"}), 403,
                    "forbidden", "not this server's")  # fmt: skip
            refused(post(client, slug, {"Authorization": "Basic s3cret-token"}), 401,
                    "unauthorized", "Bearer")  # fmt: skip
            assert labels(db) == before
            ok = post(client, slug, {"Authorization": "Bearer s3cret-token"})
            assert ok.status_code == 201, ok.text
            # With the key, the page's origin is not asked (a proxy may rename the host).
            proxied = {"Authorization": "Bearer s3cret-token", "Origin": "https://lab.example"}
            assert post(client, slug, proxied).status_code == 201
            before += 2
    assert labels(db) == before


def test_a_flood_gets_429_with_retry_after(db, tiny_index):
    slug = tiny_index.slug
    settings = Settings(db=db, write_rate="3/minute")
    with TestClient(create_app(settings), client=LOOPBACK) as client:
        assert [post(client, slug).status_code for _ in range(3)] == [201] * 3
        before = labels(db)
        for _ in range(5):
            r = post(client, slug)
            refused(r, 429, "rate", "at most 3/minute")
            assert 1 <= int(r.headers["Retry-After"]) <= 60
        assert labels(db) == before
    # Per client: another address is not held back by this one's flood.
    with TestClient(create_app(settings), client=("127.0.0.2", 1)) as other:
        assert post(other, slug).status_code == 201


def test_a_label_during_a_reindex_gets_503_with_retry_after(db, tiny_index):
    """A re-index holds the index in one transaction for minutes: a label waits a few
    seconds, then is told to come back, and lands once the index is free."""
    slug, before = tiny_index.slug, labels(db)
    with TestClient(create_app(Settings(db=db)), client=LOOPBACK) as client:
        holder = sqlite3.connect(db)
        holder.execute("BEGIN IMMEDIATE")  # as the indexer's write transaction does
        try:
            busy = post(client, slug)
        finally:
            holder.rollback()
            holder.close()
        refused(busy, 503, "busy", "re-index")
        assert busy.headers["Retry-After"] == "30"
        assert post(client, slug).status_code == 201
    assert labels(db) == before + 1


def test_label_text_is_cleaned_and_bounded(db, tiny_index):
    slug = tiny_index.slug
    with TestClient(create_app(Settings(db=db)), client=LOOPBACK) as client:
        dirty = {"text": "cats\x00 and\u202e dogs\u200b\n<b>x</b>", "author": "ada\x07"}
        made = post(client, slug, body=dirty)
        assert made.status_code == 201, made.text
        assert made.json()["text"] == "cats and dogs <b>x</b>"  # stored as text; escaped
        assert made.json()["explainer"] == "ada"
        for body in ({"text": "x" * 501, "author": "a"}, {"text": "\u200b\x01", "author": "a"}):
            assert post(client, slug, body=body).status_code == 422


def test_settings_and_serve_notice():
    with pytest.raises(ValidationError, match="not a rate"):
        Settings(write_rate="lots")
    assert Settings(write_token="").write_token is None  # compose passes an unset one as ""
    line = serve_notice(Settings(), "0.0.0.0")
    assert line and "writes (labels) are off" in line and "SPYGLASS_WRITE_TOKEN" in line
    assert serve_notice(Settings(write_token="k"), "0.0.0.0") is None
    assert serve_notice(Settings(), "127.0.0.1") is None
    assert serve_notice(Settings(labels=False), "0.0.0.0") is None
