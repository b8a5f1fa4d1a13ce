"""Write operations: labels, flags and decisions. Each call is one transaction, committed by
the route; every change lands in its history table with time and author."""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import HTTPException
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from datasetq.store.ingest import now
from datasetq.store.models import DecisionRecord, FlagRecord, LabelChangeRecord, SampleRecord

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


def _samples(session: Session, context: RunContext, sample_ids: list[int]) -> list[SampleRecord]:
    return list(
        session.execute(
            select(SampleRecord)
            .where(
                SampleRecord.dataset_id == context.dataset.id,
                SampleRecord.sample_id.in_(sample_ids),
            )
            .with_for_update()
        ).scalars()
    )


def set_labels(
    session: Session,
    context: RunContext,
    sample_ids: list[int],
    label: int,
    note: str | None,
    author: str,
) -> list[int]:
    """Relabels samples; returns the ids whose label changed."""
    check_label(context, label)
    changed = []
    rows = []
    for sample in _samples(session, context, sample_ids):
        if note is not None:
            sample.note = note
        if sample.current_label == label:
            continue
        rows.append(
            {
                "dataset_id": context.dataset.id,
                "sample_id": sample.sample_id,
                "old_label": sample.current_label,
                "new_label": label,
                "reason": note,
                "author": author,
                "created_at": now(),
            }
        )
        sample.current_label = label
        changed.append(sample.sample_id)
    if rows:
        session.execute(insert(LabelChangeRecord), rows)
    return changed


def undo_label(session: Session, context: RunContext, sample_id: int, author: str) -> int | None:
    """Goes back to the label before the latest change; the undo is itself a change."""
    last = session.execute(
        select(LabelChangeRecord)
        .where(
            LabelChangeRecord.dataset_id == context.dataset.id,
            LabelChangeRecord.sample_id == sample_id,
        )
        .order_by(LabelChangeRecord.id.desc())
        .limit(1)
    ).scalar_one_or_none()
    if last is None:
        raise HTTPException(
            status_code=409, detail=f"Sample {sample_id} has no label change to undo"
        )
    (sample,) = _samples(session, context, [sample_id])
    session.execute(
        insert(LabelChangeRecord).values(
            dataset_id=context.dataset.id,
            sample_id=sample_id,
            old_label=sample.current_label,
            new_label=last.old_label,
            reason=f"undo of change {last.id}",
            author=author,
            created_at=now(),
        )
    )
    sample.current_label = last.old_label
    return sample.current_label


def set_flags(
    session: Session,
    context: RunContext,
    sample_ids: list[int],
    flagged: bool,
    reason: str | None,
    author: str,
) -> list[int]:
    changed = []
    rows = []
    for sample in _samples(session, context, sample_ids):
        if sample.flagged == flagged and sample.flag_reason == reason:
            continue
        sample.flagged = flagged
        sample.flag_reason = reason if flagged else None
        rows.append(
            {
                "dataset_id": context.dataset.id,
                "sample_id": sample.sample_id,
                "flagged": flagged,
                "reason": reason,
                "author": author,
                "created_at": now(),
            }
        )
        changed.append(sample.sample_id)
    if rows:
        session.execute(insert(FlagRecord), rows)
    return changed


def decide(session: Session, context: RunContext, sample_id: int, action: str, author: str) -> None:
    """Queues an evict or reinstate for the running job of this run (applied between epochs)."""
    session.execute(
        insert(DecisionRecord).values(
            dataset_id=context.dataset.id,
            run_id=context.run.id,
            sample_id=sample_id,
            action=action,
            author=author,
            created_at=now(),
        )
    )
