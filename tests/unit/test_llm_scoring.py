"""The LLM scorers' arithmetic against judges that know the truth, the answer parsers,
and the endpoint's retries and failures (against loopback servers; the real LLM path is
``tests/llm``)."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest
from chat_server import ChatServer, completion

from indexer.explain import llm, prompts
from indexer.explain.endpoint import Endpoint, EndpointFailure, Malformed, parse_spec
from indexer.explain.windows import UnitWindows, Window

VOCAB = {0: " the", 1: " dog", 2: " cat", 3: " sat", 4: "."}
SETTINGS = llm.LlmSettings(examples=6, batch=4)


def _window(tokens, acts):
    acts = np.array(acts, dtype=np.float64)
    at = int(np.argmax(acts))
    return Window(np.array(tokens), acts, at, float(acts[at]), -1, True)


POS = [_window([0, 1, 3, 4], [0, 2.0 - i / 10, 0, 0]) for i in range(6)]
NEG = [_window([0, 2, 3, 4], [0, 0, 0, 0]) for _ in range(6)]


def _texts(body: dict) -> list[str]:
    """The numbered texts of the last request of a judging call."""
    last = body["messages"][-1]["content"]
    return re.findall(r"^\d+\. (.*)$", last, re.M)


def judge(rule):
    """A server answering each text with ``rule(text)``."""

    def reply(body):
        said = [int(rule(t)) for t in _texts(body)]
        return 200, completion(str(said)), {}

    return reply


@pytest.mark.parametrize(
    ("rule", "expected"),
    [(lambda t: "dog" in t, 1.0), (lambda t: "dog" not in t, 0.0), (lambda t: True, 0.5)],
)
def test_detection_is_the_balanced_accuracy_of_the_judge(rule, expected):
    with ChatServer(judge(rule)) as url:
        ep = Endpoint(url, "judge", attempts=1)
        got = llm.detect(ep, 'the word "dog"', POS, NEG, VOCAB, SETTINGS, seed=0)
    assert got["value"] == expected and got["n"] == 12
    assert got["lo"] <= expected <= got["hi"]


def test_fuzzing_marks_the_firing_tokens_or_as_many_others():
    def marked_dog(text):
        return re.search(r"<<[^>]*dog[^>]*>>", text) is not None

    with ChatServer(judge(marked_dog)) as url:
        got = llm.fuzz(Endpoint(url, "j", attempts=1), '"dog"', POS, 1.0, VOCAB, SETTINGS, 0)
    assert got == {"value": 1.0, "lo": 1.0, "hi": 1.0, "n": 6}


def test_positives_are_held_out_examples_where_the_unit_fires():
    held = [_window([0, 1], [0, v]) for v in (2.0, 0.05, 1.0, 0.15, 0.5)]
    unit = UnitWindows(0, 2.0, [], held)
    got = llm.positives(unit, 10, threshold=0.2)
    assert [w.value for w in got] == [2.0, 1.0, 0.5]  # the ones under 0.1 x max are not


def test_fuzzing_marks_only_tokens_it_shows():
    """The first tokens of a sequence (NaN: in no statistic) are not shown, so no mark,
    right or wrong, may fall on them: every text carries its marks."""
    pos = [_window([0, 2, 1, 3, 4], [np.nan, np.nan, 2.0, 0, 0]) for _ in range(8)]
    texts = []

    def reply(body):
        got = _texts(body)
        texts.extend(got)
        return 200, completion(str([1] * len(got))), {}

    with ChatServer(reply) as url:
        llm.fuzz(Endpoint(url, "j", attempts=1), "x", pos, 1.0, VOCAB, SETTINGS, 0)
    assert len(texts) == 8 and all("<<" in t for t in texts)
    assert not any(" the" in t or " cat" in t for t in texts)


def test_balanced_accuracy_and_its_interval_against_brute_force():
    rng = np.random.default_rng(3)
    truth = np.array([1] * 7 + [0] * 5)
    said = rng.integers(0, 2, size=12)
    got = llm.balanced_accuracy(said, truth)
    tpr = np.mean(said[truth == 1] == 1)
    tnr = np.mean(said[truth == 0] == 0)
    # Exact: both sides are (a/7 + b/5) / 2 from whole counts, correctly rounded the same
    # way, and (5a + 7b) / 70 never sits on a rounding boundary of 4 decimals.
    assert got["value"] == round((tpr + tnr) / 2, 4) and got["n"] == 12
    # Every resample of each class lies between the class's worst and best hit rate.
    assert 0 <= got["lo"] <= got["value"] <= got["hi"] <= 1


def test_the_interval_resamples_each_class_apart():
    """Hits on the positives and misses on the negatives at the same places: pairing the
    classes' resamples would cancel them into [0.5, 0.5]. An independent bootstrap, each
    class resampled on its own, gives the interval."""
    truth = np.array([1] * 10 + [0] * 10)
    right = np.array([1] * 5 + [0] * 5 + [0] * 5 + [1] * 5, bool)
    said = np.where(right, truth, 1 - truth)
    got = llm.balanced_accuracy(said, truth)
    assert got["value"] == 0.5
    rng = np.random.default_rng(7)
    pos, neg = right[:10].astype(float), right[10:].astype(float)
    boot = 0.5 * (rng.choice(pos, (20000, 10)).mean(1) + rng.choice(neg, (20000, 10)).mean(1))
    assert got["lo"] == pytest.approx(np.quantile(boot, 0.025), abs=0.03)
    assert got["hi"] == pytest.approx(np.quantile(boot, 0.975), abs=0.03)
    assert got["hi"] - got["lo"] > 0.3


def test_a_failed_batch_fails_the_whole_score():
    calls = itertools.count()

    def reply(body):
        n = len(_texts(body))
        return 200, completion(str([1] * n) if next(calls) == 0 else "no idea"), {}

    with ChatServer(reply) as url:
        ep = Endpoint(url, "j", attempts=2, backoff=0.01)
        with pytest.raises(EndpointFailure, match="no list of 0s and 1s"):
            llm.detect(ep, "x", POS, NEG, VOCAB, SETTINGS, seed=0)


def test_retries_follow_rate_limits_and_server_errors():
    calls = itertools.count()

    def reply(body):
        i = next(calls)
        if i == 0:
            return 429, '{"error": {"message": "slow down"}}', {"Retry-After": "0"}
        if i == 1:
            return 503, '{"error": {"message": "overloaded"}}', {}
        if i == 2:
            return 200, "not json", {}
        return 200, completion("[EXPLANATION]: dogs"), {}

    with ChatServer(reply) as url:
        ep = Endpoint(url, "m", attempts=4, backoff=0.01)
        assert ep.ask([], prompts.parse_explanation) == "dogs"
    assert ep.usage.calls == 4 and ep.usage.retries == 3


def test_credit_errors_and_bad_requests_are_not_retried():
    with ChatServer(lambda b: (402, '{"error": {"message": "no credit"}}', {})) as url:
        ep = Endpoint(url, "m", attempts=4, backoff=0.01)
        with pytest.raises(EndpointFailure, match="HTTP 402"):
            ep.ask([], prompts.parse_explanation)
    assert ep.usage.calls == 1


def test_an_unreachable_endpoint_fails_its_check_in_one_line():
    with ChatServer(judge(lambda t: 1)) as url:
        pass  # closed: nothing listens there now
    with pytest.raises(EndpointFailure) as err:
        Endpoint(url, "m", timeout=5).check()
    assert "cannot connect" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("answer", "text"),
    [
        ('Thinking...\n[EXPLANATION]: the word "dog"', 'the word "dog"'),
        ("**[Explanation]: pets**", "pets"),
        ('"nouns after the"', "nouns after the"),
        ("one line without a marker", "one line without a marker"),
    ],
)
def test_explanations_are_read_from_the_marker_line(answer, text):
    assert prompts.parse_explanation(answer) == text


@pytest.mark.parametrize(
    "answer",
    ["", "[EXPLANATION]:", "1. a\n2. b", "[EXPLANATION]: 42", "[EXPLANATION]: " + "x" * 301],
)
def test_empty_wordless_listed_or_long_explanations_are_malformed(answer):
    with pytest.raises(Malformed):
        prompts.parse_explanation(answer)


def test_judgements_need_exactly_one_0_or_1_per_text():
    assert prompts.parse_judgements("Sure: [1, 0, '1']", 3) == [1, 0, 1]
    for bad in ("[1, 2, 3]", "[1, 0]", "yes, no, yes", "[]"):
        with pytest.raises(Malformed):
            prompts.parse_judgements(bad, 3)


def test_render_marks_runs_of_firing_tokens():
    w = _window([0, 1, 2, 3], [0, 2, 1.5, 0])
    assert prompts.render(w, VOCAB, prompts.active(w, 1.0)) == " the<< dog cat>> sat"
    assert prompts.render(w, VOCAB) == " the dog cat sat"


@pytest.mark.parametrize(
    ("spec", "url"),
    [("openai:http://127.0.0.1:8000", "http://127.0.0.1:8000/v1"),
     ("openai:https://api.openai.com/v1/", "https://api.openai.com/v1")],
)  # fmt: skip
def test_endpoint_specs(spec, url):
    assert parse_spec(spec) == url


@pytest.mark.parametrize("spec", ["gpt-4", "openai:", "openai:ftp://x", "openai:localhost:8000"])
def test_bad_endpoint_specs_are_value_errors(spec):
    with pytest.raises(ValueError, match="--explainer"):
        parse_spec(spec)
