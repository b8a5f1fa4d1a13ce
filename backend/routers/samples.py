"""Samples of a run: ranked pages with filters, and one sample's detail."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Depends, Query
from sqlalchemy.orm import Session

from datasetq.store import runs, samples

from .. import schemas
from ..deps import RunId, SampleId, SessionDep, api_router

router = api_router("/runs/{run_id}/samples", "samples")

ClassId = Annotated[int | None, Query(ge=0, le=1_000_000)]


def list_filters(
    evicted: bool | None = None,
    flagged: bool | None = None,
    relabeled: bool | None = None,
    label: ClassId = None,
    mispredicted: bool | None = None,
    pred: ClassId = None,
    reviewed: bool | None = None,
) -> samples.Filters:
    """The filters of a sample list, from the query (the list route and a sample's neighbours
    take the same ones)."""
    return samples.Filters(evicted, flagged, relabeled, label, mispredicted, pred, reviewed)


FiltersDep = Annotated[samples.Filters, Depends(list_filters)]


@router.get("", response_model=schemas.SamplePage, responses=schemas.NOT_FOUND)
def list_samples(
    run_id: RunId,
    session: SessionDep,
    filters: FiltersDep,
    sort: schemas.SortKey = "loss",
    order: Literal["desc", "asc"] = "desc",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> schemas.SamplePage:
    """Samples ranked by ``sort`` (keyset pagination: pass ``next_cursor`` back as ``cursor``).

    Samples without a value for the sort key (never scored, never evicted) are left out.
    ``mispredicted`` keeps samples whose last recorded prediction differs from their label,
    ``pred`` those whose last recorded prediction is that class, ``reviewed`` those a reviewer
    kept, dropped, relabelled or flagged.
    """
    run = runs.require_run(session, run_id)
    page = samples.sample_page(session, run, sort, order == "desc", limit, cursor, filters)
    return schemas.SamplePage.model_validate(page, from_attributes=True)


@router.get("/{sample_id}", response_model=schemas.SampleDetail, responses=schemas.NOT_FOUND)
def get_sample(
    run_id: RunId,
    sample_id: SampleId,
    session: SessionDep,
    filters: FiltersDep,
    sort: schemas.SortKey = "loss",
    order: Literal["desc", "asc"] = "desc",
) -> schemas.SampleDetail:
    """One sample: trajectory, labels and their history, flags, and its neighbours
    (``previous_id``, ``next_id``) in the list the other parameters describe, as on the
    list route."""
    run = runs.require_run(session, run_id)
    return sample_detail(session, run, sample_id, sort, order == "desc", filters)


def sample_detail(
    session: Session,
    run: runs.RunInfo,
    sample_id: int,
    sort: str = "loss",
    descending: bool = True,
    filters: samples.Filters | None = None,
) -> schemas.SampleDetail:
    """The detail response (also what the write routes on one sample return)."""
    detail = samples.sample_detail(
        session, run, sample_id, sort, descending, filters or samples.Filters()
    )
    return schemas.SampleDetail(
        **schemas.SampleRow.model_validate(detail.row, from_attributes=True).model_dump(),
        evidence_score=detail.evidence_score,
        wrong_since=detail.wrong_since,
        source=detail.source,
        note=detail.note,
        flag_reason=detail.flag_reason,
        class_names=run.dataset.class_names,
        dataset_name=run.dataset.name,
        trajectory=[
            schemas.EpochStat.model_validate(e, from_attributes=True) for e in detail.trajectory
        ],
        visit_losses=[
            schemas.VisitLoss.model_validate(v, from_attributes=True) for v in detail.visit_losses
        ],
        label_history=[
            schemas.LabelEvent.model_validate(e, from_attributes=True) for e in detail.label_history
        ],
        flag_history=[
            schemas.FlagEvent(
                id=a.id,
                flagged=a.kind == "flag",
                reason=a.reason,
                author=a.author,
                created_at=a.created_at,
            )
            for a in detail.reviews
            if a.kind in ("flag", "unflag") and a.undone_by is None
        ],
        review_history=[
            schemas.ReviewActionOut.model_validate(a, from_attributes=True) for a in detail.reviews
        ],
        previous_id=detail.previous_id,
        next_id=detail.next_id,
    )
