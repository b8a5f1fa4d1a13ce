"""Server-sent events: a run's new epochs, evictions and status, as they are recorded."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Annotated

from fastapi import Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from datasetq.errors import NotFoundError
from datasetq.store.runs import RunProgress, run_progress

from .. import schemas
from ..deps import RunId, api_router

router = api_router("/runs/{run_id}", "events")


def _progress(engine: Engine, run_id: int) -> RunProgress | None:
    # A session per poll, on a worker thread: a stream holds no connection while it waits.
    with Session(engine) as session:
        return run_progress(session, run_id)


@router.get(
    "/events",
    response_class=StreamingResponse,
    responses={
        **schemas.NOT_FOUND,
        429: {"model": schemas.Problem, "description": "Too many streams from this client"},
        503: {"model": schemas.Problem, "description": "Too many streams in all"},
    },
)
async def events(
    run_id: RunId,
    request: Request,
    timeout: Annotated[float, Query(gt=0, le=3600)] = 600,
) -> Response:
    """``event: run`` whenever the run records an epoch, evicts or changes status; a comment
    every 15 s keeps the connection open. The stream ends after ``timeout`` seconds (the
    browser's EventSource reconnects)."""
    engine = request.app.state.engine
    settings = request.app.state.settings
    if await run_in_threadpool(_progress, engine, run_id) is None:
        raise NotFoundError(f"Run {run_id} not found")
    streams: StreamCount = request.app.state.streams
    client = request.client.host if request.client else "unknown"
    refusal = streams.open(client)
    if refusal is not None:
        return refusal

    async def stream() -> AsyncIterator[str]:
        try:
            poll = settings.events_poll_seconds
            async for message in _messages(request, engine, run_id, timeout, poll):
                yield message
        finally:
            streams.close(client)

    return StreamingResponse(
        stream(), media_type="text/event-stream", headers={"Cache-Control": "no-store"}
    )


async def _messages(
    request: Request, engine: Engine, run_id: int, timeout: float, poll: float
) -> AsyncIterator[str]:
    """The stream's messages: the run's progress when it changes, a comment when quiet."""
    last: RunProgress | None = None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    quiet_since = loop.time()
    while loop.time() < deadline:
        if await request.is_disconnected():
            return
        progress = await run_in_threadpool(_progress, engine, run_id)
        if progress is None:
            return  # the run was deleted
        if progress != last:
            last = progress
            quiet_since = loop.time()
            yield f"event: run\ndata: {json.dumps(asdict(progress))}\n\n"
        elif loop.time() - quiet_since > 15:
            quiet_since = loop.time()
            yield ": keep-alive\n\n"
        await asyncio.sleep(poll)


class StreamCount:
    """Open event streams, in all and per client, against the limits in the settings."""

    def __init__(self, limit: int, per_client: int) -> None:
        self.limit, self.per_client = limit, per_client
        self.total = 0
        self.by_client: dict[str, int] = {}

    def open(self, client: str) -> JSONResponse | None:
        """Counts a new stream, or returns the answer that refuses it."""
        if self.by_client.get(client, 0) >= self.per_client:
            return _busy(429, f"{self.per_client} event streams are open from {client} already")
        if self.total >= self.limit:
            return _busy(503, f"{self.limit} event streams are open already")
        self.total += 1
        self.by_client[client] = self.by_client.get(client, 0) + 1
        return None

    def close(self, client: str) -> None:
        self.total -= 1
        left = self.by_client.get(client, 1) - 1
        if left:
            self.by_client[client] = left
        else:
            self.by_client.pop(client, None)


def _busy(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers={"Retry-After": "5"})
