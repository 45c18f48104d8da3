"""The HTML report in a real headless browser (Debian's chromium, driven by Playwright): it loads from
disk with no network, logs no console error, and every figure renders."""

from __future__ import annotations

import shutil

import pytest

from mechrefusal.analysis.report import FIGURES

CHROMIUM = "/usr/bin/chromium"
# No network, no background services: this machine has none, and the page must not need any.
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
]


@pytest.fixture(scope="module")
def page_errors_and_figures(toy_report, tmp_path_factory):
    if shutil.which(CHROMIUM) is None:
        pytest.fail(
            f"No Chromium at {CHROMIUM}: install Debian's (apt-get install -y chromium); "
            "scripts/quickstart.sh test does it when apt-get is usable."
        )
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    requests: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=CHROMIUM, headless=True, args=FLAGS
        )
        try:
            page = browser.new_page()
            page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on("request", lambda request: requests.append(request.url))
            page.goto((toy_report.out / "report.html").as_uri(), wait_until="load")
            page.wait_for_function("document.querySelectorAll('div.plot .main-svg').length > 0", timeout=30_000)
            figures = page.evaluate("""() => Array.from(document.querySelectorAll('div.plot')).map(div => ({
                id: div.id, traces: (div.data || []).length,
                drawn: div.querySelectorAll('.main-svg .trace path, .main-svg .heatmaplayer image').length,
                cosines: div.id.endsWith('-cosines') ? div.data[0].z : null}))""")
        finally:
            browser.close()
    return errors, requests, figures


def test_page_has_no_console_errors(page_errors_and_figures):
    errors, _, _ = page_errors_and_figures
    assert errors == []


def test_page_loads_nothing_from_the_network(page_errors_and_figures):
    _, requests, _ = page_errors_and_figures
    assert all(url.startswith(("file://", "data:", "blob:")) for url in requests), requests


def test_every_figure_renders(page_errors_and_figures, toy_report):
    _, _, figures = page_errors_and_figures
    expected = {f"report-{index}-{key}" for index in range(len(toy_report.data["models"])) for key in FIGURES}
    assert {figure["id"] for figure in figures} == expected
    for figure in figures:
        assert figure["traces"] >= 1 and figure["drawn"] >= 1, figure
    rendered = {figure["id"]: figure["cosines"] for figure in figures if figure["cosines"] is not None}
    for index, entry in enumerate(toy_report.data["models"]):
        assert rendered[f"report-{index}-cosines"] == entry["independence"]["cosines"]
