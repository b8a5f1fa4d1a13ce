"""The server under ordinary concurrency: open event streams, a burst of requests, a stop.

Starts ``datasetq serve`` (a real process) on a store, holds ``--streams`` event streams open,
fires ``--burst`` concurrent GETs of the routes the dashboard calls while they are open (from
another address), and reports the burst's latency and status codes and the latency of a third
client's requests meanwhile; then sends SIGTERM with the streams still open and reports how long
the server takes to exit. Without ``--db`` it records a small run first.

    .venv/bin/python benchmarks/bench_server_load.py [--streams 50 --burst 200]
        [--db URL | --postgres postgresql://postgres@127.0.0.1:5432/test]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from pathlib import Path

import httpx
import numpy as np
from sqlalchemy import create_engine, text

from datasetq import HeapqSampler, Recorder
from datasetq.datasets import EmbeddedMNIST
from datasetq.training import MNISTSplit


def record_small_run(folder: Path, samples: int = 2000) -> str:
    url = f"sqlite:///{folder / 'load.db'}"
    record_into(url, samples)
    return url


@contextmanager
def postgres_schema(server: str) -> Iterator[str]:
    """A schema of its own on the PostgreSQL server at ``server``, dropped afterwards."""
    schema = f"bench_load_{os.getpid()}"
    admin = create_engine(server.replace("postgresql://", "postgresql+psycopg://", 1))
    with admin.begin() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    try:
        yield f"{server}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as connection:
            connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


def record_into(url: str, samples: int = 2000) -> None:
    labels = EmbeddedMNIST().targets.numpy()[:samples].astype(np.int64)
    dataset = MNISTSplit(np.arange(samples), labels)
    rng = np.random.default_rng(0)
    with Recorder(url, run="load", dataset=dataset, state_interval=0) as recorder:
        sampler = HeapqSampler(dataset, recorder=recorder, seed=0)
        for _ in range(2):
            drawn = list(sampler)
            sampler.update(drawn, {"loss": rng.random(len(drawn)), "pred": labels[drawn]})


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_server(url: str, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [sys.executable, "-m", "datasetq", "serve", "--db", url, "--port", str(port)],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/v1/runs", timeout=2).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit(
        f"the server did not start: {process.stderr.read().decode() if process.stderr else ''}"
    )


async def hold_stream(client: httpx.AsyncClient, path: str, opened: asyncio.Event) -> int:
    async with client.stream("GET", path) as response:
        if response.status_code != 200:
            return response.status_code
        opened.set()
        async for _ in response.aiter_lines():
            pass
    return 200


async def timed_get(client: httpx.AsyncClient, path: str) -> tuple[int, float]:
    start = time.perf_counter()
    response = await client.get(path)
    await response.aread()
    return response.status_code, time.perf_counter() - start


def burst_paths(run_id: int, samples: int, count: int) -> list[str]:
    """The requests a handful of dashboards make: lists, details, images, the summary."""
    rng = np.random.default_rng(1)
    paths = []
    for i in range(count):
        sample = int(rng.integers(samples))
        paths.append(
            [
                f"/api/v1/runs/{run_id}",
                f"/api/v1/runs/{run_id}/samples?sort=score&limit=60",
                f"/api/v1/runs/{run_id}/samples?sort=loss&evicted=true&limit=60",
                f"/api/v1/runs/{run_id}/samples/{sample}",
                f"/api/v1/runs/{run_id}/samples/{sample}/image?size=96",
            ][i % 5]
        )
    return paths


def client_at(base: str, address: str, connections: int) -> httpx.AsyncClient:
    """A client whose connections come from ``address`` (any of 127.0.0.0/8 on loopback):
    the server tells people apart by address, as it would tell machines apart."""
    transport = httpx.AsyncHTTPTransport(
        local_address=address, limits=httpx.Limits(max_connections=connections)
    )
    return httpx.AsyncClient(base_url=base, timeout=120, transport=transport)


async def load(base: str, streams: int, burst: int) -> Load:
    spawn = multiprocessing.get_context("spawn")
    ready, go, done, times = spawn.Event(), spawn.Event(), spawn.Event(), spawn.Queue()
    async with (
        client_at(base, "127.0.0.1", streams + 10) as watcher,
        client_at(base, "127.0.0.2", burst) as burster,
    ):
        run = (await watcher.get("/api/v1/runs")).json()[0]
        person = spawn.Process(
            target=probe,
            args=(base, f"/api/v1/runs/{run['id']}/samples/1", ready, go, done, times),
        )
        person.start()
        events = f"/api/v1/runs/{run['id']}/events?timeout=600"
        opened = [asyncio.Event() for _ in range(streams)]
        holders = [asyncio.create_task(hold_stream(watcher, events, e)) for e in opened]
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in opened)), timeout=120)
        quiet = [await timed_get(watcher, f"/api/v1/runs/{run['id']}") for _ in range(40)]
        paths = burst_paths(run["id"], run["num_samples"], burst)
        if not await asyncio.to_thread(ready.wait, 120):
            raise SystemExit("the other client did not start")
        go.set()
        results = await asyncio.gather(*(timed_get(burster, p) for p in paths))
        done.set()
        during = await asyncio.to_thread(times.get, timeout=120)
        person.join()
        still_open = sum(1 for h in holders if not h.done())
        for holder in holders:
            holder.cancel()
        await asyncio.gather(*holders, return_exceptions=True)
    return Load(
        still_open,
        Counter(s for s, _ in results),
        [t for _, t in results],
        [t for _, t in quiet],
        during,
    )


def probe(
    base: str, path: str, ready: Event, go: Event, done: Event, times: Queue[list[float]]
) -> None:
    """Another person's requests, one after another, while the burst is served: a process of
    its own (a browser elsewhere) with an address of its own, so neither the burst's client
    nor the server's view of it delays this one's measurement."""
    transport = httpx.HTTPTransport(local_address="127.0.0.3")
    measured = []
    with httpx.Client(base_url=base, timeout=120, transport=transport) as client:
        client.get(path)
        ready.set()
        go.wait()
        while not done.is_set():
            start = time.perf_counter()
            client.get(path).read()
            measured.append(time.perf_counter() - start)
            time.sleep(0.05)
    times.put(measured)


@dataclass
class Load:
    streams_open: int
    statuses: Counter[int]
    burst: list[float]  # each burst request's latency
    quiet: list[float]  # sequential requests with only the streams open
    during: list[float]  # sequential requests of another client during the burst


def measure(
    url: str, streams: int, burst: int, stop_wait: float = 30.0
) -> tuple[Load, float | None]:
    port = free_port()
    # One client opens every stream here; the per-client bound is raised to let it.
    env = {"DATASETQ_MAX_EVENT_STREAMS_PER_CLIENT": str(streams + 1)}
    process = start_server(url, port, env)
    try:
        base = f"http://127.0.0.1:{port}"
        result = asyncio.run(load(base, streams, burst))
        exit_seconds = stop_with_streams_open(base, process, min(streams, 20), stop_wait)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return result, exit_seconds


def stop_with_streams_open(
    base: str, process: subprocess.Popen[bytes], streams: int, wait: float
) -> float | None:
    """Seconds from SIGTERM to exit while ``streams`` event streams are open."""
    clients = []
    for _ in range(streams):
        client = httpx.Client(base_url=base, timeout=None)
        response = client.send(
            client.build_request("GET", "/api/v1/runs/1/events?timeout=600"), stream=True
        )
        clients.append((client, response))
    start = time.monotonic()
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=wait)
        return time.monotonic() - start
    except subprocess.TimeoutExpired:
        return None
    finally:
        for client, response in clients:
            response.close()
            client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--db", default=None, help="a store to serve (default: record one)")
    parser.add_argument(
        "--postgres",
        default=None,
        metavar="URL",
        help="record into a new schema on this PostgreSQL server instead of SQLite, e.g. "
        "postgresql://postgres@127.0.0.1:5432/test",
    )
    parser.add_argument("--streams", type=int, default=50)
    parser.add_argument("--burst", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder, ExitStack() as stack:
        if args.db:
            url = args.db
        elif args.postgres:
            url = stack.enter_context(postgres_schema(args.postgres))
            record_into(url)
        else:
            url = record_small_run(Path(folder))
        result, exit_seconds = measure(url, args.streams, args.burst)

    def summary(times: list[float]) -> str:
        p50, p95, worst = np.percentile(times, [50, 95, 100]) * 1e3
        return f"p50 {p50:.0f} ms, p95 {p95:.0f} ms, max {worst:.0f} ms (n={len(times)})"

    print(f"{args.streams} event streams open ({result.streams_open} still open at the end)")
    print(f"  requests one after another, streams open:   {summary(result.quiet)}")
    print(
        f"  burst of {args.burst} concurrent GETs: statuses {dict(result.statuses)}, {summary(result.burst)}"
    )
    print(f"  another client's requests during the burst: {summary(result.during)}")
    stopped = "did not exit" if exit_seconds is None else f"{exit_seconds:.1f} s"
    print(f"SIGTERM with {min(args.streams, 20)} streams open: exit after {stopped}")


if __name__ == "__main__":
    main()
