"""The dashboard in a real headless Chromium (Debian's), against a server on a seeded store."""

from __future__ import annotations

import csv
import io
import os
import shutil
from pathlib import Path

import pytest

from backend.server import BackgroundServer
from backend.settings import Settings
from tests.backend.conftest import FLIPPED, query, seed

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
if shutil.which(CHROMIUM) is None and os.environ.get("DATASETQ_REQUIRE_BROWSER") == "1":
    raise RuntimeError(f"{CHROMIUM} is required here (apt-get install chromium)")
pytestmark = pytest.mark.skipif(
    shutil.which(CHROMIUM) is None, reason="needs Debian's chromium (apt-get install chromium)"
)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('ui') / 'ui.db'}"
    seed(url)
    instance = BackgroundServer(Settings(db=url, events_poll_seconds=0.2), log_level="error")
    assert instance.start(), "the dashboard server did not start"
    yield instance.base_url, url
    instance.stop()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 800}, accept_downloads=True)
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    assert errors == [], errors


def test_overview_renders_charts_with_data(server, page):
    base, _ = server
    page.goto(f"{base}/")
    page.wait_for_selector("#loss-chart .main-svg")
    for chart in ("loss-chart", "visits-chart", "evictions-chart"):
        traces = page.evaluate(f"document.getElementById('{chart}').data.length")
        points = page.evaluate(
            f"document.getElementById('{chart}').data.reduce((n, t) => n + (t.y || []).length, 0)"
        )
        assert traces >= 1
        assert points > 0, chart
    cards = page.inner_text("#overview-cards")
    assert "evicted" in cards
    assert f"of {len(FLIPPED)} flipped on purpose" in page.inner_text("main")
    # The run name holds markup; it is shown as text.
    assert page.inner_text("h1") == "Run seeded <b>run</b>"
    assert page.locator("h1 b").count() == 0
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "overview.png", full_page=True)


def test_relabel_with_the_keyboard_from_the_hardest_samples(server, page):
    base, url = server
    page.goto(f"{base}/#/runs/1/gallery?view=hardest")
    page.wait_for_selector("#gallery-grid .tile")
    first = page.locator("#gallery-grid .tile").first
    sample_id = int(first.get_attribute("data-sample"))
    assert (
        page.locator("#gallery-grid .tile img")
        .first.get_attribute("alt")
        .startswith(f"Sample {sample_id}")
    )
    first.click()
    page.wait_for_selector("#current-label")
    before = int(
        query(url, "SELECT current_label FROM samples WHERE sample_id = :i", i=sample_id)[0][0]
    )
    target = (before + 5) % 10
    page.keyboard.press(str(target))
    page.wait_for_function(
        "n => document.querySelector('#history').innerText.includes('→')", arg=target
    )
    assert "→" in page.inner_text("#history")
    assert page.inner_text("#current-label").startswith(str(target))
    stored = query(url, "SELECT current_label FROM samples WHERE sample_id = :i", i=sample_id)[0][0]
    assert stored == target
    history = query(
        url,
        "SELECT old_label, new_label, author FROM label_changes WHERE sample_id = :i",
        i=sample_id,
    )
    assert history[-1] == (before, target, "local")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "sample.png", full_page=True)
    # u undoes it.
    page.keyboard.press("u")
    page.wait_for_function("() => document.querySelectorAll('#history li').length >= 2")
    assert (
        query(url, "SELECT current_label FROM samples WHERE sample_id = :i", i=sample_id)[0][0]
        == before
    )


def test_review_mode_flag_then_export(server, page):
    base, url = server
    page.goto(f"{base}/#/runs/1/review?view=score")
    page.wait_for_selector("#current-label")
    assert page.inner_text("#review-progress").startswith("1 of ")
    page.keyboard.press("j")
    page.wait_for_function(
        "() => document.querySelector('#review-progress').innerText.startsWith('2 of')"
    )
    heading = page.inner_text("h1")
    sample_id = int(heading.split()[1])
    page.keyboard.press("x")  # drop: flagged with reason "drop"
    page.wait_for_function("() => document.querySelector('#history').innerText.includes('flagged')")
    assert query(url, "SELECT flagged, flag_reason FROM samples WHERE sample_id = :i", i=sample_id)[
        0
    ] == (1, "drop")
    page.keyboard.press("?")
    assert page.locator("#help").is_visible()
    page.keyboard.press("Escape")
    page.goto(f"{base}/#/runs/1")
    page.wait_for_selector("#export-csv")
    with page.expect_download() as download:
        page.click("#export-csv")
    text = Path(download.value.path()).read_text()
    rows = {int(r["sample_id"]): r for r in csv.DictReader(io.StringIO(text))}
    assert rows[sample_id]["keep"] == "False"
    assert "flagged: drop" in rows[sample_id]["dropped_because"]


def test_narrow_screen_and_accessible_controls(server, browser):
    base, _ = server
    context = browser.new_context(viewport={"width": 390, "height": 844})
    page = context.new_page()
    page.goto(f"{base}/#/runs/1/samples/0")
    page.wait_for_selector("#sample-image")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    for image in page.locator("img").all():
        assert image.get_attribute("alt")
    for control in page.locator("select, input, textarea").all():
        assert control.get_attribute("aria-label") or control.evaluate("e => !!e.closest('label')")
    context.close()


def test_an_evicted_sample_says_what_its_eviction_rests_on(server, page):
    base, _ = server
    page.goto(f"{base}/#/runs/1/samples/{FLIPPED[1]}")
    page.wait_for_selector("#eviction")
    text = page.locator("#eviction").inner_text()
    assert "Evicted by the sampler in epoch 2" in text
    assert "since epoch 1" in text
    assert "suspicion 3.0" in text
    page.screenshot(path=str(ARTIFACTS / "eviction-evidence.png"))
