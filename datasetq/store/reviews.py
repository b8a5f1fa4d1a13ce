"""The review log: reviewer actions on a dataset's samples, their undo, and what they decide.

Decisions belong to the dataset, not to a run: a label that is wrong is wrong in every run over
the same data, so every run shows (and exports) the same decisions. A sample's decided state is
what its latest action of each kind says, ignoring undone actions:

- its label: the latest relabel, else the original label;
- its verdict for the export: ``"keep"`` (the latest of relabel / keep) or ``"drop"``;
- its flag (needs a look; changes nothing in the export): the latest flag / unflag.

Actions are appended and never deleted; an undo is an action too. Decisions made while a run
trains also reach the job: a relabel through ``label_changes``, a drop or keep as an evict or
reinstate in ``decisions`` (the Recorder polls both).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from ..errors import ConflictError, InvalidRequestError, NotFoundError
from .ingest import now
from .models import (
    DecisionRecord,
    LabelChangeRecord,
    ReviewActionRecord,
    ReviewEntryRecord,
    SampleRecord,
)
from .runs import RunInfo

__all__ = [
    "ReviewAction",
    "ReviewConflict",
    "ReviewKind",
    "ReviewNotFound",
    "check_label",
    "check_samples",
    "decide",
    "queue_for_job",
    "record_action",
    "review_actions",
    "sample_reviews",
    "set_note",
    "undo_action",
    "undo_latest",
    "undo_latest_relabel",
]

ReviewKind = Literal["relabel", "keep", "drop", "flag", "unflag"]
KINDS: tuple[str, ...] = ("relabel", "keep", "drop", "flag", "unflag")


class ReviewNotFound(NotFoundError):
    """The action named does not exist in this dataset."""


class ReviewConflict(ConflictError):
    """The action cannot be undone (already undone, or itself an undo)."""


@dataclass(frozen=True)
class ReviewAction:
    """One entry of the review log."""

    id: int
    kind: str
    label: int | None
    reason: str | None
    author: str
    created_at: datetime
    samples: int
    run_id: int | None
    undoes: int | None
    undone_by: int | None
    sample_ids: list[int]
    changed: list[int]  # the samples whose decided state this action changed


def _public(
    record: ReviewActionRecord, sample_ids: list[int], changed: list[int] | None = None
) -> ReviewAction:
    return ReviewAction(
        id=record.id,
        kind=record.kind,
        label=record.label,
        reason=record.reason,
        author=record.author,
        created_at=record.created_at,
        samples=record.samples,
        run_id=record.run_id,
        undoes=record.undoes,
        undone_by=record.undone_by,
        sample_ids=sample_ids,
        changed=sample_ids if changed is None else changed,
    )


def _samples(session: Session, dataset_id: int, sample_ids: Sequence[int]) -> list[SampleRecord]:
    return list(
        session.execute(
            select(SampleRecord)
            .where(SampleRecord.dataset_id == dataset_id, SampleRecord.sample_id.in_(sample_ids))
            .order_by(SampleRecord.sample_id)
            .with_for_update()
        ).scalars()
    )


def record_action(
    session: Session,
    dataset_id: int,
    run_id: int | None,
    kind: ReviewKind,
    sample_ids: Sequence[int],
    author: str,
    *,
    label: int | None = None,
    reason: str | None = None,
) -> ReviewAction:
    """Appends an action for ``sample_ids`` and applies it; the caller commits.

    Raises:
        ValueError: an unknown kind, or a relabel without a label.
    """
    if kind not in KINDS:
        raise ValueError(f"kind should be one of {KINDS}, but got kind={kind!r}")
    if (kind == "relabel") != (label is not None):
        raise ValueError("label should be given for a relabel, and only for a relabel")
    ids = sorted(set(int(i) for i in sample_ids))
    action = ReviewActionRecord(
        dataset_id=dataset_id,
        run_id=run_id,
        kind=kind,
        label=label,
        reason=reason,
        author=author,
        created_at=now(),
        samples=len(ids),
    )
    session.add(action)
    session.flush()
    if ids:
        session.execute(
            insert(ReviewEntryRecord),
            [{"action_id": action.id, "sample_id": i, "dataset_id": dataset_id} for i in ids],
        )
    changed = _apply(
        session, dataset_id, run_id, _samples(session, dataset_id, ids), author, action
    )
    return _public(action, ids, changed)


def undo_action(
    session: Session, dataset_id: int, action_id: int, author: str, run_id: int | None = None
) -> ReviewAction:
    """Undoes the action ``action_id`` (an undo is itself appended); returns the undo.

    Raises:
        ReviewNotFound: no such action in this dataset.
        ReviewConflict: it is an undo, or it was undone already.
    """
    target = session.execute(
        select(ReviewActionRecord)
        .where(ReviewActionRecord.id == action_id, ReviewActionRecord.dataset_id == dataset_id)
        .with_for_update()
    ).scalar_one_or_none()
    if target is None:
        raise ReviewNotFound(f"there is no review action {action_id} in this dataset")
    if target.kind == "undo":
        raise ReviewConflict(f"action {action_id} is an undo; undo is not undone")
    if target.undone_by is not None:
        raise ReviewConflict(f"action {action_id} was undone already (by {target.undone_by})")
    ids = _action_samples(session, action_id)
    undo = ReviewActionRecord(
        dataset_id=dataset_id,
        run_id=run_id,
        kind="undo",
        reason=f"undo of {target.kind} #{target.id}",
        author=author,
        created_at=now(),
        samples=len(ids),
        undoes=target.id,
    )
    session.add(undo)
    session.flush()
    target.undone_by = undo.id
    if ids:
        session.execute(
            insert(ReviewEntryRecord),
            [{"action_id": undo.id, "sample_id": i, "dataset_id": dataset_id} for i in ids],
        )
    _replay(session, dataset_id, run_id, ids, author, undone=target)
    return _public(undo, ids)


def undo_latest(
    session: Session, dataset_id: int, author: str, run_id: int | None = None
) -> ReviewAction | None:
    """Undoes ``author``'s latest action that is not undone; None when nothing is left."""
    latest = session.execute(
        select(ReviewActionRecord.id)
        .where(
            ReviewActionRecord.dataset_id == dataset_id,
            ReviewActionRecord.author == author,
            ReviewActionRecord.kind != "undo",
            ReviewActionRecord.undone_by.is_(None),
        )
        .order_by(ReviewActionRecord.id.desc())
        .limit(1)
    ).scalar_one_or_none()
    if latest is None:
        return None
    return undo_action(session, dataset_id, latest, author, run_id)


