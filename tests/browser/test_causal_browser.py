"""Attribution patching and steering over prompts in a real browser (see conftest.py):
from the model page's links, the forms, the scatter of estimate against patched effect,
the mean ± sd curves against strength, and the unit links."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from served import get_json, serve

from spyglass.settings import Settings

pytestmark = pytest.mark.browser
CLEAN = "the quick brown fox jumps over the lazy"
CORRUPT = "the lazy brown fox jumps over the quick"


@pytest.fixture(scope="module")
def base_url(tiny_index) -> Iterator[str]:
    with serve(Settings(db=tiny_index.db)) as url:
        yield url


def test_patching_from_the_model_page(page, base_url, console_errors):
    page.goto("/tiny")
    page.locator("#atp-link").click()
    page.wait_for_url(f"{base_url}/tiny/atp")
    page.locator("textarea[name=clean]").fill(CLEAN)
    page.locator("textarea[name=corrupt]").fill(CORRUPT)
    page.locator("input[name=verify]").fill("5")
    page.locator("#atp-form button[type=submit]").click()
    page.wait_for_selector("#atp-units")
    # The scatter is drawn (Plotly's SVG), one point per verified unit.
    page.wait_for_selector("#atp-scatter .main-svg")
    assert page.locator("#atp-scatter .scatterlayer .point").count() == 5
    data = get_json(page.url.replace("/tiny/atp?", "/tiny/atp.json?"))
    rows = page.locator("#atp-units tbody tr")
    assert rows.count() == len(data["units"])
    first = data["units"][0]
    assert first["label"] in rows.first.inner_text()
    link = page.locator("#atp-units tbody a").first
    href = link.get_attribute("href")
    assert "?prompt=" in href
    link.click()
    page.wait_for_url(f"{base_url}{href.split('?')[0]}*")
    assert console_errors == []


def test_steering_over_prompts_plots_mean_and_sd(page, base_url, console_errors):
    page.goto("/tiny")
    page.locator("#steer-eval-link").click()
    page.wait_for_url(f"{base_url}/tiny/steer/eval")
    page.locator("input[name=unit]").first.fill("1-mlp/5")
    page.locator("input[name=strengths]").fill("0, 1, -1")
    page.locator("input[name=max_new_tokens]").fill("3")
    page.locator("#steer-eval-form button[type=submit]").click()
    # A new query starts its run: the page shows its progress, then fills in by itself.
    page.wait_for_url(f"{base_url}/tiny/steer/eval?*")
    assert "strengths" in page.locator("#steer-eval-progress").inner_text()
    page.wait_for_selector("#plot-effect .main-svg")
    assert page.locator("#steer-eval-progress").count() == 0
    data = get_json(page.url.replace("/tiny/steer/eval?", "/tiny/steer/eval.json?"))
    # One point per strength on each curve, with its error bar.
    for key in ("effect", "kl", "fluency"):
        assert page.locator(f"#plot-{key} .scatterlayer .point").count() == 3
        assert page.locator(f"#plot-{key} .errorbar").count() == 3
    rows = page.locator("#steer-eval-table tbody tr")
    assert rows.count() == len(data["summary"]) == 3
    assert console_errors == []
