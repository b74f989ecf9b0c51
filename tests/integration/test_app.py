"""The served app over the tiny index: page data, HTML structure, 404s, 4xx, live forms."""

from __future__ import annotations

import pytest
import torch
from bs4 import BeautifulSoup
from fastapi.testclient import TestClient
from index_checks import assert_top

from app.main import create_app
from spyglass.model import load_model
from spyglass.settings import Settings

HX = {"HX-Request": "true"}


@pytest.fixture(scope="module")
def client(tiny_index):
    settings = Settings(db=tiny_index.db, page_size=10, max_prompt_tokens=24, max_new_tokens=8)
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.fixture(scope="module")
def model(tiny_index):
    return load_model(str(tiny_index.model_dir), "cpu")


def soup(resp) -> BeautifulSoup:
    assert resp.status_code == 200, resp.text[:300]
    return BeautifulSoup(resp.text, "html.parser")


def unit_with_examples(client, source="0-mlp") -> dict:
    for i in range(64):
        data = client.get(f"/tiny/{source}/{i}.json").json()
        if len(data["examples"]) >= 3:
            return data
    raise AssertionError("no unit with examples in the tiny index")


# ---- navigation pages ------------------------------------------------------------------------


def test_home_lists_the_model_with_counts(client, tiny_index):
    data = client.get("/.json").json()
    (m,) = data["models"]
    assert m["slug"] == "tiny"
    assert m["n_sequences"] == tiny_index.report.n_sequences > 0
    assert m["n_tokens"] == tiny_index.report.n_tokens
    page = soup(client.get("/"))
    link = page.select_one("#models a[href='/tiny']")
    assert link is not None and link.text == "tiny"


def test_model_page_lists_one_source_per_layer(client):
    data = client.get("/tiny.json").json()
    assert [s["name"] for s in data["sources"]] == ["0-mlp", "1-mlp"]
    assert all(s["n_units"] == 64 for s in data["sources"])
    page = soup(client.get("/tiny"))
    assert [a["href"] for a in page.select("#sources a")] == ["/tiny/0-mlp", "/tiny/1-mlp"]


@pytest.mark.parametrize(("sort", "order"), [("max_act", "desc"), ("density", "asc")])
def test_source_page_sorts_and_paginates(client, sort, order):
    seen = []
    for page in range(1, 8):
        data = client.get(f"/tiny/0-mlp.json?sort={sort}&order={order}&page={page}").json()
        assert data["n_pages"] == 7  # 64 units, 10 per page
        seen += data["units"]
    assert sorted(u["index"] for u in seen) == list(range(64))
    keys = [u[sort] for u in seen]
    assert keys == sorted(keys, reverse=order == "desc")
    page = soup(client.get(f"/tiny/0-mlp?sort={sort}&order={order}"))
    rows = page.select("#units tbody tr")
    assert len(rows) == 10
    assert rows[0].select_one("a")["href"] == seen[0]["url"]
    assert page.select_one("#density-plot")["data-plot"]


def test_random_unit_redirects_to_a_unit(client):
    r = client.get("/tiny/1-mlp/random", follow_redirects=False)
    assert r.status_code == 302
    prefix, idx = r.headers["location"].rsplit("/", 1)
    assert prefix == "/tiny/1-mlp" and 0 <= int(idx) < 64


# ---- the unit page -----------------------------------------------------------------------------


def test_unit_json_examples_are_consistent_with_sequences(client):
    data = unit_with_examples(client)
    assert data["max_act"] == data["examples"][0]["value"]  # both the same value: a max
    values = [e["value"] for e in data["examples"]]
    assert values == sorted(values, reverse=True) and all(v > 0 for v in values)
    for e in data["examples"]:
        assert set(e) >= {"sequence_id", "position", "value", "tokens", "acts"}
        assert len(e["tokens"]) == len(e["acts"])
        assert e["acts"][e["position"] - e["window_start"]] == e["value"]
        seq = client.get(f"/tiny/sequences/{e['sequence_id']}.json").json()
        start = e["window_start"]
        assert seq["tokens"][start : start + len(e["tokens"])] == e["tokens"]


