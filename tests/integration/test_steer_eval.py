"""Steering over a prompt set on the tiny model: strength 0 measures exactly nothing, and
each measure is recomputed here with a fresh TransformerLens run, its own steering hook and
its own greedy loop (no KV cache)."""

from __future__ import annotations

import time

import pytest
import torch
from index_checks import fresh_hooked

from spyglass.model import NeuronSteer, load_model
from spyglass.steer_eval import evaluate, summarise

LAYER, NEURON = 1, 5
TEXTS = ["the quick brown fox", "a lazy dog sleeps near", "the river runs under the old"]
NEUTRAL = ["green field small morning horse", "the owl hunts at night in the forest"]


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return load_model(str(tiny_model_dir), "cpu")


def _run(model, strengths, targets):
    prompts = [model.encode_prompt(t) for t in TEXTS]
    neutral = [model.encode_prompt(t) for t in NEUTRAL + NEUTRAL[:1]]
    return prompts, neutral, evaluate(
        model, lambda s: [NeuronSteer(LAYER, NEURON, 3.0 * s)], strengths, prompts, neutral,
        targets, max_new_tokens=6, temperature=0.0, seed=1,
    )  # fmt: skip


def test_strength_zero_measures_exactly_nothing(model):
    _, _, ms = _run(model, [0.0, 1.0], [5, 9])
    zero = [m for m in ms if m.strength == 0]
    # Exact by construction: adding 0.0 leaves every activation as it is, so the steered and
    # unsteered runs are one computation on the same batches, bit for bit; effect and KL
    # are then sums of (x - x) = 0 terms.
    assert len(zero) == 3 and all(m.effect == 0.0 and m.kl == 0.0 for m in zero)
    assert any(m.kl > 0 for m in ms if m.strength == 1.0)


def test_each_measure_against_a_fresh_run(model, tiny_model_dir):
    targets = [5, 9, 12]
    prompts, neutral, ms = _run(model, [2.0, -1.0], targets)
    hooked = fresh_hooked(tiny_model_dir)

    def log_probs(ids, strength):
        def push(act, hook):
            act[..., NEURON] += 3.0 * strength
            return act

        hooks = [(f"blocks.{LAYER}.mlp.hook_post", push)] if strength else []
        with torch.no_grad():
            out = hooked.run_with_hooks(torch.tensor([ids]), fwd_hooks=hooks)
        return out[0].double().log_softmax(-1)

    for m in ms:
        ids = list(prompts[m.prompt])
        for _ in range(6):  # greedy, recomputed from scratch at every step
            ids.append(int(log_probs(ids, m.strength)[-1].argmax()))
        new = ids[len(prompts[m.prompt]) :]
        assert m.continuation == new
        rows = range(len(prompts[m.prompt]) - 1, len(ids) - 1)
        steered, plain = log_probs(ids, m.strength), log_probs(ids, 0.0)
        effect = sum(
            float(steered[r, targets].logsumexp(-1) - plain[r, targets].logsumexp(-1)) for r in rows
        ) / len(rows)
        fluency = -sum(float(plain[r, ids[r + 1]]) for r in rows) / len(rows)
        p, q = log_probs(neutral[m.prompt], 0.0), log_probs(neutral[m.prompt], m.strength)
        kl = torch.nn.functional.kl_div(q, p, log_target=True, reduction="none").sum(-1).mean()
        assert m.effect == pytest.approx(effect, abs=1e-4)
        assert m.fluency == pytest.approx(fluency, abs=1e-4)
        assert m.kl == pytest.approx(float(kl), abs=1e-5)


def test_the_summary_per_strength(model):
    _, _, ms = _run(model, [0.0, 1.0, -1.0], [5])
    rows = summarise(ms)
    assert [r.strength for r in rows] == [0.0, 1.0, -1.0] and all(r.n == 3 for r in rows)
    one = [m.effect for m in ms if m.strength == 1.0]
    assert rows[1].effect_mean == pytest.approx(sum(one) / 3)
    assert rows[1].effect_sd == pytest.approx(float(torch.tensor(one).std()), rel=1e-6)
    assert rows[1].intended == sum(e > 0 for e in one) / 3
    assert rows[0].effect_sd == 0 and rows[0].intended == 0


# ---- the page and its JSON ----------------------------------------------------------------


@pytest.fixture(scope="module")
def client(tiny_index):
    from fastapi.testclient import TestClient

    from app.main import create_app
    from spyglass.settings import Settings

    with TestClient(create_app(Settings(db=tiny_index.db))) as c:
        yield c


