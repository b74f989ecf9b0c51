"""Corpus text is inert: an index of short documents made of markup, template syntax and SQL
shows them as text on sequence, unit and prompt pages in a real Chromium, with no dialog,
no console error and no element made from them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from urllib.parse import quote_plus

import pytest
from served import get_json, serve

from app.render import visible
from indexer.pipeline import build_index
from spyglass.settings import Settings

pytestmark = pytest.mark.browser

SLUG = "hostile"
HOSTILE_DOCUMENTS = [
    '<script>alert("doc")</script>',
    "<img src=x onerror=alert(1)>",
    "{{ 7*7 }} {% if true %}x{% endif %}",
    "'; DROP TABLE sequences; --",
    '" OR 1=1 -- and \\" UNION SELECT * FROM models',
    "<svg onload=alert(2)></svg>",
    '"><b onmouseover=alert(3)>bold</b>',
    "</textarea><script>alert(4)</script>",
    "javascript:alert(5) &lt;not a tag&gt; &amp;",
    "<iframe src=javascript:alert(6)></iframe> the fox runs over the river",
]
INJECTED = "script:not([src]), img, svg, iframe, b"
"""Elements the documents would make, were they parsed as markup (checked inside the
containers of corpus text only: the page's own scripts and Plotly's svg are elsewhere)."""


@pytest.fixture(scope="module")
def hostile_db(tiny_index, tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("hostile")
    corpus = folder / "hostile.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in HOSTILE_DOCUMENTS))
    cfg = replace(tiny_index.config, corpus=str(corpus), db=str(folder / "h.db"), name=SLUG)
    report = build_index(cfg)
    assert report.n_documents == len(HOSTILE_DOCUMENTS)  # every one, short as they are
    return cfg.db


@pytest.fixture(scope="module")
def base_url(hostile_db) -> Iterator[str]:
    with serve(Settings(db=hostile_db)) as url:
        yield url


def assert_inert(page, dialogs, console_errors, containers: str) -> None:
    page.wait_for_load_state("networkidle")
    page.wait_for_timeout(300)  # time for an onerror or onload to fire, were there one
    assert page.locator(containers).count() > 0
    assert page.locator(f":is({containers}) :is({INJECTED})").count() == 0
    assert dialogs == []
    assert console_errors == []


def test_sequence_pages_show_every_document_as_text(page, base_url, dialogs, console_errors):
    n = get_json(f"{base_url}/{SLUG}.json")["model"]["n_sequences"]
    pieces: dict[str, list[tuple[int, str]]] = {}  # document -> (offset, text after BOS)
    for sid in range(n):
        seq = get_json(f"{base_url}/{SLUG}/sequences/{sid}.json")
        page.goto(f"/{SLUG}/sequences/{sid}")
        tokens = page.locator(".example .tokens")
        assert tokens.text_content() == visible("".join(seq["tokens"]))
        first = page.locator(".example .tokens .tok").first.text_content()
        text = tokens.text_content().removeprefix(first)  # the BOS token, shown
        pieces.setdefault(seq["document"], []).append((seq["offset"], text))
        assert_inert(page, dialogs, console_errors, ".example .tokens")
    shown = ["".join(t for _, t in sorted(parts)) for _, parts in sorted(pieces.items())]
    assert sorted(shown) == sorted(HOSTILE_DOCUMENTS)
    text = "".join(shown)
    assert "49" not in text  # {{ 7*7 }} was never evaluated


def test_unit_pages_show_hostile_examples_as_text(page, base_url, dialogs, console_errors):
    source = get_json(f"{base_url}/{SLUG}.json")["sources"][0]["name"]
    checked = 0
    for index in range(0, 64, 8):
        unit = get_json(f"{base_url}/{SLUG}/{source}/{index}.json")
        if not unit["examples"]:
            continue
        page.goto(f"/{SLUG}/{source}/{index}")
        shown = page.locator("#examples .example .tokens")
        for i, ex in enumerate(unit["examples"]):
            assert shown.nth(i).text_content() == visible("".join(ex["tokens"]))
        assert_inert(page, dialogs, console_errors, "#examples")
        checked += 1
    assert checked >= 4


def test_prompt_page_and_carried_prompt_show_text(page, base_url, dialogs, console_errors):
    prompt = "<b onclick=alert(7)>{{7*7}}</b>';--"  # within the tiny model's 32 tokens
    page.goto(f"/{SLUG}/prompt?text={quote_plus(prompt)}")
    page.wait_for_selector("#prompt-tokens")
    assert page.locator("#prompt-units-form textarea").input_value() == prompt
    got = "".join(page.locator(".prompt-tok").all_text_contents())
    assert got.endswith(visible(prompt))  # after the BOS token, where the model has one
    assert_inert(page, dialogs, console_errors, "#prompt-tokens, #top-units")

    source = get_json(f"{base_url}/{SLUG}.json")["sources"][0]["name"]
    page.goto(f"/{SLUG}/{source}/0?prompt={quote_plus(prompt)}")
    page.wait_for_selector("#live-result .tok")
    assert page.locator("#prompt-text").input_value() == prompt
    assert prompt in page.locator("#live-result").inner_text().replace("\n", "")
    assert_inert(page, dialogs, console_errors, "#live-result")
