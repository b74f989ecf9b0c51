"""Direct logit attribution on the tiny model (LayerNorm with weights and biases, learned
position embeddings): the parts sum to the logit a fresh TransformerLens run gives."""

from __future__ import annotations

from urllib.parse import quote

import pytest
import torch
from bs4 import BeautifulSoup
from fastapi.testclient import TestClient
from index_checks import fresh_hooked

from app.main import create_app
from spyglass.model import load_model
from spyglass.settings import Settings

TEXT = "the quick brown fox jumps over the lazy"


@pytest.fixture(scope="module")
def client(tiny_index):
    with TestClient(create_app(Settings(db=tiny_index.db))) as c:
        yield c


@pytest.fixture(scope="module")
def model(tiny_index):
    return load_model(str(tiny_index.model_dir), "cpu")


@pytest.fixture(scope="module")
def fresh_logits(tiny_index, model):
    ids = model.encode_prompt(TEXT)
    with torch.inference_mode():
        return ids, fresh_hooked(tiny_index.model_dir)(torch.tensor([ids]))[0]


@pytest.mark.parametrize("position", [None, 3])
def test_parts_sum_to_the_fresh_logit(client, fresh_logits, position):
    ids, logits = fresh_logits
    query = f"text={quote(TEXT)}" + (f"&position={position}" if position is not None else "")
    data = client.get(f"/tiny/attribution.json?{query}").json()
    pos = len(ids) - 1 if position is None else position
    target = int(logits[pos].argmax())  # the default target: the top prediction
    assert data["position"] == pos
    assert data["logit"] == pytest.approx(logits[pos, target].item(), abs=1e-4)
    assert data["parts_sum"] + data["bias"] == pytest.approx(data["logit"], abs=1e-3)
    assert sum(p["value"] for p in data["components"]) == pytest.approx(data["parts_sum"], abs=1e-4)
    assert len(data["heads"]) == 2 and len(data["heads"][0]) == 4
    names = [p["label"] for p in data["components"]]
    assert names[:2] == ["embedding", "position embedding"] and "MLP 1" in names


def test_a_logit_difference_and_the_pieces_inside_a_layer(client, model, fresh_logits):
    ids, logits = fresh_logits
    pos = len(ids) - 1
    top2 = logits[pos].topk(2).indices.tolist()
    target, other = model.token_strings(top2)
    q = f"text={quote(TEXT)}&target={quote(target)}&other={quote(other)}"
    data = client.get(f"/tiny/attribution.json?{q}").json()
    expect = (logits[pos, top2[0]] - logits[pos, top2[1]]).item()
    assert data["logit"] == pytest.approx(expect, abs=1e-4)
    assert data["parts_sum"] + data["bias"] == pytest.approx(expect, abs=1e-3)
    # Inside the model boundary: heads + bias make each attention part, neurons + bias each MLP.
    a = model.attribute(ids, pos, top2[0], top2[1])
    for layer in range(2):
        total = float(a.neurons[layer].sum()) + a.mlp_bias[layer]
        assert total == pytest.approx(a.mlp[layer], abs=1e-4)
    for p in data["neurons"]:
        source, i = p["label"].split("/")
        assert p["value"] == pytest.approx(float(a.neurons[int(source[0])][int(i)]), abs=1e-5)
        assert p["url"] == f"/tiny/{p['label']}"


def test_page_draws_the_charts_and_errors_are_422(client):
    page = BeautifulSoup(client.get(f"/tiny/attribution?text={quote(TEXT)}").text, "html.parser")
    assert page.select_one("#components-plot")["data-plot"]
    assert page.select_one("#heads-plot")["data-kind"] == "heatmap"
    assert page.select("#attr-neurons tbody tr")
    assert client.get("/tiny/attribution").status_code == 200  # the empty form
    for query, needle in [
        ("position=99", "position must be in"),
        ("target=quick%20brown%20fox", "give exactly one"),
    ]:
        r = client.get(f"/tiny/attribution.json?text={quote(TEXT)}&{query}")
        assert r.status_code == 422 and needle in r.json()["detail"]


def test_biases_are_what_the_parts_leave_out(tiny_index):
    """With non-zero unembedding and final-norm biases, parts + bias still give the logit."""
    model = load_model(str(tiny_index.model_dir), "cpu")
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        model._tl.b_U.add_(torch.randn(model._tl.b_U.shape, generator=gen))
        model._tl.ln_final.b.add_(torch.randn(model._tl.ln_final.b.shape, generator=gen))
    ids = model.encode_prompt(TEXT)
    with torch.inference_mode():
        logits = model._tl(torch.tensor([ids]))[0]
    a = model.attribute(ids, 4, 7, 11)
    assert abs(a.bias) > 0.1
    assert a.logit == pytest.approx((logits[4, 7] - logits[4, 11]).item(), abs=1e-4)
    assert a.parts_sum + a.bias == pytest.approx(a.logit, abs=1e-3)
