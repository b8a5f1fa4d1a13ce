"""The dashboard in a real headless Chromium (Debian's), against a server on a seeded store."""

from __future__ import annotations

import csv
import io
import math
import os
import shutil
from pathlib import Path

import httpx
import pytest

from datasetq.server.server import BackgroundServer
from datasetq.server.settings import Settings
from tests.backend.conftest import FLIPPED, query, seed

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
if shutil.which(CHROMIUM) is None and os.environ.get("DATASETQ_REQUIRE_BROWSER") == "1":
    raise RuntimeError(f"{CHROMIUM} is required here (apt-get install chromium)")
pytestmark = pytest.mark.skipif(
    shutil.which(CHROMIUM) is None, reason="needs Debian's chromium (apt-get install chromium)"
)


def serve_seeded(url: str):
    """Seeds a store at ``url`` and serves it; yields ``(base_url, url)``."""
    seed(url)
    instance = BackgroundServer(Settings(db=url, events_poll_seconds=0.2), log_level="error")
    assert instance.start(), "the dashboard server did not start"
    yield instance.base_url, url
    instance.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    yield from serve_seeded(f"sqlite:///{tmp_path_factory.mktemp('ui') / 'ui.db'}")


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


def tile_ids(page) -> list[int]:
    """The sample ids of the gallery's tiles, in order."""
    return [
        int(i)
        for i in page.eval_on_selector_all(
            "#gallery-grid .tile", "ts => ts.map(t => t.dataset.sample)"
        )
    ]


def ranked_ids(base: str, limit: int, **filters: int) -> list[int]:
    """The API's "most suspicious" order of a run's samples (those matching ``filters``)."""
    params = {"sort": "score", "order": "desc", "limit": limit, **filters}
    items = httpx.get(f"{base}/api/v1/runs/1/samples", params=params).json()["items"]
    return [row["sample_id"] for row in items]


def boxes_overlap(a: dict[str, float], b: dict[str, float]) -> bool:
    return (
        a["x"] < b["x"] + b["width"]
        and b["x"] < a["x"] + a["width"]
        and a["y"] < b["y"] + b["height"]
        and b["y"] < a["y"] + a["height"]
    )


def test_overview_charts_keep_legends_off_axis_titles_and_round_ticks(server, page):
    base, _ = server
    page.goto(f"{base}/")
    page.wait_for_selector("#evictions-chart .main-svg .legend")
    for chart in ("loss-chart", "evictions-chart"):  # the visits chart has one trace, no legend
        legend = page.locator(f"#{chart} .legend").bounding_box()
        title = page.locator(f"#{chart} .xtitle").bounding_box()
        assert legend is not None, chart
        assert title is not None, chart
        assert not boxes_overlap(legend, title), chart
    # The running total has an axis of its own with round steps (1, 2 or 5 times a power of
    # ten), not ticks synchronised to the left axis's grid.
    ticks = [
        float(text.replace(",", ""))
        for text in page.locator("#evictions-chart .y2tick text").all_text_contents()
    ]
    assert len(ticks) >= 2, ticks
    step = ticks[1] - ticks[0]
    mantissa = step / 10 ** math.floor(math.log10(step))
    assert round(mantissa, 9) in (1.0, 2.0, 5.0), ticks
    assert all(tick % step == 0 for tick in ticks), ticks


def test_the_gallery_link_opens_the_most_suspicious_samples_first(server, page):
    base, _ = server
    page.goto(f"{base}/#/runs/1")
    page.wait_for_selector("#loss-chart .main-svg")
    page.get_by_role("link", name="Gallery").click()
    page.wait_for_selector("#gallery-grid .tile")
    assert page.inner_text("h1").startswith("Gallery: Most suspicious")
    shown = tile_ids(page)
    assert shown == ranked_ids(base, len(shown))
    # Most of the top of that ranking are the labels flipped on purpose.
    assert len(set(shown[: len(FLIPPED)]) & {int(i) for i in FLIPPED}) >= 0.8 * min(
        len(shown), len(FLIPPED)
    )


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
        "() => document.querySelector('#history').innerText.includes('relabelled as')"
    )
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
    page.wait_for_function("() => document.querySelectorAll('#history li.undone').length >= 1")
    assert (
        query(url, "SELECT current_label FROM samples WHERE sample_id = :i", i=sample_id)[0][0]
        == before
    )


def manifest_rows(text: str) -> dict[int, dict[str, str]]:
    first, rest = text.split("\n", 1)
    assert first.startswith("# datasetq-manifest ")
    return {int(r["sample_id"]): r for r in csv.DictReader(io.StringIO(rest))}


@pytest.fixture
def fresh_server(tmp_path):
    """A store of its own, for tests that write."""
    yield from serve_seeded(f"sqlite:///{tmp_path / 'loop.db'}")


def decide_on(page, base, sample_id, keys, expect):
    page.goto(f"{base}/#/runs/1/samples/{sample_id}")
    page.wait_for_function(  # a hash change keeps the previous sample on screen for a moment
        "id => document.querySelector('h1')?.innerText === `Sample ${id}`", arg=sample_id
    )
    for key in keys:
        page.keyboard.press(key)
    page.wait_for_function(
        "text => document.querySelector('#history')?.innerText.includes(text)", arg=expect
    )


