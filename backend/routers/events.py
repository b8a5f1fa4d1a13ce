"""Server-sent events: a run's new epochs, evictions and status, as they are recorded."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from datasetq.errors import NotFoundError
from datasetq.store.runs import RunProgress, run_progress

from .. import schemas
from ..deps import RunId

router = APIRouter(prefix="/runs/{run_id}", tags=["events"])


def _progress(engine: Engine, run_id: int) -> RunProgress | None:
    # A session per poll, on a worker thread: a stream holds no connection while it waits.
    with Session(engine) as session:
        return run_progress(session, run_id)


@router.get("/events", response_class=StreamingResponse, responses=schemas.NOT_FOUND)
async def events(
    run_id: RunId,
    request: Request,
    timeout: Annotated[float, Query(gt=0, le=3600)] = 600,
) -> StreamingResponse:
    """``event: run`` whenever the run records an epoch, evicts or changes status; a comment
    every 15 s keeps the connection open. The stream ends after ``timeout`` seconds (the
    browser's EventSource reconnects)."""
    engine = request.app.state.engine
    poll = request.app.state.settings.events_poll_seconds
    if await run_in_threadpool(_progress, engine, run_id) is None:
        raise NotFoundError(f"Run {run_id} not found")

    async def stream() -> AsyncIterator[str]:
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

    return StreamingResponse(
        stream(), media_type="text/event-stream", headers={"Cache-Control": "no-store"}
    )
