"""The unit page in a real browser (see conftest.py), served over the shared ``tiny_index``."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator

import pytest
from served import get_json, serve

from app.render import fmt, visible
from spyglass.settings import Settings

pytestmark = pytest.mark.browser

SOURCE = "0-mlp"


@pytest.fixture(scope="module")
def base_url(tiny_index) -> Iterator[str]:
    with serve(Settings(db=tiny_index.db)) as url:
        yield url


@pytest.fixture(scope="module")
def unit_with_examples(base_url) -> int:
    """A unit of 0-mlp whose page has top examples (highest max activation first)."""
    src = get_json(f"{base_url}/tiny/{SOURCE}.json")
    for row in src["units"]:
        if get_json(f"{base_url}/tiny/{SOURCE}/{row['index']}.json")["examples"]:
            return row["index"]
    pytest.fail("no unit of 0-mlp has examples")


def _open_unit(page, n: int) -> str:
    path = f"/tiny/{SOURCE}/{n}"
    page.goto(path)
    page.wait_for_selector("#examples")
    return page.url


# ---- tests -------------------------------------------------------------------------------


def test_new_user_clicks_through_to_a_unit(page, base_url, dialogs):
    page.goto("/")
    page.get_by_role("link", name="tiny", exact=True).click()
    page.wait_for_url(f"{base_url}/tiny")
    page.locator("#sources").get_by_role("link", name=SOURCE, exact=True).click()
    page.wait_for_url(f"{base_url}/tiny/{SOURCE}")
    first = page.locator("#units tbody tr td:first-child a").first
    n = int(first.inner_text())
    first.click()
    page.wait_for_url(f"{base_url}/tiny/{SOURCE}/{n}")
    assert re.fullmatch(rf"{re.escape(base_url)}/tiny/{SOURCE}/\d+", page.url)
    assert page.locator("h1").inner_text() == f"{SOURCE} · neuron {n}"
    assert dialogs == []


def test_hovering_a_token_shows_its_value(page, unit_with_examples):
    _open_unit(page, unit_with_examples)
    tip = page.locator("#tip")
    assert tip.is_hidden()
    tok = page.locator(".example .tok[data-v]").first
    value = tok.get_attribute("data-v")
    tok.hover()
    tip.wait_for(state="visible")
    assert tip.inner_text().endswith("  " + value)
    # Moving off the tokens hides it again.
    page.locator("h1").hover()
    tip.wait_for(state="hidden")


def test_whole_sequence_expands_in_place(page, unit_with_examples):
    url = _open_unit(page, unit_with_examples)
    example = page.locator("#example-0")
    before = example.locator(".tok").count()
    assert "expanded" not in (example.get_attribute("class") or "")
    example.get_by_role("button", name="whole sequence").click()
    page.wait_for_selector("#example-0.expanded")
    after = page.locator("#example-0 .tok").count()
    assert after > before
    assert page.locator("#example-0 .tok.focus").count() == 1
    assert page.url == url
    # The other examples were left alone.
    assert page.locator(".example.expanded").count() == 1


def test_prompt_activations_match_the_api(page, base_url):
    n = 3
    url = _open_unit(page, n)
    prompt = "The quick brown fox jumps over the lazy dog."
    page.fill("#prompt-text", prompt)  # the form's `input changed delay:600ms` trigger fires
    api = page.request.post(
        f"{base_url}/api/tiny/{SOURCE}/{n}/activations", data={"prompt": prompt}
    )
    assert api.ok, api.text()
    expected = api.json()["tokens"]
    toks = page.locator("#live-result .tok[data-v]")
    page.wait_for_function(
        "n => document.querySelectorAll('#live-result .tok[data-v]').length === n",
        arg=len(expected),
    )
    assert toks.evaluate_all("els => els.map(e => e.dataset.v)") == [
        fmt(t["value"], 4) for t in expected
    ]
    assert toks.all_text_contents() == [visible(t["token"]) for t in expected]
    assert page.url == url


def test_steering_form_shows_both_completions_and_errors(page, unit_with_examples, dialogs):
    url = _open_unit(page, unit_with_examples)
    form = page.locator("#steer-form")
    prompt = form.locator("textarea[name=prompt]").input_value()
    form.locator("input[name=temperature]").fill("0")
    form.locator("input[name=max_new_tokens]").fill("5")
    form.get_by_role("button", name="Steer").click()
    result = page.locator("#steer-result")
    result.locator(".completion.steered").wait_for()
    for kind in ("default", "steered"):
        assert result.locator(f".completion.{kind}").text_content().startswith(prompt)
        assert result.locator(f".completion.{kind} .prompt").text_content() == prompt
    assert "(greedy)" in result.locator(".meta").inner_text()
    assert page.url == url

    form.locator("input[name=coefficient]").fill("1e9")
    form.get_by_role("button", name="Steer").click()
    error = result.locator(".error")
    error.wait_for()
    assert error.inner_text().startswith("422")
    assert "coefficient must be between" in error.inner_text()
    assert result.locator(".completion").count() == 0
    assert page.url == url
    assert dialogs == []


def test_script_in_the_corpus_shows_as_text(page, base_url, dialogs):
    model = get_json(f"{base_url}/tiny.json")["model"]
    hostile = None
    for sid in range(model["n_sequences"]):
        seq = get_json(f"{base_url}/tiny/sequences/{sid}.json")
        text = "".join(seq["tokens"])
        if "<script" in text:
            hostile = (sid, text)
            break
    assert hostile is not None, "the tiny corpus has no sequence with <script"
    sid, text = hostile
    page.goto(f"/tiny/sequences/{sid}")
    shown = page.locator(".example .tokens")
    shown.wait_for()
    assert shown.text_content() == visible(text)
    assert "<script" in shown.inner_text()
    # The markup came through as text: no element was made from it, no alert fired.
    assert page.locator(".example script").count() == 0
    page.wait_for_timeout(200)
    assert dialogs == []


def test_copy_link(page, base_url, dialogs):
    n = 2
    url = _open_unit(page, n)
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base_url)
    share = f"{base_url}/tiny/{SOURCE}/{n}"
    assert url == share
    button = page.locator("#copy-link")
    button.click()
    deadline = time.monotonic() + 5
    while button.text_content() != "Copied" and not dialogs and time.monotonic() < deadline:
        page.wait_for_timeout(50)
    if dialogs:
        kind, message, default = dialogs[0]
        assert kind == "prompt"
        assert message == "Share this link:"
        assert default == share
    else:
        assert button.text_content() == "Copied"
        assert page.evaluate("navigator.clipboard.readText()") == share


def test_screenshot_of_the_unit_page(page, unit_with_examples, tmp_path):
    _open_unit(page, unit_with_examples)
    out = tmp_path / "unit.png"
    page.screenshot(path=str(out), full_page=True)
    data = out.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(data) > 1000


def test_histograms_intervals_and_neighbours_render(page, base_url, unit_with_examples):
    _open_unit(page, unit_with_examples)
    data = get_json(f"{base_url}/tiny/{SOURCE}/{unit_with_examples}.json")
    # Plotly drew both charts: one bar per histogram bin.
    page.wait_for_selector("#activation-plot .bars path")
    bars = page.locator("#activation-plot .bars .point")
    assert bars.count() == len(data["histogram"]["y"])
    assert "density" in page.locator("#activation-plot .gtitle").text_content()
    page.wait_for_selector("#logit-plot .bars path")
    # Ten interval sections, the highest first, each with its samples' focus tokens shaded.
    sections = page.locator("#intervals .interval")
    assert sections.count() == 10
    top = data["intervals"][-1]
    assert sections.first.locator(".example").count() == len(top["samples"])
    # A neighbour link leads to that unit's page.
    link = page.locator("#correlated a").first
    href = link.get_attribute("href")
    link.click()
    page.wait_for_url(f"{base_url}{href}")
    assert page.locator("h1").inner_text().startswith(SOURCE)


def test_prompt_page_tokens_and_carried_prompt(page, base_url):
    page.goto("/tiny")
    page.locator("#prompt-link input[name=text]").fill("the cat sat on the mat")
    page.locator("#prompt-link button").click()
    page.wait_for_selector("#top-units")
    assert "/tiny/prompt?text=the+cat" in page.url
    # Clicking a token shows its top units, and only its.
    tokens = page.locator(".prompt-tok:not([disabled])")
    tokens.nth(1).click()
    shown = page.locator(".token-units:not([hidden])")
    assert shown.count() == 1 and shown.locator("tbody tr").count() == 10
    # A top unit's link opens its page with the prompt already run.
    first = page.locator("#top-units tbody tr a").first
    first.click()
    page.wait_for_selector("#live-result .tok")
    assert page.locator("#prompt-text").input_value() == "the cat sat on the mat"
    api = json.loads(
        page.request.post(
            f"{base_url}/api{page.url.split(base_url)[1].split('?')[0]}/activations",
            data=json.dumps({"prompt": "the cat sat on the mat"}),
            headers={"content-type": "application/json"},
        ).text()
    )
    live = page.locator("#live-result .tok[data-v]")
    assert live.count() == len(api["tokens"])


def test_steering_several_units_from_the_form(page, base_url):
    page.goto("/tiny")
    page.locator("#steer-link").click()
    page.wait_for_selector("#steer-units-form")
    page.locator("textarea[name=prompt]").fill("the quick brown fox")
    rows = page.locator("#steer-rows tbody tr")
    rows.nth(0).locator("input[name=unit]").fill("0-mlp/3")
    rows.nth(0).locator("input[name=strength]").fill("25")
    rows.nth(1).locator("input[name=unit]").fill("1-mlp/60")
    rows.nth(1).locator("select[name=mode]").select_option("clamp")
    rows.nth(1).locator("input[name=strength]").fill("30")
    page.locator("input[name=temperature]").fill("0")
    page.locator("input[name=max_new_tokens]").fill("8")  # the tiny model's context is 32
    page.locator("#steer-units-form button[type=submit]").click()
    page.wait_for_selector("#steer-result")
    share = page.locator("#share").get_attribute("href")
    data = get_json(f"{base_url}{share.replace('/steer?', '/steer.json?')}")
    assert [u["mode"] for u in data["units"]] == ["add", "clamp"]
    assert page.locator("#steered .gen").count() == len(data["steered"]["tokens"])
    assert page.locator("#steered .gen.diverged").count() == (
        0 if data["diverge_at"] is None else len(data["steered"]["tokens"]) - data["diverge_at"]
    )
    # The form keeps the setup, so it can be changed and run again.
    assert page.locator("#steer-rows input[name=unit]").first.input_value() == "0-mlp/3"


def test_ablation_effect_loads_under_an_example(page, base_url, unit_with_examples):
    _open_unit(page, unit_with_examples)
    page.locator("#example-0 button.ablate").click()
    page.wait_for_selector("#ablation-slot-0 .ablation .tok")
    data = get_json(f"{base_url}/tiny/{SOURCE}/{unit_with_examples}/examples/0/ablation.json")
    toks = page.locator("#ablation-slot-0 .tok")
    assert toks.count() == len(data["tokens"])
    with_effect = page.locator("#ablation-slot-0 .tok[title]")
    assert with_effect.count() == sum(t["loss_delta"] is not None for t in data["tokens"])
    assert with_effect.first.get_attribute("title").startswith("up: ")
    # Mean ablation, beside it, fills the same slot with the unit set to its mean.
    page.locator("#example-0 button.ablate-mean").click()
    page.wait_for_selector("#ablation-slot-0 .ablation >> text=Mean-ablating")
    mean = get_json(
        f"{base_url}/tiny/{SOURCE}/{unit_with_examples}/examples/0/ablation.json?mode=mean"
    )
    assert page.locator("#ablation-slot-0 .tok").count() == len(mean["tokens"])


def test_attribution_page_draws_its_charts(page, base_url):
    page.goto("/tiny/attribution?text=the+quick+brown+fox+jumps")
    page.wait_for_selector("#components-plot .bars path")
    page.wait_for_selector("#heads-plot .hm, #heads-plot image, #heads-plot .heatmaplayer")
    data = get_json(f"{base_url}/tiny/attribution.json?text=the+quick+brown+fox+jumps")
    bars = page.locator("#components-plot .bars .point")
    assert bars.count() == len(data["components"])
    assert page.locator("#parts-sum").inner_text() != ""
    link = page.locator("#attr-neurons a").first
    href = link.get_attribute("href")
    link.click()
    page.wait_for_url(f"{base_url}{href}")
