"""Write operations on samples, through the review log (``datasetq.store.reviews``).

Every change is an action of the log, with its author and time, and can be undone; decisions
belong to the dataset, shared by every run over it. Each call is one transaction, committed by
the route.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from fastapi import HTTPException
from sqlalchemy.orm import Session

from datasetq.store import reviews
from datasetq.store.models import SampleRecord

from .queries import RunContext


def check_label(context: RunContext, label: int) -> None:
    classes = len(context.dataset.class_names)
    if not 0 <= label < classes:
        raise HTTPException(
            status_code=422,
            detail=f"label {label} is not a class of dataset {context.dataset.name!r} "
            f"(0 to {classes - 1})",
        )


def check_samples(context: RunContext, sample_ids: Sequence[int]) -> list[int]:
    unique = sorted(set(sample_ids))
    bad = [i for i in unique if not 0 <= i < context.dataset.num_samples]
    if bad:
        raise HTTPException(
            status_code=422,
            detail=f"samples {bad[:10]} are not in run {context.run.id} "
            f"({context.dataset.num_samples} samples)",
        )
    return unique


def act(
    session: Session,
    context: RunContext,
    kind: reviews.ReviewKind,
    sample_ids: Sequence[int],
    author: str,
    *,
    label: int | None = None,
    reason: str | None = None,
) -> reviews.ReviewAction:
    """Records one reviewer action on ``sample_ids`` (checked) for the run's dataset."""
    ids = check_samples(context, sample_ids)
    if kind == "relabel":
        assert label is not None
        check_label(context, label)
    return reviews.record_action(
        session, context.dataset.id, context.run.id, kind, ids, author, label=label, reason=reason
    )


def set_note(session: Session, context: RunContext, sample_id: int, note: str | None) -> None:
    """A note is free text on the sample, not a decision: it is not part of the log."""
    sample = session.get(SampleRecord, (context.dataset.id, sample_id))
    if sample is not None:
        sample.note = note


def undo_latest_relabel(
    session: Session, context: RunContext, sample_id: int, author: str
) -> reviews.ReviewAction:
    """Undoes the latest relabel of one sample that still stands (the whole action)."""
    for action in reversed(reviews.sample_reviews(session, context.dataset.id, sample_id)):
        if action.kind == "relabel" and action.undone_by is None:
            return reviews.undo_action(
                session, context.dataset.id, action.id, author, context.run.id
            )
    raise HTTPException(status_code=409, detail=f"Sample {sample_id} has no label change to undo")


def decide(
    session: Session,
    context: RunContext,
    sample_id: int,
    action: Literal["evict", "reinstate"],
    author: str,
) -> None:
    """Queues an evict or reinstate for the running job of this run (applied between epochs)."""
    reviews.queue_for_job(session, context.dataset.id, context.run.id, [sample_id], action, author)
