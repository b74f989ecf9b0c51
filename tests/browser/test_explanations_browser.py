"""Explanations in a real browser (see conftest.py): the header search box, labels beside
unit links, and a unit embedded in an iframe, over an explained copy of the tiny index."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from index_checks import copy_index
from served import get_json, serve

from indexer.explain.run import explain_index
from spyglass import storage
from spyglass.settings import Settings

pytestmark = pytest.mark.browser
SOURCE = "0-mlp"


@pytest.fixture(scope="module")
def base_url(tiny_index, tmp_path_factory) -> Iterator[str]:
    db = copy_index(tiny_index.db, tmp_path_factory.mktemp("explained-browser"))
    explain_index(db, "tiny", progress=False)
    with serve(Settings(db=db)) as url:
        yield url


@pytest.fixture(scope="module")
def explained_unit(base_url) -> tuple[int, str, str]:
    """A unit of 0-mlp with an explanation naming a word that finds it on the first page of
    search results: (index, explanation, word)."""
    for row in get_json(f"{base_url}/tiny/{SOURCE}.json?sort=index&order=asc")["units"]:
        text = row["explanation"]
        for word in storage.search_terms((text or "").split(";")[0]):
            hits = get_json(f"{base_url}/tiny/search.json?q={word}")["hits"]
            if (SOURCE, row["index"]) in {(h["source"], h["index"]) for h in hits}:
                return row["index"], text, word
    pytest.fail("no unit of 0-mlp has an explanation naming a word that finds it")


def test_search_from_the_header_to_a_unit_and_its_explanation(
    page, base_url, explained_unit, console_errors
):
    n, text, word = explained_unit
    page.goto(f"/tiny/{SOURCE}/0")
    box = page.locator("header .search-box input[name=q]")
    box.fill(word)
    box.press("Enter")
    page.wait_for_url(f"{base_url}/tiny/search?q={word}")
    hits = page.locator("#hits tbody tr")
    assert hits.count() >= 1
    found = get_json(f"{base_url}/tiny/search.json?q={word}")["hits"]
    links = page.locator("#hits tbody td:first-child a").all_text_contents()
    assert links == [f"{h['source']}/{h['index']}" for h in found]
    page.locator("#hits a", has_text=f"{SOURCE}/{n}").first.click()
    page.wait_for_url(f"{base_url}/tiny/{SOURCE}/{n}")
    shown = page.locator("#explanation").inner_text()
    assert text in shown and "n=" in shown
    assert console_errors == []


def test_labels_beside_unit_links(page, base_url):
    page.goto(f"/tiny/{SOURCE}?sort=index&order=asc")
    rows = get_json(f"{base_url}/tiny/{SOURCE}.json?sort=index&order=asc")["units"]
    labels = page.locator("#units tbody tr")
    for i, row in enumerate(rows):
        label = labels.nth(i).locator(".label")
        if row["explanation"] is None:
            assert label.count() == 0
        else:
            assert label.get_attribute("title") == row["explanation"]
    unit = get_json(f"{base_url}/tiny/{SOURCE}/1.json")
    page.goto(f"/tiny/{SOURCE}/1")
    for k, n in enumerate(unit["correlated"]):
        cell = page.locator("#correlated tbody tr").nth(k).locator(".label")
        assert (cell.get_attribute("title") if cell.count() else None) == n["explanation"]


def test_a_unit_embedded_in_an_iframe(page, base_url, explained_unit, console_errors):
    n, text, _ = explained_unit
    prompt = "The quick brown fox"
    src = f"{base_url}/tiny/{SOURCE}/{n}?embed=true&embedactivations=false&defaulttesttext={prompt}"
    page.set_content(f'<iframe src="{src}" style="width:700px;height:600px"></iframe>')
    frame = page.frame_locator("iframe")
    assert text in frame.locator("#explanation").inner_text()
    assert frame.locator("header").count() == 0 and frame.locator("#examples").count() == 0
    frame.locator("#activation-plot .main-svg").first.wait_for()
    api = page.request.post(
        f"{base_url}/api/tiny/{SOURCE}/{n}/activations", data={"prompt": prompt}
    )
    expected = len(api.json()["tokens"])
    frame.locator("#live-result .tok[data-v]").nth(expected - 1).wait_for()
    assert frame.locator("#live-result .tok[data-v]").count() == expected
    assert frame.locator("#full-page").get_attribute("href") == f"/tiny/{SOURCE}/{n}"
    assert console_errors == []


def test_a_person_adds_a_label_from_the_unit_page(page, base_url, console_errors):
    page.goto(f"/tiny/{SOURCE}/4")
    page.locator("#add-label summary").click()
    page.fill("#label-form input[name=text]", "")
    page.fill("#label-form input[name=author]", "ada")
    page.locator("#label-form button[type=submit]").click()  # the browser refuses: required
    assert page.locator("#explanation .method").all_text_contents() != ["human"]
    page.fill("#label-form input[name=text]", "x" * 20)
    page.evaluate("document.querySelector('#label-form input[name=text]').value = ' '")
    page.locator("#label-form").evaluate("f => f.requestSubmit()")
    page.locator("#label-error", has_text="text").wait_for()  # the server's 422, shown
    page.fill("#label-form input[name=text]", "fires at the start of a line")
    with page.expect_navigation():
        page.locator("#label-form button[type=submit]").click()
    top = page.locator("#explanation")
    assert top.locator(".method").inner_text().lower() == "human"
    assert "fires at the start of a line" in top.inner_text()
    assert get_json(f"{base_url}/tiny/{SOURCE}/4.json")["explanations"][0]["explainer"] == "ada"
    page.goto(f"/tiny/{SOURCE}?sort=index&order=asc")
    assert page.locator("#units tbody tr").nth(4).locator(".label").get_attribute("title") == (
        "fires at the start of a line"
    )
    assert console_errors == [] or all("422" in e for e in console_errors)