def finished(client, url: str, timeout: float = 120.0):
    """The answer to ``url`` once its evaluation has finished, checking each 202 on the way:
    progress that never goes back, and never past the total."""
    give_up, done = time.monotonic() + timeout, 0
    while True:
        r = client.get(url)
        if r.status_code != 202:
            return r
        body = r.json()
        assert body["status"] == "running" and r.headers["Retry-After"] == "1"
        assert done <= body["done"] < body["total"] and not body["summary"]
        done = body["done"]
        assert time.monotonic() < give_up, "the evaluation did not finish"
        time.sleep(0.02)


def test_the_page_over_the_indexs_own_sequences(client, tiny_index):
    q = "unit=1-mlp/5&strengths=0,1,-1&max_new_tokens=4"
    r = finished(client, f"/tiny/steer/eval.json?{q}")
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["held_out"] and len(data["prompts"]) >= 2
    assert data["status"] == "done" and data["done"] == data["total"] == 3
    assert [s["strength"] for s in data["summary"]] == [0.0, 1.0, -1.0]
    zero = [m for m in data["measures"] if m["strength"] == 0]
    assert zero and all(m["effect"] == 0 and m["kl"] == 0 for m in zero)  # exact: see above
    assert len(data["measures"]) == 3 * len(data["prompts"])
    assert len(data["targets"]) == 5  # the unit's most promoted tokens
    html = client.get(f"/tiny/steer/eval?{q}").text  # the same run, finished: at once
    assert 'id="plot-effect"' in html and 'id="steer-eval-table"' in html
    assert 'id="steer-eval-progress"' not in html


def test_a_run_in_chunks_lets_other_requests_through(client):
    """Nine strengths, a model job each: a live request asked once the run has started is
    answered while the run still has strengths to go, and the page shows the progress
    until the result. The same query is the same run: the API waits for it, and gives
    what the twin gives."""
    q = "unit=0-mlp/2&strengths=0,1,-1,2,-2,3,-3,4,-4&max_new_tokens=12"
    first = client.get(f"/tiny/steer/eval.json?{q}")
    assert first.status_code == 202 and first.json()["total"] == 9
    html = client.get(f"/tiny/steer/eval?{q}").text
    assert 'id="steer-eval-progress"' in html and "of 9 strengths" in html
    prompt = client.post("/api/tiny/prompt", json={"text": "the quick brown fox"})
    assert prompt.status_code == 200
    during = client.get(f"/tiny/steer/eval.json?{q}")
    assert during.status_code == 202, "the run finished before the prompt got its turn"
    assert during.json()["done"] < 9
    body = {"unit": ["0-mlp/2"], "strengths": "0,1,-1,2,-2,3,-3,4,-4", "max_new_tokens": 12}
    waited = client.post("/api/tiny/steer/eval", json=body)
    assert waited.status_code == 200 and waited.json()["status"] == "done"
    twin = finished(client, f"/tiny/steer/eval.json?{q}").json()
    assert twin["seconds"] == waited.json()["seconds"]  # one run, measured once
    assert twin["measures"] == waited.json()["measures"] and len(twin["summary"]) == 9


def test_given_prompts_and_targets_through_the_api(client):
    body = {"unit": ["0-mlp/3", "1-mlp/7"], "strengths": "0, 2", "max_new_tokens": 3,
            "prompts": "the quick fox\na lazy dog", "target": [" the"]}  # fmt: skip
    data = client.post("/api/tiny/steer/eval", json=body).json()
    assert len(data["prompts"]) == 2 and not data["held_out"]
    assert data["targets"] == [" the"] and len(data["units"]) == 2


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("unit=9-mlp/1", "unit.0"),
        ("unit=1-mlp/999", "unit.0"),
        ("unit=1-mlp/1&strengths=a,b", "strengths"),
        ("unit=1-mlp/1&strengths=1,2,3,4,5,6,7,8,9,10", "strengths"),
        ("unit=1-mlp/1&max_new_tokens=64&strengths=0,1,2,3,4,5,6,7,8", "max_new_tokens"),
        ("unit=1-mlp/1&target=quick+brown", "target"),
        ("unit=1-mlp/1&strengths=1e9", None),
    ],
)
def test_bad_grids_are_422s(client, query, field):
    r = client.get(f"/tiny/steer/eval.json?{query}")
    assert r.status_code == 422, r.text
    if field:
        assert r.json()["errors"][0]["field"] == field
