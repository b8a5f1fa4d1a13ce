"""The server under concurrency, served for real: open event streams, a burst larger than the
connection pool, bounded streams, and a stop with streams open. ``benchmarks/
bench_server_load.py`` measures the same at full size; here only what must hold is checked."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter

import httpx
import pytest

from datasetq.server.server import BackgroundServer
from datasetq.server.settings import Settings


def served(url: str, **settings: object) -> BackgroundServer:
    server = BackgroundServer(Settings(db=url, **settings), log_level="error")  # type: ignore[arg-type]
    assert server.start()
    return server


async def open_stream(client: httpx.AsyncClient, path: str) -> httpx.Response:
    request = client.build_request("GET", path)
    return await client.send(request, stream=True)


# What a handful of dashboards ask for: the summary, a sample list, a detail, a thumbnail.
BURST_PATHS = [
    "/api/v1/runs/1",
    "/api/v1/runs/1/samples?sort=score&limit=60",
    "/api/v1/runs/1/samples/3",
    "/api/v1/runs/1/samples/3/image?size=64",
]


async def streams_and_burst(base: str, streams: int, burst: int) -> tuple[list[int], Counter[int]]:
    limits = httpx.Limits(max_connections=streams + burst + 5)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:
        opened = [await open_stream(client, "/api/v1/runs/1/events") for _ in range(streams)]
        answers = await asyncio.gather(*(client.get(BURST_PATHS[i % 4]) for i in range(burst)))
        for response in opened:
            await response.aclose()
    return [r.status_code for r in opened], Counter(a.status_code for a in answers)


def test_a_burst_larger_than_the_pool_is_answered_while_streams_are_open(seeded_url):
    """80 concurrent requests (the pool holds 20 connections, the server runs 16 threads)
    with 12 event streams open: before, such a burst deadlocked every worker."""
    server = served(seeded_url, max_event_streams_per_client=20)
    try:
        stream_status, statuses = asyncio.run(streams_and_burst(server.base_url, 12, 80))
    finally:
        server.stop()
    assert stream_status == [200] * 12
    assert statuses == Counter({200: 80})


def client_at(base: str, address: str, connections: int) -> httpx.AsyncClient:
    """A client whose connections come from ``address`` on loopback (another machine, as the
    server sees it)."""
    transport = httpx.AsyncHTTPTransport(
        local_address=address, limits=httpx.Limits(max_connections=connections)
    )
    return httpx.AsyncClient(base_url=base, timeout=60, transport=transport)


async def person_during_a_burst(base: str, streams: int, burst: int) -> tuple[Counter, list[int]]:
    """50 streams open, a burst from one address; from another, a person's requests one after
    another once the burst is under way. Returns the statuses and, for each of the person's
    answers, how many of the burst's had been answered by then."""
    async with (
        client_at(base, "127.0.0.1", streams + 2) as watcher,
        client_at(base, "127.0.0.2", burst) as burster,
        client_at(base, "127.0.0.3", 2) as person,
    ):
        opened = [await open_stream(watcher, "/api/v1/runs/1/events") for _ in range(streams)]
        answered: list[int] = []
        first_answer = asyncio.Event()

        async def one_of_the_burst(i: int) -> int:
            response = await burster.get(BURST_PATHS[i % 4])
            answered.append(response.status_code)
            first_answer.set()
            return response.status_code

        burst_tasks = [asyncio.create_task(one_of_the_burst(i)) for i in range(burst)]
        await first_answer.wait()  # the server has the burst
        progress = []
        statuses = Counter()
        for _ in range(5):
            response = await person.get("/api/v1/runs/1/samples/5")
            statuses[response.status_code] += 1
            progress.append(len(answered))
        statuses.update(await asyncio.gather(*burst_tasks))
        for response in opened:
            assert response.status_code == 200
            await response.aclose()
    return statuses, progress


def test_another_person_is_answered_while_a_burst_is_served(seeded_url):
    """A dashboard firing 200 requests must not make another person's requests wait for all
    of them: before, a first-come queue answered the person after the whole burst."""
    server = served(seeded_url, max_event_streams_per_client=60)
    try:
        statuses, progress = asyncio.run(person_during_a_burst(server.base_url, 50, 200))
    finally:
        server.stop()
    assert statuses == Counter({200: 205})
    # Five requests one after another, each admitted within a round of the burst's turns.
    assert progress[-1] < 100, progress


def test_event_streams_are_bounded_per_client_and_refused_cross_site(seeded_url):
    server = served(seeded_url, max_event_streams_per_client=3, max_event_streams=5)

    async def scenario() -> tuple[list[int], int, int, int]:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
            opened = [await open_stream(client, "/api/v1/runs/1/events") for _ in range(4)]
            codes = [r.status_code for r in opened]
            retry = opened[-1].headers.get("retry-after")
            foreign = await client.get(
                "/api/v1/runs/1/events", headers={"Origin": "http://evil.example"}
            )
            for response in opened:
                await response.aclose()
            await asyncio.sleep(0.3)  # the closed streams are counted off
            again = await open_stream(client, "/api/v1/runs/1/events")
            again_code = again.status_code
            await again.aclose()
        return codes, int(retry or 0), foreign.status_code, again_code

    try:
        codes, retry_after, foreign, again = asyncio.run(scenario())
    finally:
        server.stop()
    assert codes == [200, 200, 200, 429]
    assert retry_after > 0
    assert foreign == 403
    assert again == 200


def test_serve_stops_on_sigterm_with_streams_open(seeded_url):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "datasetq", "serve", "--db", seeded_url, "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "DATASETQ_MAX_EVENT_STREAMS_PER_CLIENT": "10"},
    )
    clients = []
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                if httpx.get(f"{base}/api/v1/runs", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        for _ in range(6):
            client = httpx.Client(base_url=base, timeout=None)
            response = client.send(
                client.build_request("GET", "/api/v1/runs/1/events"), stream=True
            )
            assert response.status_code == 200
            clients.append((client, response))
        process.send_signal(signal.SIGTERM)
        # Before, open streams held the server up until they timed out (10 minutes).
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pytest.fail("datasetq serve ignored SIGTERM with event streams open")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for client, response in clients:
            response.close()
            client.close()
