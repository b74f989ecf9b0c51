"""A transcoder latent's pages in a real browser (see conftest.py): the source page with
its layer's metrics, the unit page with its charts, a live prompt and steering at the
MLP's output, over the tiny index with a tiny transcoder set."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from served import get_json, serve
from tiny_transcoders import SOURCES, index_tiny_set, train_tiny_set

import cli
from spyglass.settings import Settings

pytestmark = pytest.mark.browser
SLUG = "tinytcb"


@pytest.fixture(scope="module")
def base_url(tiny_index, tmp_path_factory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("tc-browser")
    tc_dir = train_tiny_set(tiny_index, tmp / "tiny-tc")
    args = ["eval-transcoders", str(tc_dir), "--model", str(tiny_index.model_dir)]
    args += ["--corpus", str(tiny_index.corpus_dir), "--seq-len", "16", "--sequences", "8"]
    assert cli.main(args + ["--loss-sequences", "4", "--device", "cpu"]) == 0
    db = index_tiny_set(tiny_index, tc_dir, str(tmp / "index.db"), SLUG)
    with serve(Settings(db=db)) as url:
        yield url


def test_a_transcoder_source_and_latent_in_the_browser(page, base_url, dialogs, console_errors):
    source = SOURCES[0]
    page.goto(f"/{SLUG}")
    page.locator("#sources").get_by_role("link", name=source, exact=True).click()
    page.wait_for_url(f"{base_url}/{SLUG}/{source}")
    panel = page.locator("#transcoder-info")
    assert "blocks.0.ln2.hook_normalized" in panel.inner_text()
    assert "blocks.0.hook_mlp_out" in panel.inner_text()
    assert page.locator("#transcoder-metrics tbody tr").count() == 1
    units = get_json(f"{base_url}/{SLUG}/{source}.json")["units"]
    n = next(u["index"] for u in units if u["max_act"] > 0)
    page.goto(f"/{SLUG}/{source}/{n}")
    page.wait_for_selector("#examples")
    assert page.locator("h1").inner_text() == f"{source} · latent {n}"
    assert "W_dec row @ W_U" in page.content()
    # Plotly drew the activation histogram and the logit effect.
    page.wait_for_selector("#activation-plot .bars path", state="attached")
    page.wait_for_selector("#logit-plot .bars path", state="attached")
    data = get_json(f"{base_url}/{SLUG}/{source}/{n}.json")
    assert data["kind"] == "transcoder"
    assert page.locator("#activation-plot .bars .point").count() == len(data["histogram"]["y"])
    # Steering adds to the MLP's output: both completions come back.
    form = page.locator("#steer-form")
    prompt = form.locator("textarea[name=prompt]").input_value()
    form.locator("input[name=temperature]").fill("0")
    form.locator("input[name=max_new_tokens]").fill("5")
    form.get_by_role("button", name="Steer").click()
    result = page.locator("#steer-result")
    result.locator(".completion.steered").wait_for()
    assert result.locator(".completion.default .prompt").text_content() == prompt
    assert dialogs == [] and console_errors == []
