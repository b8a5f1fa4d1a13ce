"""Server-sent events: a run's new epochs, evictions and status, as they are recorded."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from datasetq.store.models import RunEpochRecord, RunRecord
from datasetq.store.queries import effective_status

from .. import queries
from ..deps import RunId, SessionDep

router = APIRouter(prefix="/runs/{run_id}", tags=["events"])


def _snapshot(engine: Engine, run_id: int) -> dict[str, object]:
    with Session(engine) as session:
        run = session.get(RunRecord, run_id)
        assert run is not None
        evicted = session.execute(
            select(RunEpochRecord.evicted_total)
            .where(RunEpochRecord.run_id == run_id)
            .order_by(RunEpochRecord.epoch.desc())
            .limit(1)
        ).scalar_one_or_none()
        return {
            "epochs": run.epochs,
            "status": effective_status(run.status, run.heartbeat_at),
            "evicted": evicted or 0,
        }


@router.get("/events", response_class=StreamingResponse)
async def events(
    run_id: RunId,
    request: Request,
    session: SessionDep,
    timeout: Annotated[float, Query(gt=0, le=3600)] = 600,
) -> StreamingResponse:
    """``event: run`` whenever the run records an epoch, evicts or changes status; a comment
    every 15 s keeps the connection open. The stream ends after ``timeout`` seconds (the
    browser's EventSource reconnects)."""
    queries.get_run(session, run_id)
    engine = request.app.state.engine
    poll = request.app.state.settings.events_poll_seconds

    async def stream() -> AsyncIterator[str]:
        last: dict[str, object] | None = None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        quiet_since = loop.time()
        while loop.time() < deadline:
            if await request.is_disconnected():
                return
            snapshot = await run_in_threadpool(_snapshot, engine, run_id)
            if snapshot != last:
                last = snapshot
                quiet_since = loop.time()
                yield f"event: run\ndata: {json.dumps(snapshot)}\n\n"
            elif loop.time() - quiet_since > 15:
                quiet_since = loop.time()
                yield ": keep-alive\n\n"
            await asyncio.sleep(poll)

    return StreamingResponse(
        stream(), media_type="text/event-stream", headers={"Cache-Control": "no-store"}
    )
