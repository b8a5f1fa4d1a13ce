"""The review log: record a decision on samples (relabel, keep, drop, flag, unflag), list
the log, undo a reviewer's latest action or a named one.

Decisions belong to the run's dataset: every run over the same dataset shows and exports them.
"""

from __future__ import annotations

from fastapi import Query

from datasetq.store import reviews, runs

from .. import schemas
from ..deps import AuthorDep, RunId, SessionDep, WriteSessionDep, api_router

router = api_router("/runs/{run_id}/reviews", "reviews")


def _out(action: reviews.ReviewAction) -> schemas.ReviewActionOut:
    return schemas.ReviewActionOut.model_validate(action, from_attributes=True)


@router.post("", response_model=schemas.ReviewActionOut, responses=schemas.NOT_FOUND)
def record(
    run_id: RunId, body: schemas.ReviewRequest, session: WriteSessionDep, author: AuthorDep
) -> schemas.ReviewActionOut:
    """One decision on up to 10,000 samples; undone in one step by its id."""
    action = reviews.decide(
        session,
        runs.require_run(session, run_id),
        body.kind,
        body.sample_ids,
        body.reviewer or author,
        label=body.label,
        reason=body.reason,
    )
    session.commit()
    return _out(action)


@router.get("", response_model=list[schemas.ReviewActionOut], responses=schemas.NOT_FOUND)
def history(
    run_id: RunId,
    session: SessionDep,
    reviewer: str | None = Query(default=None, max_length=200),
    limit: int = Query(default=100, ge=1, le=1000),
) -> list[schemas.ReviewActionOut]:
    """The latest actions on the run's dataset, newest first (undos and undone ones too)."""
    run = runs.require_run(session, run_id)
    return [_out(a) for a in reviews.review_actions(session, run.dataset.id, reviewer, limit)]


@router.post("/undo", response_model=schemas.UndoResult, responses=schemas.NOT_FOUND)
def undo_latest(
    run_id: RunId, body: schemas.UndoRequest, session: WriteSessionDep, author: AuthorDep
) -> schemas.UndoResult:
    """Undoes this reviewer's latest action that still stands; says so when none is left."""
    run = runs.require_run(session, run_id)
    reviewer = body.reviewer or author
    undo = reviews.undo_latest(session, run.dataset.id, reviewer, run.id)
    session.commit()
    if undo is None:
        return schemas.UndoResult(undo=None, message=f"Nothing left to undo for {reviewer}")
    return schemas.UndoResult(undo=_out(undo), message=f"Undid {undo.reason}")


@router.post(
    "/{action_id}/undo",
    response_model=schemas.ReviewActionOut,
    responses={**schemas.NOT_FOUND, **schemas.CONFLICT},
)
def undo_one(
    run_id: RunId,
    action_id: int,
    body: schemas.UndoRequest,
    session: WriteSessionDep,
    author: AuthorDep,
) -> schemas.ReviewActionOut:
    """Undoes the action ``action_id`` (404 if there is none, 409 if it cannot be undone)."""
    run = runs.require_run(session, run_id)
    undo = reviews.undo_action(session, run.dataset.id, action_id, body.reviewer or author, run.id)
    session.commit()
    return _out(undo)