def test_unit_html_shades_tokens_and_marks_the_max(client):
    data = unit_with_examples(client)
    url = f"/tiny/0-mlp/{data['index']}"
    page = soup(client.get(url))
    boxes = page.select("#examples .example")
    assert len(boxes) == len(data["examples"])
    for box, e in zip(boxes, data["examples"], strict=True):
        toks = box.select(".tok")
        assert [t.text for t in toks] == [t.replace("\n", "↵") for t in e["tokens"]]
        assert [float(t["data-v"]) for t in toks] == pytest.approx(e["acts"], rel=1e-3, abs=1e-4)
        (focus,) = box.select(".tok.focus")
        assert toks.index(focus) == e["position"] - e["window_start"]
        assert box.select_one("button.expand")["hx-get"] == f"{url}/examples/{e['rank']}"
    assert page.select_one("#copy-link")["data-path"] == url
    assert page.select_one("#random")["href"] == "/tiny/0-mlp/random"


def test_unit_page_shows_intervals_histograms_and_neighbours(client):
    data = unit_with_examples(client)
    url = f"/tiny/0-mlp/{data['index']}"
    assert len(data["intervals"]) == 10
    assert sum(iv["count"] for iv in data["intervals"]) == sum(data["histogram"]["y"])
    assert sum(iv["share"] for iv in data["intervals"]) == pytest.approx(1.0)
    for iv in data["intervals"]:
        for e in iv["samples"]:
            assert iv["lo"] < e["value"] <= iv["hi"]
            seq = client.get(f"/tiny/sequences/{e['sequence_id']}.json").json()
            start = e["window_start"]
            assert seq["tokens"][start : start + len(e["tokens"])] == e["tokens"]
    assert len(data["correlated"]) == 10 and data["correlation_tokens"] > 0
    page = soup(client.get(url))
    boxes = page.select("#intervals .interval")
    assert len(boxes) == 10
    top = data["intervals"][-1]
    assert f"{top['share'] * 100:.3g}" in boxes[0].h3.text or "%" in boxes[0].h3.text
    assert len(boxes[0].select(".example")) == len(top["samples"])
    assert page.select_one("#activation-plot")["data-plot"]
    assert "density" in page.select_one("#activation-plot")["data-title"]
    assert page.select_one("#logit-plot")["data-plot"]
    links = [a["href"] for a in page.select("#correlated a")]
    assert links == [
        f"/tiny/0-mlp/{j}" for j in (n["url"].rsplit("/", 1)[1] for n in data["correlated"])
    ]
    for link in links[:3]:
        assert client.get(link).status_code == 200


def test_prev_next_links_stop_at_the_ends(client):
    first = soup(client.get("/tiny/0-mlp/0"))
    assert (
        first.select_one("#prev") is None and first.select_one("#next")["href"] == "/tiny/0-mlp/1"
    )
    last = soup(client.get("/tiny/0-mlp/63"))
    assert last.select_one("#next") is None and last.select_one("#prev")["href"] == "/tiny/0-mlp/62"


def test_logit_effect_is_w_out_at_w_u(client, tiny_index):
    state = torch.load(tiny_index.model_dir / "state_dict.pt", weights_only=True)
    effect = state["blocks.1.mlp.W_out"][7] @ state["unembed.W_U"]  # computed here, not by the app
    data = client.get("/tiny/1-mlp/7.json").json()
    # The ranking up to ties within 1e-5: |effect| < 1 here, and the app's float32 16-term
    # sums and these round apart by ~1e-7 (neighbouring top values are ~1e-3 apart).
    assert len(data["logits_top"]) == len(data["logits_bottom"]) == 10
    assert_top([t["token_id"] for t in data["logits_top"]], effect, atol=1e-5)
    assert_top([t["token_id"] for t in data["logits_bottom"]], -effect, atol=1e-5)
    assert [t["value"] for t in data["logits_top"]] == pytest.approx(
        effect.topk(10).values.tolist(), abs=1e-4
    )


def test_example_expands_to_its_whole_sequence(client):
    data = unit_with_examples(client)
    e = data["examples"][0]
    r = client.get(f"/tiny/0-mlp/{data['index']}/examples/{e['rank']}", headers=HX)
    frag = soup(r)
    assert frag.select_one("html") is None  # a fragment, not a page
    box = frag.select_one(".example.expanded")
    seq = client.get(f"/tiny/sequences/{e['sequence_id']}.json").json()
    assert len(box.select(".tok")) == len(seq["tokens"]) == 16
    assert len(box.select(".tok[data-v]")) == len(e["acts"])


# ---- not found and bad input -------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/nope",
        "/tiny/7-mlp",
        "/tiny/0-mlp/64",
        "/tiny/0-mlp/-1",
        "/tiny/0-mlp/abc",
        "/tiny/sequences/99999",
        "/tiny/0-mlp/0/examples/99",
        "/nope/0-mlp/random",
    ],
)
def test_unknown_things_are_404_pages_and_404_json(client, path):
    r = client.get(path)
    assert r.status_code == 404
    assert soup_error(r)
    if "/examples/" not in path:  # an htmx fragment has no JSON twin
        rj = client.get(path + ".json")
        assert rj.status_code == 404 and rj.json()["detail"]


