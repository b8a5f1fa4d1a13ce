"""Fair admission, in-process: at most N requests run, waiting ones are admitted round robin by
client, one that goes away gives up its place, and a client with too many waiting gets 429."""

from __future__ import annotations

import asyncio
import random

import pytest

from backend.admission import FairAdmission


class GatedApp:
    """An ASGI app whose requests run until the test lets each one finish."""

    def __init__(self) -> None:
        self.entered: list[str] = []
        self.running = 0
        self.most_running = 0
        self.gates: dict[str, asyncio.Event] = {}

    async def __call__(self, scope, receive, send) -> None:
        name = scope["name"]
        self.entered.append(name)
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        gate = self.gates.setdefault(name, asyncio.Event())
        try:
            await gate.wait()
        finally:
            self.running -= 1
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})


def gated(concurrent: int, queued_per_client: int = 100) -> tuple[GatedApp, FairAdmission]:
    app = GatedApp()
    return app, FairAdmission(app, concurrent=concurrent, queued_per_client=queued_per_client)


def request(middleware: FairAdmission, client: str, name: str, path: str = "/api/v1/runs/1"):
    statuses: list[int] = []

    async def send(message) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    scope = {"type": "http", "path": path, "client": (client, 50000), "name": name}
    task = asyncio.ensure_future(middleware(scope, None, send))
    return task, statuses


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def finish(app: GatedApp, name: str) -> None:
    app.gates.setdefault(name, asyncio.Event()).set()
    await settle()


def test_a_second_client_is_served_before_the_rest_of_a_burst():
    async def scenario() -> list[str]:
        app, middleware = gated(concurrent=1)
        tasks = [request(middleware, "10.0.0.1", f"a{i}")[0] for i in range(5)]
        await settle()
        tasks.append(request(middleware, "10.0.0.2", "b0")[0])
        await settle()
        assert app.entered == ["a0"]
        for name in ["a0", "a1", "b0", "a2", "a3", "a4"]:
            await finish(app, name)
        await asyncio.gather(*tasks)
        assert (middleware.running, middleware.waiting) == (0, 0)
        return app.entered

    # Round robin: b0 waits for a0 and one more of a's turns, not for a's whole burst.
    assert asyncio.run(scenario()) == ["a0", "a1", "b0", "a2", "a3", "a4"]


@pytest.mark.parametrize("seed", range(5))
def test_never_more_than_the_bound_run_and_every_request_is_served(seed):
    async def scenario() -> None:
        rng = random.Random(seed)
        app, middleware = gated(concurrent=3)
        names = [f"c{rng.randrange(4)}-{i}" for i in range(40)]
        tasks = [request(middleware, name.split("-")[0], name) for name in names]
        await settle()
        while app.running:
            await finish(app, rng.choice([n for n in app.entered if not app.gates[n].is_set()]))
        # A request left waiting with nothing running would never finish: fail, not hang.
        await asyncio.wait_for(asyncio.gather(*(task for task, _ in tasks)), timeout=5)
        assert sorted(app.entered) == sorted(names)
        assert app.most_running == 3
        assert all(statuses == [200] for _, statuses in tasks)
        assert (middleware.running, middleware.waiting) == (0, 0)

    asyncio.run(scenario())


def test_a_client_that_goes_away_while_waiting_gives_up_its_place():
    async def scenario() -> None:
        app, middleware = gated(concurrent=1)
        first, _ = request(middleware, "10.0.0.1", "first")
        gone, _ = request(middleware, "10.0.0.2", "gone")
        last, _ = request(middleware, "10.0.0.3", "last")
        await settle()
        gone.cancel()
        await settle()
        assert middleware.waiting == 1
        await finish(app, "first")
        assert app.entered == ["first", "last"]
        await finish(app, "last")
        await asyncio.gather(first, last)
        assert (middleware.running, middleware.waiting) == (0, 0)

    asyncio.run(scenario())


def test_a_client_with_too_many_requests_waiting_is_answered_429_and_others_are_not():
    async def scenario() -> None:
        app, middleware = gated(concurrent=1, queued_per_client=2)
        running = request(middleware, "10.0.0.1", "a0")
        waiting = [request(middleware, "10.0.0.1", f"a{i}") for i in (1, 2)]
        await settle()
        refused_task, refused = request(middleware, "10.0.0.1", "a3")
        other_task, other = request(middleware, "10.0.0.2", "b0")
        await refused_task
        assert refused == [429]
        for name in ["a0", "a1", "b0", "a2"]:
            await finish(app, name)
        await asyncio.gather(running[0], other_task, *(task for task, _ in waiting))
        assert other == [200]
        assert "a3" not in app.entered

    asyncio.run(scenario())


def test_event_streams_are_not_held_back():
    async def scenario() -> None:
        app, middleware = gated(concurrent=1)
        busy, _ = request(middleware, "10.0.0.1", "busy")
        stream, _ = request(middleware, "10.0.0.1", "stream", path="/api/v1/runs/1/events")
        await settle()
        assert app.entered == ["busy", "stream"]
        await finish(app, "stream")
        await finish(app, "busy")
        await asyncio.gather(busy, stream)

    asyncio.run(scenario())


def test_a_bound_below_one_is_refused():
    with pytest.raises(ValueError, match="concurrent"):
        FairAdmission(GatedApp(), concurrent=0, queued_per_client=1)
