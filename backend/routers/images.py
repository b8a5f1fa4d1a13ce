"""A sample's image, rendered from its registered dataset (never from a client's path)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.concurrency import run_in_threadpool

from datasetq.store.models import SampleRecord

from .. import queries
from ..deps import RunId, SampleId, SessionDep
from ..imaging import ImageRenderer

router = APIRouter(prefix="/runs/{run_id}/samples", tags=["images"])


@router.get(
    "/{sample_id}/image",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}, 304: {"description": "Not modified"}},
)
async def sample_image(
    run_id: RunId,
    sample_id: SampleId,
    request: Request,
    session: SessionDep,
    size: Annotated[int, Query(ge=0, le=1024, description="thumbnail side; 0: full")] = 0,
    if_none_match: Annotated[str | None, Header(max_length=200)] = None,
) -> Response:
    context = queries.get_run(session, run_id)
    queries.check_sample(context, sample_id)
    sample = session.get(SampleRecord, (context.dataset.id, sample_id))
    source = sample.source if sample is not None else None
    renderer: ImageRenderer = request.app.state.renderer
    data, etag = await run_in_threadpool(
        renderer.png, context.dataset.id, context.dataset.render, sample_id, source, size
    )
    headers = {"ETag": etag, "Cache-Control": "private, max-age=3600"}
    if if_none_match == etag:
        return Response(status_code=304, headers=headers)
    return Response(content=data, media_type="image/png", headers=headers)
