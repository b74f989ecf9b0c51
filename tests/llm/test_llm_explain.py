"""``spyglass explain --explainer openai:URL`` against a real server (``transformers serve``
with SmolLM2-135M-Instruct): explanations come from the server, each unit is explained or
recorded as failed, each score is measured or recorded as failed (never both, never a
made-up one), the token-pattern baseline is scored beside the LLM, and retries ride out a
rate limit in front of the real server."""

from __future__ import annotations

import itertools

import httpx
import pytest
from chat_server import ChatServer
from index_checks import copy_index, read_index

from indexer.explain import llm, run, token_pattern
from spyglass import storage

pytestmark = pytest.mark.llm

SETTINGS = llm.LlmSettings(examples=2, batch=4)
SCORES = {"detection", "detection_hard", "fuzzing"}


def _units(tiny_index, n):
    """The last layer's neurons, the first ``n`` with at least 4 top examples."""
    stored = read_index(tiny_index.db, tiny_index.slug)
    src = stored.sources[-1]
    fired = [u for u, ex in enumerate(stored.examples[src.layer]) if len(ex) >= 4]
    return src.name, fired[:n]


def _explain(db, tiny_index, url, model, source, units, **kw):
    return run.explain_index(
        db, tiny_index.slug, sources=[source], units=",".join(map(str, units)),
        progress=False, explainer=f"openai:{url}", explainer_model=model,
        llm_settings=SETTINGS, concurrency=1, retries=1, **kw,
    )  # fmt: skip


def _stored(db, slug, source):
    engine = storage.make_engine(db)
    with engine.connect() as conn:
        m = storage.get_model(conn, slug)
        s = storage.get_source(conn, m.id, source)
        rows = {u: storage.get_explanations(conn, s.id, u) for u in range(s.n_units)}
        failures = conn.execute(
            storage.explain_failures.select().where(storage.explain_failures.c.source_id == s.id)
        ).all()
    engine.dispose()
    return rows, [(f.unit, f.method, f.error) for f in failures]


@pytest.fixture(scope="module")
def explained(tiny_index, llm_server, tmp_path_factory):
    db = copy_index(tiny_index.db, tmp_path_factory.mktemp("llm"))
    run.explain_index(db, tiny_index.slug, progress=False)  # the token pattern first
    source, units = _units(tiny_index, 3)
    report = _explain(db, tiny_index, llm_server.url, llm_server.model, source, units)
    return db, source, units, report


def test_each_unit_is_explained_by_the_server_or_recorded_as_failed(explained, tiny_index,
                                                                    llm_server):  # fmt: skip
    db, source, units, report = explained
    rows, failures = _stored(db, tiny_index.slug, source)
    assert report.usage.calls >= len(units) and report.usage.prompt_tokens > 0
    failed = {u for u, method, _ in failures if method == llm.METHOD}
    made = {u for u in units if any(e.method == llm.METHOD for e in rows[u])}
    assert made | failed == set(units) and not made & failed
    assert report.explained == len(made) and report.failed == len(failed)
    for u in made:
        (e,) = [e for e in rows[u] if e.method == llm.METHOD]
        assert e.explainer == llm_server.model
        assert 0 < len(e.text) <= 300 and any(c.isalpha() for c in e.text)
    assert all(err for _, _, err in failures)


def test_scores_are_measured_or_recorded_never_both(explained, tiny_index):
    db, source, units, _ = explained
    rows, failures = _stored(db, tiny_index.slug, source)
    for u in units:
        for e in rows[u]:
            if e.method != llm.METHOD:
                continue
            failed = {m for v, m, _ in failures if v == u}
            base = e.evidence["baseline"]
            for name, scores, prefix in ((n, e.scores, "") for n in SCORES):
                assert (name in scores) != (prefix + name in failed), (u, name)
            for name in SCORES:
                assert (name in base["scores"]) != (f"baseline:{name}" in failed), (u, name)
            for name, s in [*e.scores.items(), *base["scores"].items()]:
                low = -1 if name == "simulation_r" else 0  # r runs from -1, the rest from 0
                assert low <= s["lo"] <= s["hi"] <= 1 and low <= s["value"] <= 1, (u, name, s)
                assert s["n"] > 0


def test_the_baseline_is_the_units_token_pattern_explanation(explained, tiny_index):
    db, source, units, _ = explained
    rows, _ = _stored(db, tiny_index.slug, source)
    for u in units:
        by = {e.method: e for e in rows[u]}
        if llm.METHOD in by:
            assert by[llm.METHOD].evidence["baseline"]["text"] == by[token_pattern.METHOD].text


