"""Browser-tier fixtures: Debian's Chromium driven by Playwright (sync API).

No browser is ever downloaded: the tests skip when /usr/bin/chromium is missing. Each test
module serves its index through its own ``base_url`` fixture (``served.serve``, in
tests/).
"""

from __future__ import annotations

from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
# Without the background-networking flags Chromium's connections are refused on a closed network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 15_000


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM}")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def dialogs() -> list[tuple[str, str, str]]:
    """(type, message, default value) of every dialog the page opened; each is dismissed."""
    return []


@pytest.fixture
def console_errors() -> list[str]:
    """Console errors and uncaught exceptions of the page."""
    return []


@pytest.fixture
def page(browser, base_url, dialogs, console_errors):
    context = browser.new_context(base_url=base_url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    pg = context.new_page()

    def on_dialog(d) -> None:
        dialogs.append((d.type, d.message, d.default_value))
        d.dismiss()

    pg.on("dialog", on_dialog)
    pg.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda exc: console_errors.append(f"uncaught: {exc}"))
    yield pg
    context.close()
