"""Samples of a run: ranked pages with filters, and one sample's detail."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from .. import queries, schemas
from ..deps import RunId, SampleId, SessionDep

router = APIRouter(prefix="/runs/{run_id}/samples", tags=["samples"])


@router.get("", response_model=schemas.SamplePage)
def list_samples(
    run_id: RunId,
    session: SessionDep,
    sort: schemas.SortKey = "loss",
    order: Literal["desc", "asc"] = "desc",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    evicted: bool | None = None,
    flagged: bool | None = None,
    relabeled: bool | None = None,
    label: Annotated[int | None, Query(ge=0, le=1_000_000)] = None,
    mispredicted: bool | None = None,
) -> schemas.SamplePage:
    """Samples ranked by ``sort`` (keyset pagination: pass ``next_cursor`` back as ``cursor``).

    Samples without a value for the sort key (never scored, never evicted) are left out.
    ``mispredicted`` keeps samples whose last recorded prediction differs from their label.
    """
    context = queries.get_run(session, run_id)
    filters = queries.Filters(evicted, flagged, relabeled, label, mispredicted)
    return queries.sample_page(session, context, sort, order == "desc", limit, cursor, filters)


@router.get("/{sample_id}", response_model=schemas.SampleDetail)
def get_sample(
    run_id: RunId, sample_id: SampleId, session: SessionDep, sort: schemas.SortKey = "loss"
) -> schemas.SampleDetail:
    """One sample: trajectory, labels and their history, flags, and its neighbours in ``sort``."""
    context = queries.get_run(session, run_id)
    return queries.sample_detail(session, context, sample_id, sort)