def test_a_rerun_tries_only_the_failed_units(explained, tiny_index, llm_server):
    db, source, units, first = explained
    again = _explain(db, tiny_index, llm_server.url, llm_server.model, source, units)
    assert again.skipped == first.explained
    assert again.explained + again.failed == first.failed


def test_the_unit_page_shows_the_llm_explanation_and_its_baseline(explained, tiny_index):
    from fastapi.testclient import TestClient

    from app.main import create_app
    from spyglass.settings import Settings

    db, source, units, _ = explained
    rows, _ = _stored(db, tiny_index.slug, source)
    made = [u for u in units if any(e.method == llm.METHOD for e in rows[u])]
    if not made:
        pytest.skip("the server explained none of the units (each is recorded as failed)")
    with TestClient(create_app(Settings(db=db))) as client:
        page = client.get(f"/{tiny_index.slug}/{source}/{made[0]}.json").json()
    llm_rows = [e for e in page["explanations"] if e["method"] == llm.METHOD]
    assert llm_rows and llm_rows[0]["baseline"]["method"] == token_pattern.METHOD


def test_retries_ride_out_a_rate_limit_in_front_of_the_real_server(
    tiny_index, llm_server, tmp_path
):
    db = copy_index(tiny_index.db, tmp_path)
    source, units = _units(tiny_index, 1)
    calls = itertools.count()

    def reply(body):
        if next(calls) in (1, 2):  # the first call is the endpoint check
            return 429, '{"error": {"message": "rate limited"}}', {"Retry-After": "0"}
        got = httpx.post(f"{llm_server.url}/v1/chat/completions", json=body, timeout=120)
        return got.status_code, got.text, {}

    with ChatServer(reply) as url:
        report = run.explain_index(
            db, tiny_index.slug, sources=[source], units=str(units[0]), progress=False,
            explainer=f"openai:{url}", explainer_model=llm_server.model,
            llm_settings=llm.LlmSettings(examples=2, batch=4, scorers=()), retries=2,
        )  # fmt: skip
    assert report.usage.retries >= 2
    assert report.explained + report.failed == 1
    rows, failures = _stored(db, tiny_index.slug, source)
    if report.failed:  # the model's answer itself was malformed: recorded, not stored
        assert [m for _, m, _ in failures] == [llm.METHOD]
        assert "malformed" in failures[0][2]
    else:
        assert any(e.method == llm.METHOD for e in rows[units[0]])


def test_rescore_scores_kept_llm_explanations_without_calling_the_explainer(
    explained, tiny_index, llm_server, tmp_path
):
    """After a re-index under the same name, ``--rescore`` scores the kept LLM explanations
    on the new index through the endpoint's scorers: no request the server gets is an
    explainer's prompt, and each kept explanation is scored on the new index."""
    from dataclasses import replace

    from indexer.explain import prompts
    from indexer.pipeline import build_index

    db = copy_index(explained[0], tmp_path)
    source = explained[1]
    rows, _ = _stored(db, tiny_index.slug, source)
    kept = {u: e for u, es in rows.items() for e in es if e.method == llm.METHOD}
    if not kept:
        pytest.fail("the server explained none of the units: nothing to re-score")
    build_index(replace(tiny_index.config, db=db, tokens=600))  # the same name, again
    systems = []

    def reply(body):
        system = [m["content"] for m in body["messages"] if m["role"] == "system"]
        systems.extend(system)  # none: the endpoint check ("Say OK.")
        got = httpx.post(f"{llm_server.url}/v1/chat/completions", json=body, timeout=120)
        return got.status_code, got.text, {}

    with ChatServer(reply) as url:
        report = _explain(db, tiny_index, url, llm_server.model, source, sorted(kept),
                          rescore=True)  # fmt: skip
    assert prompts.EXPLAIN_SYSTEM not in systems
    assert systems and set(systems) <= {prompts.DETECTION_SYSTEM, prompts.FUZZING_SYSTEM}
    rows, failures = _stored(db, tiny_index.slug, source)
    now = {u: e for u, es in rows.items() for e in es if e.method == llm.METHOD}
    assert {u: e.text for u, e in now.items()} == {u: e.text for u, e in kept.items()}
    engine = storage.make_engine(db)
    with engine.connect() as conn:
        created = storage.get_model(conn, tiny_index.slug).created
    engine.dispose()
    rescored = [e for e in now.values() if e.scored == created]
    assert len(rescored) == report.rescored > 0
    for e in rescored:  # each endpoint score measured on the new index, or recorded failed
        failed = {m for u, m, _ in failures if u == e.unit}
        assert all(name in e.scores or name in failed for name in SCORES), (e.scores, failed)
