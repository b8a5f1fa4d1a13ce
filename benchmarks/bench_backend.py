"""API latency and a bounded load loop against a real server on loopback.

Uses the ImageNet-sized store that ``bench_store.py scale --keep DIR`` leaves (1,281,167 samples
x 30 epochs), upgraded to the current schema, and a small recorded MNIST run for images.

    .venv/bin/python benchmarks/bench_store.py scale --keep /tmp/scale
    .venv/bin/python benchmarks/bench_backend.py --db sqlite:////tmp/scale/scale.db
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

from datasetq.server.server import BackgroundServer
from datasetq.server.settings import Settings
from datasetq.store.migrations import upgrade


def serve(url: str) -> tuple[str, BackgroundServer]:
    server = BackgroundServer(Settings(db=url), log_level="error")
    if not server.start():
        raise SystemExit("the API server did not start")
    return server.base_url, server


def timed(client: httpx.Client, paths: list[str]) -> list[float]:
    times = []
    for path in paths:
        start = time.perf_counter()
        response = client.get(path)
        times.append(time.perf_counter() - start)
        response.raise_for_status()
    return times


def report(name: str, times: list[float]) -> None:
    p50, p95 = np.percentile(times, [50, 95]) * 1e3
    print(f"  {name:<40} p50 {p50:7.2f} ms   p95 {p95:7.2f} ms   (n={len(times)})")


def small_image_store(folder: Path) -> str:
    from datasetq import HeapqSampler, Recorder
    from datasetq.datasets import EmbeddedMNIST
    from datasetq.training import MNISTSplit

    labels = EmbeddedMNIST().targets.numpy()[:1000].astype(np.int64)
    dataset = MNISTSplit(np.arange(1000), labels)
    url = f"sqlite:///{folder / 'images.db'}"
    with Recorder(url, run="images", dataset=dataset) as recorder:
        sampler = HeapqSampler(dataset, recorder=recorder, seed=0)
        drawn = list(sampler)
        sampler.update(drawn, {"loss": np.ones(len(drawn))})
    return url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--db", default="sqlite:////tmp/scale/scale.db")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=30)
    args = parser.parse_args()
    upgrade(args.db)
    base, server = serve(args.db)
    rng = np.random.default_rng(0)
    with httpx.Client(base_url=base, timeout=30) as client:
        run = client.get("/api/v1/runs").json()[0]
        run_id, n = run["id"], run["num_samples"]
        print(f"run {run['name']!r}: {n:,} samples x {run['epochs']} epochs ({args.db})")
        first = timed(client, [f"/api/v1/runs/{run_id}/samples?sort=loss&limit=100"])[0]
        print(f"  first hardest page (counts the run, then cached): {first * 1e3:.0f} ms")
        pages = [f"/api/v1/runs/{run_id}/samples?sort=loss&limit=100"] * args.requests
        report("hardest samples page (100 rows)", timed(client, pages))
        cursor = client.get(pages[0]).json()["next_cursor"]
        report(
            "next page (keyset cursor)",
            timed(client, [f"{pages[0]}&cursor={cursor}"] * args.requests),
        )
        for sort in ("mean_loss", "visits", "evicted_epoch"):
            path = f"/api/v1/runs/{run_id}/samples?sort={sort}&limit=100"
            client.get(path)
            report(f"page sorted by {sort}", timed(client, [path] * (args.requests // 2)))
        details = [f"/api/v1/runs/{run_id}/samples/{i}" for i in rng.integers(0, n, args.requests)]
        report("sample detail with its trajectory", timed(client, details))
        report("run summary", timed(client, [f"/api/v1/runs/{run_id}"] * args.requests))
    server.stop()

    with tempfile.TemporaryDirectory() as folder:
        image_url = small_image_store(Path(folder))
        image_base, image_server = serve(image_url)
        with httpx.Client(base_url=image_base, timeout=30) as client:
            path = "/api/v1/runs/1/samples/7/image?size=64"
            client.get(path)
            report("image, cached", timed(client, [path] * args.requests))
            uncached = [
                f"/api/v1/runs/1/samples/{i}/image" for i in range(100, 100 + args.requests)
            ]
            report("image, first render", timed(client, uncached))
        image_server.stop()

    base, server = serve(args.db)
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()
    deadline = time.monotonic() + args.seconds

    def load(seed: int) -> None:
        local = np.random.default_rng(seed)
        with httpx.Client(base_url=base, timeout=30) as client:
            while time.monotonic() < deadline:
                choice = local.integers(4)
                if choice == 0:
                    path = f"/api/v1/runs/{run_id}/samples?sort=loss&limit=100"
                elif choice == 1:
                    path = f"/api/v1/runs/{run_id}/samples/{local.integers(n)}"
                elif choice == 2:
                    path = f"/api/v1/runs/{run_id}"
                else:
                    path = f"/api/v1/runs/{run_id}/samples?sort=mean_loss&limit=50&evicted=true"
                try:
                    status = str(client.get(path).status_code)
                except httpx.HTTPError as error:
                    status = type(error).__name__
                with lock:
                    outcomes[status] += 1

    started = time.monotonic()
    with ThreadPoolExecutor(args.clients) as pool:
        list(pool.map(load, range(args.clients)))
    elapsed = time.monotonic() - started
    server.stop()
    total = sum(outcomes.values())
    errors = total - outcomes.get("200", 0)
    print(
        f"load: {args.clients} clients x {args.seconds:.0f} s on loopback: {total:,} requests "
        f"({total / elapsed:.0f}/s), {errors} errors, outcomes {dict(outcomes)}"
    )


if __name__ == "__main__":
    main()
