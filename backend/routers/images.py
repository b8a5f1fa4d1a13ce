"""A sample's image, rendered from its registered dataset (never from a client's path)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Header, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session

from datasetq.store import runs, samples

from .. import schemas
from ..deps import RunId, SampleId, SessionDep, api_router
from ..imaging import ImageRenderer

router = api_router("/runs/{run_id}/samples", "images")


@router.get(
    "/{sample_id}/image",
    response_class=Response,
    responses={
        200: {"content": {"image/png": {}}},
        304: {"description": "Not modified"},
        **schemas.NOT_FOUND,
    },
)
async def sample_image(
    run_id: RunId,
    sample_id: SampleId,
    request: Request,
    session: SessionDep,
    size: Annotated[int, Query(ge=0, le=1024, description="thumbnail side; 0: full")] = 0,
    if_none_match: Annotated[str | None, Header(max_length=200)] = None,
) -> Response:
    run, source = await run_in_threadpool(_lookup, session, run_id, sample_id)
    renderer: ImageRenderer = request.app.state.renderer
    data, etag = await run_in_threadpool(
        renderer.png, run.dataset.id, run.dataset.render, sample_id, source, size
    )
    headers = {"ETag": etag, "Cache-Control": "private, max-age=3600"}
    if if_none_match == etag:
        return Response(status_code=304, headers=headers)
    return Response(content=data, media_type="image/png", headers=headers)


def _lookup(session: Session, run_id: int, sample_id: int) -> tuple[runs.RunInfo, str | None]:
    try:
        run = runs.require_run(session, run_id)
        return run, samples.sample_source(session, run, sample_id)
    finally:
        session.close()  # before rendering: no connection is held while a worker renders
