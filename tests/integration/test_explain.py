"""``spyglass explain`` over the tiny index: every unit that fired is explained from its
shown examples only, scored on the held-out ones, found by search, and a re-run costs
nothing."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from index_checks import copy_index, read_index

from cli.parser import main as cli_main
from indexer.explain import run
from spyglass import storage


@pytest.fixture(scope="module")
def explained(tiny_index, tmp_path_factory):
    """A copy of the tiny index, explained (the shared one stays as indexed)."""
    db = copy_index(tiny_index.db, tmp_path_factory.mktemp("explained"))
    report = run.explain_index(db, tiny_index.slug, progress=False)
    return db, report


def _all(db, slug):
    engine = storage.make_engine(db)
    with engine.connect() as conn:
        m = storage.get_model(conn, slug)
        out = {
            (s.name, u): storage.get_explanations(conn, s.id, u)
            for s in storage.list_sources(conn, m.id)
            for u in range(s.n_units)
        }
    engine.dispose()
    return out


def test_every_unit_that_fired_is_explained_once(explained, tiny_index):
    db, report = explained
    stored = read_index(tiny_index.db, tiny_index.slug)
    fired = {
        (src.name, u)
        for src in stored.sources
        for u, examples in enumerate(stored.examples[src.layer])
        if examples
    }
    got = _all(db, tiny_index.slug)
    assert {k for k, v in got.items() if v} == fired
    assert all(len(v) <= 1 for v in got.values())
    assert report.explained == len(fired) > 0


def test_named_tokens_are_the_shown_examples_tokens(explained, tiny_index):
    """Recount, from the stored examples, the tokens under the shown examples (those of
    the 1st, 3rd, ... new sequence of the top examples and of each interval's samples): the
    shares in the evidence are theirs, and no held-out example counts."""
    db, _ = explained
    stored = read_index(tiny_index.db, tiny_index.slug)
    got = _all(db, tiny_index.slug)
    engine = storage.make_engine(db)
    checked = 0
    for src in stored.sources:
        for u, examples in enumerate(stored.examples[src.layer]):
            (e,) = got[(src.name, u)] or [None]
            if e is None:
                continue
            with engine.connect() as conn:
                sampled = storage.get_samples(conn, src.id, u)
            held: dict[int, bool] = {}
            chosen = []
            tops = sorted(examples, key=lambda x: x.rank)
            for group in [tops, *(sampled[k] for k in sorted(sampled))]:
                fresh = 0
                for x in group:
                    if x.sequence_id not in held:
                        held[x.sequence_id] = fresh % 2 == 1
                        fresh += 1
                    if not held[x.sequence_id]:
                        chosen.append(x)
            shown = [stored.sequences[x.sequence_id].tokens[x.position] for x in chosen]
            counts = Counter(shown)
            assert e.evidence["examples"] == len(shown)
            for token, _text, share in e.evidence["tokens"]:
                assert share == pytest.approx(counts[token] / len(shown))
            assert e.evidence["tokens"][0][0] == counts.most_common(1)[0][0] or (
                counts[e.evidence["tokens"][0][0]] == counts.most_common(1)[0][1]
            )
            for score in e.scores.values():
                assert score["lo"] <= score["value"] + 1e-9 or np.isnan(score["lo"])
                assert score["n"] > 0
            checked += 1
    engine.dispose()
    assert checked > 10


def test_rerun_skips_and_units_spec_and_bad_input(explained, tiny_index, capsys, tmp_path):
    db, first = explained
    again = run.explain_index(db, tiny_index.slug, progress=False)
    assert again.explained == 0 and again.skipped == first.explained + first.silent
    assert cli_main(["explain", "--db", db, "--model", tiny_index.slug, "--sources", "nope"]) == 2
    assert "no source nope" in capsys.readouterr().err
    assert cli_main(["explain", "--db", db, "--model", tiny_index.slug, "--units", "0-999"]) == 2
    assert "outside" in capsys.readouterr().err
    assert cli_main(["explain", "--db", db, "--model", "nope"]) == 2
    missing = str(tmp_path / "missing.db")
    assert cli_main(["explain", "--db", missing]) == 2
    assert "no index database" in capsys.readouterr().err
    assert not (tmp_path / "missing.db").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--explainer", "gpt-4o"], "neither token-pattern nor openai:URL"),
        (["--explainer", "openai:http://127.0.0.1:9"], "needs --explainer-model"),
        (["--explainer", "openai:http://127.0.0.1:9", "--explainer-model", "m"], "cannot connect"),
        (["--scorer", "simulation"], "unknown simulation"),
        (["--score-examples", "0"], "at least 1"),
        (["--retries", "-1"], "at least 0"),
    ],
)
def test_bad_llm_options_are_one_line_errors_and_store_nothing(
    explained, tiny_index, capsys, args, message
):
    db, _ = explained
    before = _all(db, tiny_index.slug)
    assert cli_main(["explain", "--db", db, "--model", tiny_index.slug, *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert _all(db, tiny_index.slug) == before


def test_search_finds_a_unit_by_its_token(explained, tiny_index):
    db, _ = explained
    engine = storage.make_engine(db)
    with engine.connect() as conn:
        m = storage.get_model(conn, tiny_index.slug)
        src = storage.list_sources(conn, m.id)[0]
        worded = (
            (e, w)
            for u in range(src.n_units)
            for e in storage.get_explanations(conn, src.id, u)
            for _, text, _ in e.evidence["tokens"]
            for w in storage.search_terms(text)
        )
        e, word = next(worded)
        hits = storage.search_explanations(conn, m.id, word, limit=1000)
        assert (src.name, e.unit) in {(h.source, h.unit) for h in hits}
        assert all(word.casefold() in h.text.casefold() for h in hits)
        with pytest.raises(ValueError):
            storage.search_explanations(conn, m.id, '"" * ( - ^')
        for hostile in ('NEAR( "x" AND', "a* OR b:c", "^x -y"):  # FTS syntax, as words
            assert isinstance(storage.search_explanations(conn, m.id, hostile), list)
    engine.dispose()


@pytest.fixture(scope="module")
def client(explained):
    from fastapi.testclient import TestClient

    from app.main import create_app
    from spyglass.settings import Settings

    settings = Settings(db=explained[0], page_size=10)
    with TestClient(create_app(settings), client=("127.0.0.1", 50000)) as c:  # loopback writes
        yield c


def _labels(db, slug):
    engine = storage.make_engine(db)
    with engine.connect() as conn:
        m = storage.get_model(conn, slug)
        out = {s.name: storage.unit_labels(conn, s.id) for s in storage.list_sources(conn, m.id)}
    engine.dispose()
    return out


def test_pages_carry_explanations_and_labels(explained, client, tiny_index):
    db, _ = explained
    slug = tiny_index.slug
    labels = _labels(db, slug)
    name, unit = next((n, u) for n, ls in labels.items() for u in sorted(ls))
    page = client.get(f"/{slug}/{name}/{unit}.json").json()
    top = page["explanations"][0]
    assert top["text"] == labels[name][unit] and top["method"] == "token-pattern"
    assert {s["name"] for s in top["scores"]} <= {"simulation_r", "simulation_auc"}
    for n in page["correlated"]:
        assert n["explanation"] == labels[n["source"]].get(n["index"])
    html = client.get(f"/{slug}/{name}/{unit}").text
    assert top["text"].replace('"', "&#34;") in html and "n=" in html
    rows = client.get(f"/{slug}/{name}.json?sort=index&order=asc").json()["units"]
    assert [r["explanation"] for r in rows] == [labels[name].get(r["index"]) for r in rows]


def test_search_pages_and_bad_input(explained, client, tiny_index):
    slug = tiny_index.slug
    labels = _labels(explained[0], slug)
    name, unit, word = next(
        (n, u, w) for n, ls in labels.items() for u, t in sorted(ls.items())
        for w in storage.search_terms(t.split(";")[0])
    )  # fmt: skip
    found = client.get(f"/{slug}/search.json", params={"q": word, "source": name}).json()
    assert found["hits"] and all(h["source"] == name for h in found["hits"])
    pages, page = [], 1
    while True:  # every page, until the last
        got = client.get(f"/{slug}/search.json", params={"q": word, "page": page}).json()
        pages += [(h["source"], h["index"]) for h in got["hits"]]
        if not got["has_next"]:
            break
        page += 1
    assert (name, unit) in pages and len(pages) == len(set(pages))
    html = client.get(f"/{slug}/search", params={"q": word, "source": "", "min_density": ""})
    assert html.status_code == 200 and f"/{slug}/{name}/" in html.text
    assert client.get(f"/{slug}/search", params={"q": '"" * ( - ^'}).status_code == 422
    assert client.get(f"/{slug}/search", params={"q": "x" * 201}).status_code == 422
    assert client.get(f"/{slug}/search", params={"q": "a", "source": "nope"}).status_code == 404
    assert client.get("/nope/search", params={"q": "a"}).status_code == 404
    bad = client.get(f"/{slug}/search.json", params={"q": "a", "min_density": "2"})
    assert bad.status_code == 422


def test_live_views_label_their_units(explained, client, tiny_index):
    slug = tiny_index.slug
    labels = _labels(explained[0], slug)
    text = "The cat sat on the mat, and the dog sat by the door."
    fired = client.post(f"/api/{slug}/prompt", json={"text": text}).json()
    units = fired["top"] + [u for t in fired["tokens"] for u in t["units"]]
    assert units and any(u["explanation"] for u in units)
    for u in units:
        assert u["explanation"] == labels[u["source"]].get(u["index"])
    assert 'class="label"' in client.get(f"/{slug}/prompt", params={"text": text}).text
    attr = client.post(f"/api/{slug}/attribution", json={"text": text}).json()
    assert attr["neurons"]
    for p in attr["neurons"] + attr["latents"]:
        assert p["explanation"] == labels[p["source"]].get(p["index"])
    name, unit = next((n, u) for n, ls in labels.items() for u in sorted(ls))
    body = {"prompt": "The", "units": [{"source": name, "index": unit, "strength": 1.0}],
            "max_new_tokens": 2}  # fmt: skip
    steered = client.post(f"/api/{slug}/steer", json=body).json()
    assert steered["units"][0]["explanation"] == labels[name][unit]


def test_a_label_added_later_shows_first_without_a_restart(explained, client, tiny_index):
    db, _ = explained
    slug = tiny_index.slug
    labels = _labels(db, slug)
    name, unit = next((n, u) for n, ls in labels.items() for u in sorted(ls))
    before = client.get(f"/{slug}/{name}/{unit}.json").json()["explanations"]
    engine = storage.make_engine(db)
    with engine.begin() as conn:
        m = storage.get_model(conn, slug)
        s = storage.get_source(conn, m.id, name)
        label = {"unit": unit, "method": "human", "settings": "", "text": "a person's label"}
        storage.add_explanations(conn, s.id, [label | {"explainer": "tester"}])
    engine.dispose()
    after = client.get(f"/{slug}/{name}/{unit}.json").json()["explanations"]
    assert after[0]["text"] == "a person's label" and after[1:] == before
    found = client.get(f"/{slug}/search.json", params={"q": "person"}).json()["hits"]
    assert [(h["source"], h["index"]) for h in found] == [(name, unit)]


def test_a_person_labels_a_unit_through_the_api(explained, client, tiny_index, tmp_path):
    slug = tiny_index.slug
    url = f"/api/{slug}/0-mlp/2/labels"
    made = client.post(url, json={"text": "  fires on   cats ", "author": "ada"})
    assert made.status_code == 201, made.text
    assert made.json()["text"] == "fires on cats" and made.json()["explainer"] == "ada"
    page = client.get(f"/{slug}/0-mlp/2.json").json()["explanations"]
    assert page[0]["method"] == "human" and page[0]["text"] == "fires on cats"
    assert any(e["method"] == "token-pattern" for e in page[1:]) or len(page) == 1
    hits = client.get(f"/{slug}/search.json", params={"q": "cats"}).json()["hits"]
    assert ("0-mlp", 2) in {(h["source"], h["index"]) for h in hits}
    for body, field in (
        ({"text": " ", "author": "ada"}, "text"),
        ({"text": "x" * 501, "author": "ada"}, "text"),
        ({"text": "ok", "author": ""}, "author"),
        ({"text": "ok", "author": "ada", "score": 1}, "score"),
    ):
        r = client.post(url, json=body)
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == field, r.text
    assert (
        client.post(
            f"/api/{slug}/0-mlp/99999/labels", json={"text": "a", "author": "b"}
        ).status_code
        == 404
    )
    assert (
        client.post(f"/api/{slug}/nope/0/labels", json={"text": "a", "author": "b"}).status_code
        == 404
    )

    from fastapi.testclient import TestClient

    from app.main import create_app
    from spyglass.settings import Settings

    with TestClient(create_app(Settings(db=explained[0], labels=False))) as off:
        assert off.post(url, json={"text": "a", "author": "b"}).status_code == 403


def test_token_search_equals_the_stored_examples_and_logits(client, tiny_index):
    """Every unit whose top examples sit on the token, with the share of its top_k, and
    every unit with the token among its top (bottom) logit effects: recounted from the
    stored pages."""
    slug = tiny_index.slug
    stored = read_index(tiny_index.db, slug)
    k = stored.model.top_k
    vocab = client.get(f"/{slug}/sequences/0.json").json()
    seqs = stored.sequences
    counts: dict[int, Counter] = {}
    for src in stored.sources:
        for u, examples in enumerate(stored.examples[src.layer]):
            for e in examples:
                if e.value > 0:
                    counts.setdefault(seqs[e.sequence_id].tokens[e.position], Counter())[
                        (src.name, u)
                    ] += 1
    token_id = max(counts, key=lambda t: len(counts[t]))
    text = dict(zip(vocab["token_ids"], vocab["tokens"], strict=False)).get(token_id)
    if text is None:  # the token's text, from any unit page that shows it
        engine = storage.make_engine(tiny_index.db)
        with engine.connect() as conn:
            text = storage.token_texts(conn, stored.model.id, [token_id])[token_id]
        engine.dispose()
    hits, page = [], 1
    while True:
        got = client.get(f"/{slug}/search.json", params={"token": text, "page": page}).json()
        hits += got["hits"]
        if not got["has_next"]:
            break
        page += 1
    same_text = {h["token"] for h in hits} == {text}
    assert same_text
    assert {(h["source"], h["index"]): h["weight"] for h in hits} == pytest.approx(
        {unit: c / k for unit, c in counts[token_id].items()}
    )
    weights = [h["weight"] for h in hits]
    assert weights == sorted(weights, reverse=True)
    for effect, side in (("promotes", "top"), ("suppresses", "bottom")):
        expect = {
            (src.name, u.idx): dict(u.logits[side])[token_id]
            for src in stored.sources
            for u in stored.units[src.layer]
            if token_id in dict(u.logits[side])
        }
        got = client.get(
            f"/{slug}/search.json", params={"token": text, "effect": effect, "page": 1}
        ).json()
        assert len(got["hits"]) == min(20, len(expect))
        for h in got["hits"]:
            assert h["weight"] == pytest.approx(expect[(h["source"], h["index"])], abs=1e-4)
    both = client.get(f"/{slug}/search.json", params={"token": text, "min_density": 0.1})
    assert both.status_code == 422 and both.json()["errors"][0]["rule"] == "not_with_token"
    bad = client.get(f"/{slug}/search.json", params={"token": "no such token \u2603"})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "token"
    html = client.get(f"/{slug}/search", params={"token": text})
    assert html.status_code == 200
    first = hits[0]
    assert f'href="/{slug}/{first["source"]}/{first["index"]}"' in html.text


def test_an_index_written_before_explanations_still_serves(tiny_index, tmp_path):
    """No explanation or token tables (an index from before them): every page answers,
    without labels; token search says why it cannot."""
    import sqlite3

    from fastapi.testclient import TestClient

    from app.main import create_app
    from spyglass.settings import Settings

    db = copy_index(tiny_index.db, tmp_path)
    with sqlite3.connect(db) as conn:
        for name in ("explanations_fts", "explanations", "explain_failures", "token_units"):
            conn.execute(f"DROP TABLE {name}")
    slug = tiny_index.slug
    with TestClient(create_app(Settings(db=db)), client=("127.0.0.1", 50000)) as old:
        assert old.get(f"/{slug}/0-mlp/1.json").json()["explanations"] == []
        assert old.get(f"/{slug}/0-mlp/1").status_code == 200
        assert old.get(f"/{slug}/0-mlp.json").json()["units"][0]["explanation"] is None
        assert old.get(f"/{slug}/search.json", params={"q": "the"}).json()["hits"] == []
        r = old.get(f"/{slug}/search.json", params={"token": "the"})
        assert r.status_code == 422 and "index it again" in r.json()["detail"]
        made = old.post(f"/api/{slug}/0-mlp/1/labels", json={"text": "a label", "author": "b"})
        assert made.status_code == 201  # the label store adds the tables
        assert old.get(f"/{slug}/0-mlp/1.json").json()["explanations"][0]["text"] == "a label"


def test_new_settings_replace_a_methods_old_explanations_not_labels(tiny_index, tmp_path):
    """An index explained by an earlier version (other settings) is explained again, and
    the old token-pattern rows go; a person's label stays."""
    db = copy_index(tiny_index.db, tmp_path)
    first = run.explain_index(db, tiny_index.slug, progress=False)
    engine = storage.make_engine(db)
    with engine.begin() as conn:
        conn.execute(storage.explanations.update().values(settings="an older version"))
        s = storage.list_sources(conn, storage.get_model(conn, tiny_index.slug).id)[0]
        label = {"unit": 0, "method": "human", "settings": "", "text": "mine", "explainer": "ada"}
        storage.add_explanations(conn, s.id, [label])
    engine.dispose()
    again = run.explain_index(db, tiny_index.slug, progress=False)
    assert again.explained == first.explained and again.skipped == 0
    rows = _all(db, tiny_index.slug)
    per_unit = Counter((k, e.method) for k, v in rows.items() for e in v)
    assert set(per_unit.values()) == {1}
    assert [e.text for e in rows[(s.name, 0)] if e.method == "human"] == ["mine"]
    assert all(e.settings == run.settings_key() for v in rows.values() for e in v
               if e.method == "token-pattern")  # fmt: skip
