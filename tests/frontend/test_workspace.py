"""The review workspace in a real Chromium: bulk decisions, predictions and confusions, a
place that is kept, live updates, and a layout that fits. Screenshots go to artifacts/."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from datasetq import HeapqSampler, Recorder
from datasetq.datasets import EmbeddedMNIST
from datasetq.server.server import BackgroundServer
from datasetq.server.settings import Settings
from datasetq.training import MNISTSplit
from tests.backend.conftest import query
from tests.frontend.test_dashboard import ARTIFACTS, pytestmark, ranked_ids, tile_ids  # noqa: F401

N = 1000
FLIPPED = np.arange(0, N, 4)  # a quarter of the labels moved up by one class


def noisy_dataset() -> tuple[MNISTSplit, np.ndarray, np.ndarray]:
    labels = EmbeddedMNIST().targets.numpy()[:N].astype(np.int64)
    noisy = labels.copy()
    noisy[FLIPPED] = (noisy[FLIPPED] + 1) % 10
    return MNISTSplit(np.arange(N), noisy), labels, noisy


def record_epochs(sampler: HeapqSampler, labels: np.ndarray, noisy: np.ndarray, epochs: int):
    """Trains nothing: reports the losses, margins and predictions a model that learned the
    true labels would (every 7th other sample predicted two classes up, a confusion)."""
    rng = np.random.default_rng(sampler.epoch + 1)
    flipped = np.isin(np.arange(N), FLIPPED)
    confused = (np.arange(N) % 7 == 3) & ~flipped
    prediction = np.where(confused, (noisy + 2) % 10, labels)
    for epoch in range(epochs):
        drawn: list[int] = []
        for index in sampler:
            drawn.append(index)
            if len(drawn) == 50:
                ids = np.array(drawn)
                wrong = prediction[ids] != noisy[ids]
                losses = np.where(wrong, 3.0, 0.3 / (epoch + 1)) + rng.random(len(ids)) / 10
                margins = np.where(wrong, -3.0, 3.0) + rng.random(len(ids)) / 10
                sampler.update(
                    ids, {"loss": losses, "margin": margins, "pred": prediction[ids].astype(float)}
                )
                drawn = []


def seed_workspace(url: str) -> None:
    dataset, labels, noisy = noisy_dataset()
    with Recorder(url, run="workspace", dataset=dataset, config={"note": "ui"}) as recorder:
        # Fixed evidence: evictions within 3 short epochs, however few labels are rejected.
        sampler = HeapqSampler(
            dataset, recorder=recorder, seed=0, evidence=2, evidence_odds=None, chunk_size=50
        )
        record_epochs(sampler, labels, noisy, 3)


def start(url: str) -> BackgroundServer:
    instance = BackgroundServer(Settings(db=url, events_poll_seconds=0.2), log_level="error")
    assert instance.start(), "the dashboard server did not start"
    return instance


@pytest.fixture
def workspace(tmp_path) -> Iterator[tuple[str, str]]:
    url = f"sqlite:///{tmp_path / 'workspace.db'}"
    seed_workspace(url)
    instance = start(url)
    yield instance.base_url, url
    instance.stop()


def new_page(browser, width=1440, height=900):
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on(
        "console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None
    )
    return context, page, problems


@pytest.fixture
def page(browser):
    context, page, problems = new_page(browser)
    yield page
    context.close()
    assert problems == [], problems


def screenshot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / f"{name}.png", full_page=True)


def test_shift_click_twenty_tiles_relabel_them_at_once_and_undo_in_one_step(workspace, page):
    base, url = workspace
    page.goto(f"{base}/#/runs/1/gallery?view=hardest")
    page.wait_for_selector("#gallery-grid .tile")
    ids = tile_ids(page)[:20]
    page.locator("#gallery-grid .tile .pick").nth(0).click()
    page.locator("#gallery-grid .tile .pick").nth(19).click(modifiers=["Shift"])
    assert page.inner_text("#selected-count") == "20 selected"
    before = dict(
        query(
            url,
            f"SELECT sample_id, current_label FROM samples WHERE sample_id IN ({','.join(map(str, ids))})",
        )
    )
    page.select_option("#bulk-label", "7")
    page.click("#bulk-relabel")
    assert page.inner_text("#confirm-text") == "Relabel 20 samples as 7 - seven?"
    screenshot(page, "bulk-confirm")
    page.click("#confirm-ok")
    page.wait_for_selector("#bulk-undo")
    stored = dict(
        query(
            url,
            f"SELECT sample_id, current_label FROM samples WHERE sample_id IN ({','.join(map(str, ids))})",
        )
    )
    assert stored == {i: 7 for i in ids}
    actions = query(url, "SELECT id, kind, label FROM review_actions")
    assert len(actions) == 1
    assert actions[0][1:] == ("relabel", 7)
    assert page.inner_text("#selected-count") == "0 selected"
    screenshot(page, "bulk-relabelled")
    page.click("#bulk-undo")
    page.wait_for_function(
        "() => document.querySelector('#last-action').innerText.startsWith('Undid')"
    )
    stored = dict(
        query(
            url,
            f"SELECT sample_id, current_label FROM samples WHERE sample_id IN ({','.join(map(str, ids))})",
        )
    )
    assert stored == before
    log = query(url, "SELECT kind, undoes FROM review_actions ORDER BY id")
    assert log == [("relabel", None), ("undo", actions[0][0])]


def click_confusion_cell(page, label: int, pred: int) -> None:
    """Clicks the heatmap where Plotly drew the cell (label, pred)."""
    x, y = page.evaluate(
        """([label, pred]) => {
            const chart = document.getElementById('confusion-chart');
            const {xaxis, yaxis} = chart._fullLayout;
            const box = chart.querySelector('.main-svg').getBoundingClientRect();
            return [box.left + xaxis._offset + xaxis.l2p(pred), box.top + yaxis._offset + yaxis.l2p(label)];
        }""",
        [label, pred],
    )
    page.mouse.click(x, y)


def test_a_confusion_cell_opens_exactly_the_samples_the_store_holds_for_it(workspace, page):
    base, url = workspace
    expected = {
        i
        for (i,) in query(
            url,
            "SELECT s.sample_id FROM samples s JOIN sample_state t ON t.sample_id = s.sample_id "
            "WHERE t.run_id = 1 AND s.current_label = 3 AND t.last_pred = 5",
        )
    }
    assert len(expected) >= 5  # the seed confuses some 3s with 5s
    page.goto(f"{base}/#/runs/1")
    page.wait_for_selector("#confusion-chart .main-svg")
    page.locator("#confusion").scroll_into_view_if_needed()
    screenshot(page, "confusion-matrix")
    click_confusion_cell(page, 3, 5)
    page.wait_for_function(
        "() => location.hash.includes('label=3') && location.hash.includes('pred=5')"
    )
    page.wait_for_selector("#gallery-grid .tile")
    page.wait_for_function(
        "n => document.querySelector('#gallery-count').innerText === `${n} of ${n} shown`",
        arg=len(expected),
    )
    shown = tile_ids(page)
    assert set(shown) == expected
    # In the gallery's default order, the suspicion ranking, as the API gives it for the cell.
    assert page.inner_text("h1").startswith("Gallery: Most suspicious")
    assert shown == ranked_ids(base, len(shown), label=3, pred=5)
    assert "predicted 5 - five" in page.inner_text("h1")
    assert page.input_value("#class-select") == "3"
    assert page.input_value("#pred-select") == "5"
    screenshot(page, "confusion-cell-gallery")


def first_visible_tile(page) -> int:
    return page.evaluate(
        "() => Number([...document.querySelectorAll('#gallery-grid .tile')]"
        ".find(t => t.getBoundingClientRect().bottom > 0).dataset.sample)"
    )


def test_next_follows_the_evicted_class_list_and_back_restores_the_gallery(workspace, browser):
    base, url = workspace
    context, page, problems = new_page(browser, 800, 600)
    try:
        page.goto(f"{base}/#/runs/1/gallery?view=evicted&label=3")
        page.wait_for_selector("#gallery-grid .tile")
        ids = tile_ids(page)
        stored = [
            i
            for (i,) in query(
                url,
                "SELECT t.sample_id FROM sample_state t JOIN samples s ON s.sample_id = t.sample_id "
                "WHERE t.run_id = 1 AND t.evicted_epoch IS NOT NULL AND s.current_label = 3 "
                "ORDER BY t.evicted_epoch, t.sample_id",
            )
        ]
        assert ids == stored
        assert len(ids) >= 12
        page.mouse.wheel(0, 800)
        page.wait_for_function("() => window.scrollY >= 700")
        first = first_visible_tile(page)
        assert first != ids[0], page.evaluate(
            "() => [window.scrollY, document.querySelector('#gallery-grid').getBoundingClientRect().top, document.documentElement.scrollHeight]"
        )
        # A tile in the middle of the screen, clicked where it is (no scrolling to it first).
        start = ids.index(first) + 8
        box = page.locator(f'#gallery-grid .tile[data-sample="{ids[start]}"] img').bounding_box()
        assert 100 < box["y"] < 500
        page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        page.wait_for_function(
            "id => document.querySelector('h1')?.innerText === `Sample ${id}`", arg=ids[start]
        )
        for step in range(1, 6):
            page.keyboard.press("j")
            page.wait_for_function(
                "id => document.querySelector('h1')?.innerText === `Sample ${id}`",
                arg=ids[start + step],
            )
            assert "view=evicted" in page.url
            assert "label=3" in page.url
        screenshot(page, "sample-in-evicted-list")
        page.go_back()
        page.wait_for_selector("#gallery-grid .tile")
        page.wait_for_function("() => window.scrollY >= 700")
        assert first_visible_tile(page) == first
        assert tile_ids(page) == ids
    finally:
        context.close()
    assert problems == [], problems


def test_reload_in_review_mode_resumes_at_the_same_sample_and_count(workspace, page):
    base, url = workspace
    page.goto(f"{base}/#/runs/1/review?view=score")
    page.wait_for_selector("#review-progress")
    page.wait_for_function(
        "() => /^0 of [\\d,]+ decided$/.test(document.querySelector('#review-progress').innerText)"
    )
    decided_on = []
    for decided, key in enumerate(["v", "x", "v"], start=1):
        heading = page.inner_text("h1")
        decided_on.append(heading)
        page.keyboard.press(key)
        page.wait_for_function(
            "h => document.querySelector('h1')?.innerText !== h && document.querySelector('h1') !== null",
            arg=heading,
        )
        page.wait_for_function(
            "n => document.querySelector('#review-progress')?.innerText.startsWith(`${n} of`)",
            arg=decided,
        )
    verdicts = query(
        url, "SELECT verdict, count(*) FROM samples WHERE verdict IS NOT NULL GROUP BY verdict"
    )
    assert dict(verdicts) == {"keep": 2, "drop": 1}
    heading, progress, where = page.inner_text("h1"), page.inner_text("#review-progress"), page.url
    assert "sample=" in where
    page.reload()
    page.wait_for_function("h => document.querySelector('h1')?.innerText === h", arg=heading)
    page.wait_for_function(
        "p => document.querySelector('#review-progress')?.innerText === p", arg=progress
    )
    assert page.url == where
    screenshot(page, "review-after-reload")
    # u takes the last decision back, and review returns to the sample it was on.
    page.keyboard.press("u")
    page.wait_for_function("h => document.querySelector('h1')?.innerText === h", arg=decided_on[-1])
    page.wait_for_function(
        "() => document.querySelector('#review-progress')?.innerText.startsWith('2 of')"
    )


def test_an_open_gallery_and_the_run_picker_follow_a_recording(tmp_path, page):
    url = f"sqlite:///{tmp_path / 'live.db'}"
    dataset, labels, noisy = noisy_dataset()
    recorder = Recorder(url, run="live run", dataset=dataset, state_interval=0).open()
    sampler = HeapqSampler(
        dataset, recorder=recorder, seed=0, evidence=2, evidence_odds=None, chunk_size=50
    )
    record_epochs(sampler, labels, noisy, 1)
    instance = start(url)
    try:
        page.goto(f"{instance.base_url}/#/runs/1/gallery?view=evicted")
        page.wait_for_selector("#gallery-empty:not([hidden])")
        assert page.inner_text("#gallery-count") == "0 of 0 shown"
        assert page.locator("#load-more").is_hidden()  # nothing more to load in an empty list
        assert "live run (live)" in page.inner_text("#run-select")
        record_epochs(sampler, labels, noisy, 3)  # epoch 2, which evicts, is written as 3 starts
        evicted = wait_for_store(
            url,
            "SELECT count(*) FROM sample_state WHERE evicted_epoch IS NOT NULL",
            lambda n: n > 0,
        )
        page.wait_for_function(
            "n => document.querySelector('#gallery-count').innerText.endsWith(`of ${n} shown`)",
            arg=f"{evicted:,}",
        )
        assert page.locator("#gallery-grid .tile").count() == min(evicted, 60)
        assert page.locator("#gallery-empty").is_hidden()
        recorder.close()
        page.wait_for_function(
            "() => document.querySelector('#run-select').innerText.includes('live run (finished)')"
        )
        assert "run finished" in page.inner_text("#run-status")
        second = Recorder(url, run="second run", dataset=dataset).open()
        try:
            HeapqSampler(dataset, recorder=second, seed=1)
            page.wait_for_function(
                "() => document.querySelector('#run-select').innerText.includes('second run')"
            )
        finally:
            second.close()
        screenshot(page, "live-gallery")
    finally:
        page.goto("about:blank")  # its event stream closes before the server does
        recorder.close()
        instance.stop()


def wait_for_store(url: str, sql: str, ready, seconds: float = 20.0):
    """The first value of ``sql`` once ``ready(value)`` and stable (the recorder writes behind)."""
    deadline = time.monotonic() + seconds
    last = None
    while time.monotonic() < deadline:
        value = query(url, sql)[0][0]
        if ready(value) and value == last:
            return value
        last = value
        time.sleep(0.5)
    raise AssertionError(f"the store never answered {sql!r} as expected (last: {last})")


REVIEW_CONTROLS = [
    *(f"#relabel-{i}" for i in range(10)),
    "#keep",
    "#drop",
    "#undo",
    "#flag-toggle",
    "#flag-reason",
    "#note",
    "#save-note",
    "#history",
]


def test_layout_fits_every_review_control_and_narrow_screens(workspace, browser):
    base, _ = workspace
    context, page, problems = new_page(browser, 1440, 900)
    try:
        page.goto(f"{base}/#/runs/1/review?view=evicted")
        page.wait_for_selector("#history")
        for selector in REVIEW_CONTROLS:
            box = page.locator(selector).bounding_box()
            assert box is not None, selector
            # Its top, at least (a history grows downwards), is on screen.
            assert 0 <= box["y"] <= 900 - min(box["height"], 40), selector
        screenshot(page, "review-1440")
    finally:
        context.close()
    assert problems == [], problems
    context, page, problems = new_page(browser, 600, 900)
    try:
        views = [
            "",
            "/gallery?view=score",
            "/review?view=evicted",
            "/samples/3?view=hardest",
            "/nowhere",
        ]
        for view in views:
            page.goto(f"{base}/#/runs/1{view}")
            page.wait_for_selector(
                "#loss-chart .main-svg, #gallery-grid .tile, #history, #error-page"
            )
            page.wait_for_timeout(300)  # charts settle to their card's width
            assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), view
            for chart in page.locator(".chart").all():
                assert chart.evaluate(
                    "c => !c.querySelector('.main-svg') || c.querySelector('.main-svg').getBoundingClientRect().right <= c.getBoundingClientRect().right + 1"
                ), view
            top = page.locator(".topbar").bounding_box()
            assert top["height"] <= 110, view
            screenshot(
                page, f"narrow-{view.strip('/').split('?')[0].replace('/', '-') or 'overview'}"
            )
    finally:
        context.close()
    assert problems == [], problems


def test_unknown_runs_samples_and_pages_say_so_with_a_way_back(workspace, page):
    base, _ = workspace
    for where, title in (
        ("#/runs/99", "No such run"),
        ("#/runs/1/samples/5000", "No such sample"),
        ("#/elsewhere", "No such page"),
    ):
        page.goto(f"{base}/{where}")
        page.wait_for_function(
            "t => document.querySelector('#error-page h1')?.innerText === t", arg=title
        )
        assert page.locator("#error-back").get_attribute("href").startswith("#/")
        if "samples" in where:
            assert "there is no sample 5000" in page.inner_text("#error-page")
        page.click("#error-back")
        page.wait_for_selector("#error-page", state="detached")
    page.goto(f"{base}/#/runs/1")
    page.fill("#goto-id", "42")
    page.press("#goto-id", "Enter")
    page.wait_for_function("() => document.querySelector('h1')?.innerText === 'Sample 42'")


def test_focus_stays_on_the_control_that_was_clicked(workspace, page):
    base, _ = workspace
    page.goto(f"{base}/#/runs/1/samples/8")
    page.wait_for_selector("#flag-toggle")
    page.click("#flag-toggle")
    page.wait_for_function(
        "() => document.querySelector('#flag-toggle').innerText.startsWith('Unflag')"
    )
    assert page.evaluate("document.activeElement.id") == "flag-toggle"
    page.click("#relabel-2")
    page.wait_for_function(
        "() => document.querySelector('#current-label').innerText.startsWith('2')"
    )
    assert page.evaluate("document.activeElement.id") == "relabel-2"


def test_bulk_relabel_evicted_samples_export_and_load_the_manifest_back(
    workspace, browser, tmp_path
):
    """Three evicted samples relabelled in one action: the export keeps them with the new
    label, and the manifest loaded on the recorded dataset serves their images so labelled."""
    from datasetq.manifest import ManifestDataset

    base, _ = workspace
    context = browser.new_context(viewport={"width": 1440, "height": 900}, accept_downloads=True)
    page = context.new_page()
    try:
        page.goto(f"{base}/#/runs/1/gallery?view=evicted")
        page.wait_for_selector("#gallery-grid .tile")
        chosen = tile_ids(page)[:3]
        page.locator("#gallery-grid .tile .pick").nth(0).click()
        page.locator("#gallery-grid .tile .pick").nth(2).click(modifiers=["Shift"])
        page.select_option("#bulk-label", "7")
        page.click("#bulk-relabel")
        page.click("#confirm-ok")
        page.wait_for_selector("#bulk-undo")
        screenshot(page, "e2e-bulk-relabelled")
        page.click("#nav-overview")
        page.wait_for_function(
            "() => document.querySelector('#export-counts')?.innerText.startsWith('keeps')"
        )
        with page.expect_download() as download:
            page.click("#export-csv")
        manifest = tmp_path / "manifest.csv"
        manifest.write_bytes(Path(download.value.path()).read_bytes())
        screenshot(page, "e2e-export")
    finally:
        context.close()
    dataset, _, _ = noisy_dataset()
    clean = ManifestDataset(dataset, manifest)
    for sample_id in chosen:
        image, label = clean[clean.sample_ids.index(sample_id)]
        assert label == 7
        assert torch.equal(image, dataset[sample_id][1][0])


def test_a_gallery_that_loads_after_the_person_moved_on_leaves_the_address_alone(workspace, page):
    """The gallery keeps its place in the address; a page of samples that arrives after the
    person went elsewhere must not rewrite the address back to the gallery (it did, and the
    next page then showed the gallery again)."""
    base, _ = workspace
    held = []
    page.route(lambda url: "/runs/1/samples?" in url, lambda route: held.append(route))
    page.goto(f"{base}/#/runs/1/gallery")
    for _ in range(200):
        if held:
            break
        page.wait_for_timeout(25)
    assert held, "the gallery never asked for its samples"
    page.evaluate("location.hash = '#/elsewhere'")
    page.wait_for_function(
        "() => document.querySelector('#error-page h1')?.innerText === 'No such page'"
    )
    with page.expect_response(lambda response: "/runs/1/samples?" in response.url):
        held[0].continue_()
    page.evaluate("() => new Promise((done) => setTimeout(done, 200))")
    assert page.url.endswith("#/elsewhere")
    assert page.inner_text("#error-page h1") == "No such page"
