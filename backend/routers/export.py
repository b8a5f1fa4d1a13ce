"""The cleaned dataset manifest, streamed as CSV or JSON lines, and what it will hold."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

from fastapi import Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session

from datasetq.manifest import manifest_lines
from datasetq.store.export import manifest_counts, manifest_header, manifest_rows
from datasetq.store.runs import require_run

from .. import schemas
from ..deps import RunId, SessionDep, api_router

router = api_router("/runs/{run_id}", "export")

EvictedQuery = Query(
    default="drop",
    description="samples the sampler evicted and nobody reviewed: drop (leave out, the "
    "default), keep, or mark (keep, with needs_review set). A reviewer's decision always wins.",
)


@router.get(
    "/export",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}, "application/x-ndjson": {}}}, **schemas.NOT_FOUND},
)
def export(
    run_id: RunId,
    request: Request,
    format: Literal["csv", "jsonl"] = "csv",
    evicted: Literal["drop", "keep", "mark"] = EvictedQuery,
) -> StreamingResponse:
    """Every sample with its source, final label, whether to keep it and why."""
    session = Session(request.app.state.engine)
    try:
        run = require_run(session, run_id)
        header = manifest_header(session, run, evicted)
    except Exception:
        session.close()
        raise
    rows = manifest_rows(session, run, evicted)
    filename = f"run-{run_id}-manifest.{format}"
    return StreamingResponse(
        _closing(manifest_lines(header, rows, format), session),
        media_type="text/csv; charset=utf-8" if format == "csv" else "application/x-ndjson",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@router.get("/export/counts", response_model=schemas.ExportCountsOut, responses=schemas.NOT_FOUND)
def export_counts(
    run_id: RunId,
    session: SessionDep,
    evicted: Literal["drop", "keep", "mark"] = EvictedQuery,
) -> schemas.ExportCountsOut:
    """What the export with this policy keeps and drops, and why: the file matches exactly."""
    counts = manifest_counts(session, require_run(session, run_id), evicted)
    return schemas.ExportCountsOut.model_validate(counts, from_attributes=True)


def _closing(lines: Iterator[str], session: Session) -> Iterator[str]:
    try:
        yield from lines
    finally:
        session.close()
