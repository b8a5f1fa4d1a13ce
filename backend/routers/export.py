"""The cleaned dataset manifest, streamed as CSV or JSON lines."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session

from .. import queries
from ..deps import RunId

router = APIRouter(prefix="/runs/{run_id}", tags=["export"])

COLUMNS = [
    "sample_id",
    "source",
    "original_label",
    "label",
    "label_name",
    "keep",
    "dropped_because",
]
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def escape_cell(value: Any) -> Any:
    """Keeps spreadsheets from running a cell as a formula (OWASP CSV injection)."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


@router.get(
    "/export",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}, "application/x-ndjson": {}}}},
)
def export(
    run_id: RunId, request: Request, format: Literal["csv", "jsonl"] = "csv"
) -> StreamingResponse:
    """Every sample with its source, final label and, for dropped ones, why."""
    session = Session(request.app.state.engine)
    try:
        context = queries.get_run(session, run_id)
    except Exception:
        session.close()
        raise
    rows = queries.export_rows(session, context)
    body = _csv(rows, session) if format == "csv" else _jsonl(rows, session)
    media = "text/csv; charset=utf-8" if format == "csv" else "application/x-ndjson"
    filename = f"run-{run_id}-manifest.{format}"
    return StreamingResponse(
        body,
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


def _csv(rows: Iterator[dict[str, Any]], session: Session) -> Iterator[str]:
    try:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(COLUMNS)
        for count, row in enumerate(rows, 1):
            writer.writerow([escape_cell(row[c]) for c in COLUMNS])
            if count % 5000 == 0:
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
        yield buffer.getvalue()
    finally:
        session.close()


def _jsonl(rows: Iterator[dict[str, Any]], session: Session) -> Iterator[str]:
    try:
        chunk = []
        for row in rows:
            chunk.append(json.dumps(row))
            if len(chunk) == 5000:
                yield "\n".join(chunk) + "\n"
                chunk = []
        if chunk:
            yield "\n".join(chunk) + "\n"
    finally:
        session.close()
