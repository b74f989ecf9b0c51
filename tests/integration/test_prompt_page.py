"""/{model}/prompt: which units fire on a prompt, against a fresh TransformerLens run."""

from __future__ import annotations

from urllib.parse import quote, unquote

import pytest
from bs4 import BeautifulSoup
from fastapi.testclient import TestClient
from index_checks import fresh_hooked

from app.main import create_app
from spyglass.model import load_model
from spyglass.settings import Settings

TEXT = "The quick brown fox jumps over the lazy dog, and the dog sleeps."


@pytest.fixture(scope="module")
def client(tiny_index):
    with TestClient(create_app(Settings(db=tiny_index.db, max_prompt_tokens=48))) as c:
        yield c


@pytest.fixture(scope="module")
def reference(tiny_index):
    """{source: [T, U]} neuron activations on TEXT from plain run_with_cache."""
    ids = load_model(str(tiny_index.model_dir), "cpu").encode_prompt(TEXT)
    hooked = fresh_hooked(tiny_index.model_dir)
    import torch

    _, cache = hooked.run_with_cache(torch.tensor([ids]))
    return ids, {f"{i}-mlp": cache[f"blocks.{i}.mlp.hook_post"][0] for i in (0, 1)}


def test_top_units_are_an_exact_merge_across_sources(client, reference):
    ids, acts = reference
    data = client.post("/api/tiny/prompt", json={"text": TEXT}).json()
    assert data["sources"] == ["0-mlp", "1-mlp"] and data["skip_first"] == 1
    every = sorted(
        ((a[1:, u].max().item(), name, u) for name, a in acts.items() for u in range(a.shape[1])),
        key=lambda t: (-t[0], t[1], t[2]),
    )
    top = data["top"]
    assert len(top) == 25
    assert [(u["source"], u["index"]) for u in top] == [(n, u) for _, n, u in every[:25]]
    assert [u["value"] for u in top] == pytest.approx([v for v, _, _ in every[:25]], abs=1e-5)
    both = {u["source"] for u in top}
    assert both == {"0-mlp", "1-mlp"}, "a merge, not one source's list"
    for u in top:
        assert acts[u["source"]][u["position"], u["index"]].item() == pytest.approx(u["value"])
        assert u["url"] == f"/tiny/{u['source']}/{u['index']}?prompt={quote(TEXT)}"
        assert u["density"] is not None and u["preview"]["tokens"]
    # Each token's own top 10 across both sources.
    assert len(data["tokens"]) == len(ids) and data["tokens"][0]["units"] == []
    for t in data["tokens"][1:]:
        p = t["position"]
        here = sorted(
            ((a[p, u].item(), n, u) for n, a in acts.items() for u in range(a.shape[1])),
            key=lambda x: (-x[0], x[1], x[2]),
        )[:10]
        assert [(u["source"], u["index"]) for u in t["units"]] == [(n, u) for _, n, u in here]


def test_choosing_one_source_searches_only_it(client, reference):
    _, acts = reference
    data = client.get(f"/tiny/prompt.json?text={quote(TEXT)}&source=1-mlp").json()
    assert data["sources"] == ["1-mlp"]
    assert {u["source"] for u in data["top"]} == {"1-mlp"}
    best = acts["1-mlp"][1:].max(dim=0).values.topk(25).values.tolist()
    assert [u["value"] for u in data["top"]] == pytest.approx(best, abs=1e-5)


def test_page_lists_tokens_and_top_units_with_links(client):
    r = client.get(f"/tiny/prompt?text={quote(TEXT)}")
    assert r.status_code == 200
    page = BeautifulSoup(r.text, "html.parser")
    assert len(page.select(".prompt-tok")) == len(page.select(".prompt-tok")) > 5
    assert len(page.select("#top-units tbody tr")) == 25
    link = page.select_one("#top-units a")["href"]
    assert "?prompt=" in link
    assert unquote(link.split("?prompt=")[1]) == TEXT
    # The unit page is the same with or without the prompt (so it is cached once); its
    # script fills the box from ?prompt= and fires the form's "carried" trigger (the browser
    # tier checks that it runs).
    carried = client.get(link)
    plain = client.get(link.split("?")[0])
    assert carried.text == plain.text and carried.headers["etag"] == plain.headers["etag"]
    form = BeautifulSoup(carried.text, "html.parser").select_one("#prompt-form")
    assert "carried" in form["hx-trigger"] and "load" not in form["hx-trigger"]


def test_empty_prompt_shows_the_form_only(client):
    r = client.get("/tiny/prompt")
    assert r.status_code == 200 and 'id="prompt-units-form"' in r.text
    assert client.get("/tiny/prompt.json").json()["top"] == []


@pytest.mark.parametrize(
    ("query", "needle"),
    [
        ("text=hello&source=9-mlp", "unknown source"),
        ("text=" + "fox " * 60, "context is 32"),  # under the cap of 48
    ],
)
def test_bad_prompt_requests_are_422(client, query, needle):
    r = client.get(f"/tiny/prompt?{query}")
    assert r.status_code == 422 and needle in r.text
    r = client.get(f"/tiny/prompt.json?{query}")
    assert r.status_code == 422 and needle in r.json()["detail"]
    assert client.get("/nosuch/prompt?text=hi").status_code == 404


def test_relative_ranking_divides_by_each_units_corpus_max(client, reference, tiny_index):
    from spyglass import storage

    _, acts = reference
    engine = storage.make_engine(tiny_index.db)
    with engine.connect() as conn:
        m = storage.get_model(conn, "tiny")
        maxima = {
            s.name: storage.unit_max_acts(conn, s.id) for s in storage.list_sources(conn, m.id)
        }
    engine.dispose()
    data = client.get(f"/tiny/prompt.json?text={quote(TEXT)}&rank=relative").json()
    every = sorted(
        (
            (a[1:, u] / maxima[n][u]).max().item() if maxima[n][u] > 0 else float("-inf"),
            n,
            u,
        )
        for n, a in acts.items()
        for u in range(a.shape[1])
    )
    every.sort(key=lambda t: (-t[0], t[1], t[2]))
    assert [(u["source"], u["index"]) for u in data["top"]] == [(n, u) for _, n, u in every[:25]]
    for u in data["top"]:
        assert u["relative"] == pytest.approx(u["value"] / maxima[u["source"]][u["index"]])
    page = client.get(f"/tiny/prompt?text={quote(TEXT)}&rank=relative").text
    assert "/ corpus max" in page
