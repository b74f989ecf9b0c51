"""Labels on a server with a write key, in a real browser: the form asks for the key when
the server answers 401, refuses a wrong one, keeps the right one for the next label, and a
label holding markup stays text wherever it shows (unit page, source page, search)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from index_checks import copy_index
from served import get_json, serve

from spyglass.settings import Settings

pytestmark = pytest.mark.browser
KEY = "browser-write-key-0123456789"
HOSTILE = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>&amp; cats'


@pytest.fixture(scope="module")
def base_url(tiny_index, tmp_path_factory) -> Iterator[str]:
    db = copy_index(tiny_index.db, tmp_path_factory.mktemp("keyed-browser"))
    with serve(Settings(db=db, write_token=KEY)) as url:
        yield url


def submit(page) -> None:
    page.locator("#label-form button[type=submit]").click()


def test_the_label_form_works_with_the_key_and_labels_stay_text(page, base_url, console_errors):
    page.goto("/tiny/0-mlp/5")
    page.locator("#add-label summary").click()
    assert page.locator("#write-key").is_hidden()
    page.fill("#label-form input[name=text]", HOSTILE)
    page.fill("#label-form input[name=author]", "ada")
    submit(page)
    page.locator("#label-error", has_text="Bearer").wait_for()  # the 401, shown
    assert page.locator("#write-key").is_visible()
    page.fill("#label-form input[name=key]", "not-the-key")
    submit(page)
    page.locator("#label-error", has_text="not this server's").wait_for()
    page.fill("#label-form input[name=key]", KEY)
    with page.expect_navigation():
        submit(page)
    top = page.locator("#explanation")
    assert top.locator(".method").inner_text().lower() == "human"
    assert HOSTILE in top.inner_text()  # the markup, shown as text
    assert top.locator("img, script").count() == 0
    assert page.evaluate("window.__pwned") is None
    assert get_json(f"{base_url}/tiny/0-mlp/5.json")["explanations"][0]["text"] == HOSTILE

    # The key is kept in this browser: the next label needs no typing of it.
    page.goto("/tiny/0-mlp/6")
    page.locator("#add-label summary").click()
    page.fill("#label-form input[name=text]", "second label")
    page.fill("#label-form input[name=author]", "ada")
    with page.expect_navigation():
        submit(page)
    assert "second label" in page.locator("#explanation").inner_text()

    # Elsewhere the label shows too, still as text.
    page.goto("/tiny/0-mlp?sort=index&order=asc")
    label = page.locator("#units tbody tr").nth(5).locator(".label")
    assert label.get_attribute("title") == HOSTILE
    page.goto("/tiny/search?q=cats")
    assert page.locator("#hits a", has_text="0-mlp/5").count() == 1
    assert page.locator("#hits img, #hits script").count() == 0
    assert page.evaluate("window.__pwned") is None
    # The refused posts (401, 403) are logged by the browser; nothing else may be.
    console_errors[:] = [e for e in console_errors if "401" not in e and "403" not in e]
