"""Fair admission: a burst of requests from one client cannot starve the others.

The server runs a bounded number of requests at once; a request that finds them all busy
waits in its client's queue, and a freed place goes to the clients in turn (round robin by
address), not to whoever queued first. One dashboard firing 200 requests then delays another
person's request by a few requests' time, not by the whole burst: a first-come queue made it
wait for all 200.

Event streams are left out: they stay open for minutes and are bounded on their own
(``max_event_streams``).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque

from .security import ASGIApp, Receive, Scope, Send, refuse


class FairAdmission:
    """ASGI middleware that serves at most ``concurrent`` requests at once, admitting waiting
    ones round robin by client address; a client with ``queued_per_client`` requests waiting
    already is answered 429."""

    def __init__(self, app: ASGIApp, concurrent: int, queued_per_client: int) -> None:
        if concurrent < 1:
            raise ValueError(f"concurrent should be at least 1, but got {concurrent}")
        self.app = app
        self.concurrent = concurrent
        self.queued_per_client = queued_per_client
        self.running = 0
        self._waiting: OrderedDict[str, deque[asyncio.Future[None]]] = OrderedDict()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].endswith("/events"):
            await self.app(scope, receive, send)
            return
        client = scope["client"][0] if scope.get("client") else ""
        queue = self._waiting.get(client)
        if queue is not None and len(queue) >= self.queued_per_client:
            await refuse(
                send,
                429,
                f"{self.queued_per_client} requests from {client} are waiting already",
                retry_after=1,
            )
            return
        await self._admit(client)
        try:
            await self.app(scope, receive, send)
        finally:
            self._release()

    @property
    def waiting(self) -> int:
        """Requests waiting for a place."""
        return sum(len(queue) for queue in self._waiting.values())

    async def _admit(self, client: str) -> None:
        if self.running < self.concurrent and not self._waiting:
            self.running += 1
            return
        place: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(client, deque()).append(place)
        try:
            await place
        except asyncio.CancelledError:
            if place.done() and not place.cancelled():
                self._release()  # handed a place just as the client went away: pass it on
            else:
                self._forget(client, place)
            raise

    def _release(self) -> None:
        """Hands the place to the next client in turn, or frees it."""
        while self._waiting:
            client, queue = next(iter(self._waiting.items()))
            place = queue.popleft()
            if queue:
                self._waiting.move_to_end(client)
            else:
                del self._waiting[client]
            if not place.done():
                place.set_result(None)
                return
        self.running -= 1

    def _forget(self, client: str, place: asyncio.Future[None]) -> None:
        queue = self._waiting.get(client)
        if queue is None:
            return
        try:
            queue.remove(place)
        except ValueError:
            return
        if not queue:
            del self._waiting[client]