def test_the_export_holds_what_the_reviewer_decided(fresh_server, page):
    """Relabel an evicted sample, keep another, drop a third, flag a fourth: the manifest
    keeps the first two (the first with its new label), not the third, the fourth as it was,
    and the counts the page shows before the download are the file's."""
    base, url = fresh_server
    relabeled, kept, dropped, flagged = FLIPPED[0], FLIPPED[1], 5, 6
    original = int(query(url, "SELECT original_label FROM samples WHERE sample_id = 0")[0][0])
    fixed = (original - 1) % 10  # the seed moved every flipped label up by one
    decide_on(page, base, relabeled, [str(fixed)], "relabelled as")
    decide_on(page, base, kept, ["v"], "kept")
    decide_on(page, base, dropped, ["x"], "dropped")
    decide_on(page, base, flagged, ["f"], "flagged")
    assert query(url, "SELECT verdict FROM samples WHERE sample_id = :i", i=flagged) == [(None,)]

    page.goto(f"{base}/#/runs/1")
    page.wait_for_function(
        "() => document.querySelector('#export-counts')?.innerText.startsWith('keeps')"
    )
    shown = page.inner_text("#export-counts")
    with page.expect_download() as download:
        page.click("#export-csv")
    rows = manifest_rows(Path(download.value.path()).read_text())
    assert (rows[relabeled]["keep"], rows[relabeled]["label"]) == ("True", str(fixed))
    assert rows[kept]["keep"] == "True"
    assert rows[dropped]["keep"] == "False"
    assert (rows[flagged]["keep"], rows[flagged]["label"]) == (
        "True",
        rows[flagged]["original_label"],
    )
    keeps = sum(r["keep"] == "True" for r in rows.values())
    drops = len(rows) - keeps
    assert shown.startswith(
        f"keeps {keeps:,}; drops {drops:,}: 1 dropped by a reviewer, {drops - 1} evicted"
    )

    page.select_option("#export-policy", "keep")
    page.wait_for_function(
        "n => document.querySelector('#export-counts')?.innerText.startsWith(`keeps ${n}`)",
        arg=f"{len(rows) - 1:,}",
    )
    with page.expect_download() as download:
        page.click("#export-csv")
    rows = manifest_rows(Path(download.value.path()).read_text())
    assert sum(r["keep"] == "False" for r in rows.values()) == 1
    page.screenshot(path=str(ARTIFACTS / "export-panel.png"), full_page=True)


def test_undo_steps_back_through_three_actions_then_says_nothing_is_left(fresh_server, page):
    base, url = fresh_server
    sample_id = 7
    original = int(query(url, "SELECT current_label FROM samples WHERE sample_id = 7")[0][0])
    decide_on(page, base, sample_id, [str((original + 2) % 10)], "relabelled as")
    decide_on(page, base, sample_id, ["x"], "dropped")
    decide_on(page, base, sample_id, ["f"], "flagged")
    for undone in range(1, 4):
        page.keyboard.press("u")
        page.wait_for_function(
            "n => document.querySelectorAll('#history li.undone').length === n", arg=undone
        )
    state = query(url, "SELECT current_label, verdict, flagged FROM samples WHERE sample_id = 7")
    assert state == [(original, None, 0)]
    log = query(url, "SELECT kind, undone_by IS NOT NULL FROM review_actions ORDER BY id")
    assert log == [
        ("relabel", 1),
        ("drop", 1),
        ("flag", 1),
        ("undo", 0),
        ("undo", 0),
        ("undo", 0),
    ]
    assert [k for k, _ in log[3:]] == ["undo"] * 3
    undoes = query(url, "SELECT undoes FROM review_actions WHERE kind = 'undo' ORDER BY id")
    assert [u for (u,) in undoes] == [3, 2, 1]  # in reverse order
    page.keyboard.press("u")
    page.wait_for_function(
        "() => document.querySelector('#run-status').innerText.includes('Nothing left to undo')"
    )
    assert "error" not in (page.locator("#run-status span").last.get_attribute("class") or "")
    page.screenshot(path=str(ARTIFACTS / "undo-history.png"), full_page=True)


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


def test_a_server_with_a_token_asks_for_it_once_and_the_relabel_lands(tmp_path, page):
    url = f"sqlite:///{tmp_path / 'token.db'}"
    seed(url)
    settings = Settings(db=url, token="s3cret-token")
    instance = BackgroundServer(settings, log_level="error")
    assert instance.start()
    try:
        page.goto(f"{instance.base_url}/#/runs/1/samples/5")
        page.wait_for_selector("#current-label")
        before = query(url, "SELECT current_label FROM samples WHERE sample_id = 5")[0][0]
        target = (before + 3) % 10
        page.keyboard.press(str(target))
        dialog = page.locator("#token-dialog")
        dialog.wait_for(state="visible")
        assert page.locator("#token-wrong").is_hidden()
        page.fill("#token-input", "wrong-token")
        page.click("#token-save")
        page.wait_for_selector("#token-wrong", state="visible")  # asked again, saying why
        page.fill("#token-input", "s3cret-token")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=ARTIFACTS / "token-dialog.png")
        page.click("#token-save")
        page.wait_for_function(
            "() => document.querySelector('#history').innerText.includes('relabelled as')"
        )
        stored = query(
            url,
            "SELECT current_label, author FROM samples s JOIN label_changes c "
            "ON c.sample_id = s.sample_id WHERE s.sample_id = 5",
        )
        assert stored[-1] == (target, "token")
        # Kept for the tab: the next write does not ask again.
        page.keyboard.press("f")
        page.wait_for_function(
            "() => document.querySelector('#history').innerText.toLowerCase().includes('flag')"
        )
        assert dialog.is_hidden()
        assert query(url, "SELECT flagged FROM samples WHERE sample_id = 5")[0][0]
    finally:
        instance.stop()