def review_actions(
    session: Session, dataset_id: int, author: str | None = None, limit: int = 100
) -> list[ReviewAction]:
    """The latest actions on the dataset (of one author), newest first."""
    statement = select(ReviewActionRecord).where(ReviewActionRecord.dataset_id == dataset_id)
    if author is not None:
        statement = statement.where(ReviewActionRecord.author == author)
    records = session.execute(
        statement.order_by(ReviewActionRecord.id.desc()).limit(limit)
    ).scalars()
    return [_public(r, []) for r in records]


def sample_reviews(session: Session, dataset_id: int, sample_id: int) -> list[ReviewAction]:
    """Every action that touched one sample, oldest first, undone ones included."""
    records = session.execute(
        select(ReviewActionRecord)
        .join(ReviewEntryRecord, ReviewEntryRecord.action_id == ReviewActionRecord.id)
        .where(ReviewEntryRecord.dataset_id == dataset_id, ReviewEntryRecord.sample_id == sample_id)
        .order_by(ReviewActionRecord.id)
    ).scalars()
    return [_public(r, [sample_id]) for r in records]


def _action_samples(session: Session, action_id: int) -> list[int]:
    return list(
        session.execute(
            select(ReviewEntryRecord.sample_id)
            .where(ReviewEntryRecord.action_id == action_id)
            .order_by(ReviewEntryRecord.sample_id)
        ).scalars()
    )


