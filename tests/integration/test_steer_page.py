"""/{model}/steer: several units at once, shareable URLs, and strength 0 changing nothing."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest
from bs4 import BeautifulSoup
from fastapi.testclient import TestClient

from app.main import create_app
from spyglass.model import NeuronSteer, load_model
from spyglass.settings import Settings

PROMPT = "the quick brown fox"


@pytest.fixture(scope="module")
def client(tiny_index):
    settings = Settings(db=tiny_index.db, max_new_tokens=12, max_steer_units=3)
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.fixture(scope="module")
def model(tiny_index):
    return load_model(str(tiny_index.model_dir), "cpu")


def steer(client, units, **kw):
    body = {"prompt": PROMPT, "units": units, "max_new_tokens": 10} | kw
    r = client.post("/api/tiny/steer", json=body)
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_strength_zero_reproduces_the_default_exactly(client, temperature):
    units = [
        {"source": "0-mlp", "index": 3, "strength": 0.0},
        {"source": "1-mlp", "index": 60, "mode": "add", "strength": 0.0},
    ]
    data = steer(client, units, temperature=temperature, seed=5)
    # Exact by construction: x + 0.0 is x, so both generations are one computation, bit for
    # bit, and draw the same samples from the same seed.
    assert data["steered"] == data["default"] and data["diverge_at"] is None
    assert data["default"]["tokens"]


def test_several_units_steer_as_the_model_does(client, model):
    units = [
        {"source": "0-mlp", "index": 3, "mode": "add", "strength": 25.0},
        {"source": "1-mlp", "index": 60, "mode": "clamp", "strength": 30.0},
    ]
    data = steer(client, units, temperature=0, positions="prompt")
    ids = model.encode_prompt(PROMPT)
    run = dict(max_new_tokens=10, temperature=0, seed=16)
    expect = model.generate(
        ids,
        **run,
        steer=[
            NeuronSteer(0, 3, 25.0, prompt_only=True),
            NeuronSteer(1, 60, 30.0, clamp=True, prompt_only=True),
        ],
    )
    assert data["steered"]["tokens"] == model.token_strings(expect)
    default = model.generate(ids, **run)
    assert data["default"]["tokens"] == model.token_strings(default)
    first = next(i for i, (a, b) in enumerate(zip(default, expect, strict=False)) if a != b)
    assert data["diverge_at"] == first
    assert [u["url"] for u in data["units"]] == ["/tiny/0-mlp/3", "/tiny/1-mlp/60"]


def test_the_share_url_reproduces_the_result(client):
    units = [{"source": "1-mlp", "index": 60, "mode": "add", "strength": -40.0}]
    data = steer(client, units, temperature=0.7, seed=9)
    again = client.get(data["share"].replace("/steer?", "/steer.json?")).json()
    assert again["steered"] == data["steered"] and again["default"] == data["default"]
    page = BeautifulSoup(client.get(data["share"]).text, "html.parser")
    assert page.select_one("#share")["href"] == data["share"]
    assert len(page.select("#steered .gen")) == len(data["steered"]["tokens"])
    if data["diverge_at"] is not None:
        assert page.select("#steered .gen")[data["diverge_at"]]["class"] == ["gen", "diverged"]
    assert page.select_one("#steer-result a")["href"] == "/tiny/1-mlp/60"


def test_empty_form_renders_and_empty_rows_are_skipped(client):
    r = client.get("/tiny/steer")
    assert r.status_code == 200 and 'id="steer-units-form"' in r.text
    query = urlencode(
        [("prompt", PROMPT), ("unit", "0-mlp/3"), ("mode", "add"), ("strength", "0"),
         ("unit", ""), ("mode", "add"), ("strength", ""), ("max_new_tokens", "4")]
    )  # fmt: skip
    data = client.get(f"/tiny/steer.json?{query}").json()
    assert [u["index"] for u in data["units"]] == [3] and data["steered"] == data["default"]


@pytest.mark.parametrize(
    ("query", "needle"),
    [
        ([("unit", "0-mlp/3")], "one strength"),
        ([("unit", "0-mlp"), ("strength", "1")], "SOURCE/INDEX"),
        ([("unit", "0-mlp/3"), ("strength", "lots")], "not a number"),
        ([("unit", "0-mlp/3"), ("mode", "twist"), ("strength", "1")], "add or clamp"),
        ([("unit", "9-mlp/3"), ("strength", "1")], "unknown source"),
        ([("unit", "0-mlp/99999"), ("strength", "1")], "units 0.."),
        ([("unit", "0-mlp/3"), ("strength", "5000")], "strength of 0-mlp/3"),
        ([("unit", "0-mlp/1"), ("strength", "1")] * 4, "limit is 3"),
        ([("unit", "0-mlp/3"), ("strength", "1"), ("max_new_tokens", "50")], "max_new_tokens"),
        ([("strength", "1")], "one strength"),
    ],
)
def test_bad_steering_setups_are_422_naming_the_problem(client, query, needle):
    q = urlencode([("prompt", PROMPT), *query])
    r = client.get(f"/tiny/steer.json?{q}")
    assert r.status_code == 422 and needle in r.json()["detail"], r.text
    assert client.get(f"/tiny/steer?{q}").status_code == 422