def soup_error(r) -> str:
    return BeautifulSoup(r.text, "html.parser").select_one(".error").text


@pytest.mark.parametrize(
    "query", ["sort=bogus", "order=up", "page=0", "page=x"], ids=lambda q: q.split("=")[0]
)
def test_bad_browse_parameters_are_422(client, query):
    r = client.get(f"/tiny/0-mlp?{query}")
    assert r.status_code == 422
    assert query.split("=")[0] in soup_error(r)


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"prompt": ""}, "empty"),
        ({"prompt": "x" * 5000}, "limit is 4000"),
        ({"prompt": "the fox " * 40}, "limit is 24"),
        ({"prompt": "the fox", "coefficient": 5000}, "coefficient"),
        ({"prompt": "the fox", "max_new_tokens": 9}, "max_new_tokens"),
        ({"prompt": "the fox", "max_new_tokens": 0}, "max_new_tokens"),
        ({"prompt": "the fox", "temperature": -1}, "temperature"),
        ({"prompt": "the fox", "seed": -2}, "seed"),
        ({"prompt": "the fox", "max_new_tokens": "many"}, "max_new_tokens"),
        ({}, "prompt"),
    ],
)
def test_live_limits_are_422_naming_the_cap(client, body, needle):
    for endpoint in ("steer",) + (("activations",) if set(body) <= {"prompt"} else ()):
        r = client.post(f"/api/tiny/0-mlp/3/{endpoint}", json=body)
        assert r.status_code == 422, r.text
        assert needle in r.text
        frag = client.get(f"/tiny/0-mlp/3/{endpoint}", params=body, headers=HX)
        assert frag.status_code == 422
        assert needle in soup_error(frag)


def test_live_requests_on_unknown_units_are_404(client):
    assert client.post("/api/tiny/0-mlp/64/activations", json={"prompt": "a"}).status_code == 404
    assert client.post("/api/nope/0-mlp/1/steer", json={"prompt": "a"}).status_code == 404


# ---- live model --------------------------------------------------------------------------------


def test_live_activations_equal_a_fresh_run(client, model):
    prompt = "the quick brown fox"
    data = client.post("/api/tiny/1-mlp/5/activations", json={"prompt": prompt}).json()
    ids = model.encode_prompt(prompt)
    expect = model.mlp_activations(torch.tensor([ids]), [1])[1][0, :, 5].tolist()
    assert [t["value"] for t in data["tokens"]] == pytest.approx(expect, abs=1e-6)
    assert [t["token"] for t in data["tokens"]] == model.token_strings(ids)
    frag = soup(client.get("/tiny/1-mlp/5/activations", params={"prompt": prompt}, headers=HX))
    assert len(frag.select(".tok[data-v]")) == len(ids)


def test_steering_with_zero_reproduces_default_and_a_push_changes_it(client):
    base = {"prompt": "the fox", "max_new_tokens": 8, "temperature": 0}
    zero = client.post("/api/tiny/0-mlp/3/steer", json=base | {"coefficient": 0}).json()
    assert zero["steered"] == zero["default"] and zero["default"]
    sampled = base | {"temperature": 1.0, "seed": 7, "coefficient": 0}
    a = client.post("/api/tiny/0-mlp/3/steer", json=sampled).json()
    b = client.post("/api/tiny/0-mlp/3/steer", json=sampled).json()
    assert a == b  # same seed, same text
    pushed = client.post("/api/tiny/0-mlp/3/steer", json=base | {"coefficient": 500}).json()
    assert pushed["default"] == zero["default"] and pushed["steered"] != pushed["default"]


def test_default_coefficient_is_the_unit_max(client):
    unit = client.get("/tiny/0-mlp/3.json").json()
    res = client.post("/api/tiny/0-mlp/3/steer", json={"prompt": "the fox", "max_new_tokens": 2})
    assert res.json()["coefficient"] == unit["max_act"]


def test_prompt_and_corpus_text_is_escaped(client, tiny_index):
    hostile = '<script>alert("x")</script>'
    frag = client.get("/tiny/0-mlp/1/activations", params={"prompt": hostile}, headers=HX)
    assert frag.status_code == 200 and "<script>alert" not in frag.text
    steer = client.get("/tiny/0-mlp/1/steer", params={"prompt": hostile, "max_new_tokens": 2})
    assert "<script>alert" not in steer.text and "&lt;script&gt;" in steer.text
    for sid in range(tiny_index.report.n_sequences):
        seq = client.get(f"/tiny/sequences/{sid}.json").json()
        if "script" in "".join(seq["tokens"]):
            html = client.get(f"/tiny/sequences/{sid}").text
            assert "<script>alert" not in html
            return
    pytest.fail("the tiny corpus's <script> text did not reach any stored sequence")