def _apply(
    session: Session,
    dataset_id: int,
    run_id: int | None,
    samples: list[SampleRecord],
    author: str,
    action: ReviewActionRecord,
) -> list[int]:
    """A new action is the latest of its kind: it sets its field directly. Returns the ids
    whose state changed."""
    if action.kind == "relabel":
        relabeled = {s.sample_id for s in samples if s.current_label != action.label}
        _set_labels(session, dataset_id, samples, [action.label] * len(samples), author, action)
        fixed = [s for s in samples if s.verdict != "keep"]
        for sample in samples:
            sample.verdict = "keep"
        _tell_job(session, dataset_id, run_id, fixed, author, "keep")  # back, relabelled
        return sorted(relabeled | {s.sample_id for s in fixed})
    if action.kind in ("keep", "drop"):
        changed = [s for s in samples if s.verdict != action.kind]
        for sample in samples:
            sample.verdict = action.kind
        _tell_job(session, dataset_id, run_id, changed, author, action.kind)
        return [s.sample_id for s in changed]
    flagged = action.kind == "flag"
    reason = action.reason if flagged else None
    moved = [s for s in samples if (s.flagged, s.flag_reason) != (flagged, reason)]
    for sample in samples:
        sample.flagged, sample.flag_reason = flagged, reason
    return [s.sample_id for s in moved]


def _replay(
    session: Session,
    dataset_id: int,
    run_id: int | None,
    sample_ids: list[int],
    author: str,
    undone: ReviewActionRecord,
) -> None:
    """Recomputes the decided state of ``sample_ids`` from their actions that still stand."""
    if not sample_ids:
        return
    standing = session.execute(
        select(
            ReviewEntryRecord.sample_id,
            ReviewActionRecord.kind,
            ReviewActionRecord.label,
            ReviewActionRecord.reason,
        )
        .join(ReviewActionRecord, ReviewActionRecord.id == ReviewEntryRecord.action_id)
        .where(
            ReviewEntryRecord.dataset_id == dataset_id,
            ReviewEntryRecord.sample_id.in_(sample_ids),
            ReviewActionRecord.kind != "undo",
            ReviewActionRecord.undone_by.is_(None),
        )
        .order_by(ReviewActionRecord.id)
    ).all()
    label: dict[int, int | None] = {}
    verdict: dict[int, str | None] = {}
    flag: dict[int, tuple[bool, str | None]] = {}
    for sample_id, kind, new_label, reason in standing:  # in order: the latest wins
        if kind == "relabel":
            label[sample_id], verdict[sample_id] = new_label, "keep"
        elif kind in ("keep", "drop"):
            verdict[sample_id] = kind
        else:
            flag[sample_id] = (kind == "flag", reason if kind == "flag" else None)
    samples = _samples(session, dataset_id, sample_ids)
    labels = [label.get(s.sample_id, s.original_label) for s in samples]
    _set_labels(session, dataset_id, samples, labels, author, undone)
    before = {s.sample_id: s.verdict for s in samples}
    for sample in samples:
        sample.verdict = verdict.get(sample.sample_id)
        sample.flagged, sample.flag_reason = flag.get(sample.sample_id, (False, None))
    now_dropped = [s for s in samples if s.verdict == "drop" and before[s.sample_id] != "drop"]
    no_longer = [s for s in samples if before[s.sample_id] == "drop" and s.verdict != "drop"]
    _tell_job(session, dataset_id, run_id, now_dropped, author, "drop")
    _tell_job(session, dataset_id, run_id, no_longer, author, "keep")


