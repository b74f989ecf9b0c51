"""Attribution patching in a real browser (see conftest.py): from the model page's link,
the form, the scatter of estimate against patched effect, and the table's unit links."""

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