def test_openapi_documents_the_live_twins(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert "/api/{model}/{source}/{index}/activations" in paths
    assert "/api/{model}/{source}/{index}/steer" in paths
    for twin in ("prompt", "steer", "attribution"):
        assert "post" in paths[f"/api/{{model}}/{twin}"]


def test_ablation_effect_equals_a_fresh_zero_ablation(client, tiny_index):
    from index_checks import fresh_hooked

    data = unit_with_examples(client)
    n, e = data["index"], data["examples"][0]
    got = client.get(f"/tiny/0-mlp/{n}/examples/0/ablation.json").json()
    seq = client.get(f"/tiny/sequences/{e['sequence_id']}.json").json()
    hooked = fresh_hooked(tiny_index.model_dir)
    ids = torch.tensor([seq["token_ids"]])
    tokens = seq["token_ids"]

    def zero(act, hook):
        act[..., n] = 0
        return act

    with torch.inference_mode():
        clean = hooked(ids)[0].log_softmax(-1)
        ablated = hooked.run_with_hooks(ids, fwd_hooks=[("blocks.0.mlp.hook_post", zero)])[
            0
        ].log_softmax(-1)
    assert [t["position"] for t in got["tokens"]] == list(
        range(e["window_start"], e["window_start"] + len(e["tokens"]))
    )
    moved = 0.0
    for t in got["tokens"]:
        p = t["position"]
        if p == 0:
            assert t["loss_delta"] is None
            continue
        expect = -(ablated[p - 1, tokens[p]] - clean[p - 1, tokens[p]]).item()
        assert t["loss_delta"] == pytest.approx(expect, abs=1e-5)
        moved = max(moved, abs(expect))
        change = ablated[p - 1].exp() - clean[p - 1].exp()
        # Probabilities from two runs that round apart (the log-probabilities agree to
        # 1e-5, above): the top 3 up to ties within 1e-5.
        assert len(t["up"]) == 3
        assert_top([u["token_id"] for u in t["up"]], change, atol=1e-5)
    assert moved > 1e-4  # the unit matters on its own top example
    html = client.get(f"/tiny/0-mlp/{n}/examples/0/ablation").text
    assert html.count('class="tok abl"') == len(got["tokens"]) and "up: " in html
    page = soup(client.get(f"/tiny/0-mlp/{n}"))
    assert page.select_one("#example-0 button.ablate")["hx-get"] == (
        f"/tiny/0-mlp/{n}/examples/0/ablation"
    )
    assert client.get(f"/tiny/0-mlp/{n}/examples/99/ablation.json").status_code == 404


def test_mean_ablation_equals_a_fresh_run_setting_the_unit_to_its_mean(client, tiny_index):
    from index_checks import fresh_hooked

    data = unit_with_examples(client)
    n, e = data["index"], data["examples"][0]
    mean = data["mean"]
    assert mean is not None and mean != 0
    got = client.get(f"/tiny/0-mlp/{n}/examples/0/ablation.json?mode=mean").json()
    assert got["mode"] == "mean" and got["value"] == mean
    tokens = client.get(f"/tiny/sequences/{e['sequence_id']}.json").json()["token_ids"]
    hooked = fresh_hooked(tiny_index.model_dir)

    def to_mean(act, hook):
        act[..., n] = mean
        return act

    ids = torch.tensor([tokens])
    with torch.inference_mode():
        clean = hooked(ids)[0].log_softmax(-1)
        ablated = hooked.run_with_hooks(ids, fwd_hooks=[("blocks.0.mlp.hook_post", to_mean)])
        ablated = ablated[0].log_softmax(-1)
    for t in got["tokens"]:
        p = t["position"]
        if p:
            expect = -(ablated[p - 1, tokens[p]] - clean[p - 1, tokens[p]]).item()
            assert t["loss_delta"] == pytest.approx(expect, abs=1e-5)
    page = soup(client.get(f"/tiny/0-mlp/{n}"))
    assert page.select_one("#example-0 button.ablate-mean")["hx-get"].endswith("?mode=mean")
    assert client.get(f"/tiny/0-mlp/{n}/examples/0/ablation.json?mode=max").status_code == 422