def _set_labels(
    session: Session,
    dataset_id: int,
    samples: list[SampleRecord],
    labels: Sequence[int | None],
    author: str,
    action: ReviewActionRecord,
) -> None:
    """Sets labels; each change also goes to ``label_changes`` (the feed a live job reads)."""
    rows = []
    for sample, new_label in zip(samples, labels, strict=True):
        if sample.current_label == new_label:
            continue
        rows.append(
            {
                "dataset_id": dataset_id,
                "sample_id": sample.sample_id,
                "old_label": sample.current_label,
                "new_label": new_label,
                "reason": action.reason
                if action.kind == "relabel"
                else f"undo of {action.kind} #{action.id}",
                "author": author,
                "created_at": now(),
            }
        )
        sample.current_label = new_label
    if rows:
        session.execute(insert(LabelChangeRecord), rows)


def _tell_job(
    session: Session,
    dataset_id: int,
    run_id: int | None,
    samples: list[SampleRecord],
    author: str,
    verdict: str,
) -> None:
    """A drop evicts the sample from a live job, a keep reinstates it (between its epochs)."""
    if run_id is not None:
        ids = [s.sample_id for s in samples]
        queue_for_job(
            session, dataset_id, run_id, ids, "evict" if verdict == "drop" else "reinstate", author
        )


def queue_for_job(
    session: Session,
    dataset_id: int,
    run_id: int,
    sample_ids: Sequence[int],
    action: Literal["evict", "reinstate"],
    author: str,
) -> None:
    """Asks the job recording ``run_id`` to evict or reinstate samples at its next epoch."""
    if not sample_ids:
        return
    created_at = now()
    session.execute(
        insert(DecisionRecord),
        [
            {
                "dataset_id": dataset_id,
                "run_id": run_id,
                "sample_id": sample_id,
                "action": action,
                "author": author,
                "created_at": created_at,
            }
            for sample_id in sample_ids
        ],
    )


# ------------------------------------------------------------------ decisions on a run's samples
def check_label(run: RunInfo, label: int) -> None:
    """Raises :class:`InvalidRequestError` for a label that is not a class of the dataset."""
    classes = len(run.dataset.class_names)
    if not 0 <= label < classes:
        raise InvalidRequestError(
            f"label {label} is not a class of dataset {run.dataset.name!r} (0 to {classes - 1})"
        )


def check_samples(run: RunInfo, sample_ids: Sequence[int]) -> list[int]:
    """The distinct ids, ascending; :class:`InvalidRequestError` if one is not in the dataset."""
    unique = sorted(set(sample_ids))
    bad = [i for i in unique if not 0 <= i < run.dataset.num_samples]
    if bad:
        raise InvalidRequestError(
            f"samples {bad[:10]} are not in run {run.id} ({run.dataset.num_samples} samples)"
        )
    return unique


def decide(
    session: Session,
    run: RunInfo,
    kind: ReviewKind,
    sample_ids: Sequence[int],
    author: str,
    *,
    label: int | None = None,
    reason: str | None = None,
) -> ReviewAction:
    """Records one reviewer action on samples of ``run``'s dataset, checked first; the caller
    commits. Raises :class:`InvalidRequestError` for unknown samples, a label outside the
    classes, or a label given to anything but a relabel."""
    if (kind == "relabel") != (label is not None):
        raise InvalidRequestError("label is required for a relabel, and only for a relabel")
    ids = check_samples(run, sample_ids)
    if label is not None:
        check_label(run, label)
    return record_action(
        session, run.dataset.id, run.id, kind, ids, author, label=label, reason=reason
    )


def set_note(session: Session, run: RunInfo, sample_id: int, note: str | None) -> None:
    """A note is free text on the sample, not a decision: it is not part of the log."""
    sample = session.get(SampleRecord, (run.dataset.id, sample_id))
    if sample is not None:
        sample.note = note


def undo_latest_relabel(
    session: Session, run: RunInfo, sample_id: int, author: str
) -> ReviewAction:
    """Undoes the latest relabel of one sample that still stands (the whole action); raises
    :class:`ConflictError` when there is none."""
    for action in reversed(sample_reviews(session, run.dataset.id, sample_id)):
        if action.kind == "relabel" and action.undone_by is None:
            return undo_action(session, run.dataset.id, action.id, author, run.id)
    raise ConflictError(f"Sample {sample_id} has no label change to undo")
