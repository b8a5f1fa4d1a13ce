"""How long the dashboard takes to show a run and draw its first chart, in Debian's Chromium.

Records a small run, serves it on loopback, and opens the overview in a fresh browser context
each time (an empty cache, as on a first visit): reports the time from navigation to the run's
cards (the page is usable) and to the first drawn chart (Plotly has loaded and run), and the
bytes fetched, with gzip on (as served) and with the browser asking for no compression.

    .venv/bin/python benchmarks/bench_first_chart.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datasetq.server.server import BackgroundServer
from datasetq.server.settings import Settings
from tests.backend.conftest import seed

CHROMIUM = "/usr/bin/chromium"


def first_chart(browser, url: str, compressed: bool) -> tuple[float, float, int]:
    headers = {} if compressed else {"Accept-Encoding": "identity"}
    context = browser.new_context(extra_http_headers=headers)
    page = context.new_page()
    page.add_init_script(
        "new MutationObserver(() => { if (!window.cardsAt && document.getElementById("
        "'overview-cards')) window.cardsAt = performance.now(); })"
        ".observe(document, {childList: true, subtree: true});"
    )
    page.goto(url)
    page.wait_for_selector("#loss-chart .main-svg")
    elapsed = page.evaluate("performance.now()")
    cards = page.evaluate("window.cardsAt")
    sizes = page.evaluate(
        "performance.getEntriesByType('resource').map(e => e.transferSize)"
        ".concat(performance.getEntriesByType('navigation').map(e => e.transferSize))"
    )
    context.close()
    return cards, elapsed, sum(sizes)


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.0f} ({min(values):.0f}-{max(values):.0f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as folder:
        db = f"sqlite:///{Path(folder) / 'chart.db'}"
        seed(db)
        server = BackgroundServer(Settings(db=db), log_level="error")
        assert server.start(), "the server did not start"
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
                )
                print(
                    "| assets | run shown, median ms (min-max) "
                    "| first chart drawn, median ms (min-max) | bytes fetched |"
                )
                print("|---|---|---|---|")
                for compressed in (True, False):
                    first_chart(browser, f"{server.base_url}/", compressed)  # warm the server
                    runs = [
                        first_chart(browser, f"{server.base_url}/", compressed)
                        for _ in range(args.repeats)
                    ]
                    name = "gzip (as served)" if compressed else "uncompressed"
                    shown = [c for c, _, _ in runs]
                    drawn = [t for _, t, _ in runs]
                    print(f"| {name} | {spread(shown)} | {spread(drawn)} | {runs[-1][2]:,} |")
                browser.close()
        finally:
            server.stop()


if __name__ == "__main__":
    main()
