"""What a live Recorder asks of the store besides its batches: its heartbeat, the dashboard's
decisions since it last looked, the run's end, and the sums it continues a run from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import Connection, func, select, update

from .ingest import now
from .models import DecisionRecord, LabelChangeRecord, RunRecord, SampleRecord, SampleStateRecord

__all__ = ["Decisions", "RestoredRun", "mark_ended", "poll_decisions", "restore_run"]


@dataclass(frozen=True)
class Decisions:
    """Decisions recorded after the cursors a recorder holds."""

    # (id, sample_id, "evict" | "reinstate", run_id or None for every run of the dataset)
    job: list[tuple[int, int, str, int | None]]
    # (id, sample_id, new label or None)
    labels: list[tuple[int, int, int | None]]


def poll_decisions(
    connection: Connection, run_id: int, dataset_id: int, after_decision: int, after_label: int
) -> Decisions:
    """Beats the run's heartbeat and returns the decisions recorded since the cursors."""
    connection.execute(update(RunRecord).where(RunRecord.id == run_id).values(heartbeat_at=now()))
    job = connection.execute(
        select(
            DecisionRecord.id,
            DecisionRecord.sample_id,
            DecisionRecord.action,
            DecisionRecord.run_id,
        )
        .where(DecisionRecord.dataset_id == dataset_id, DecisionRecord.id > after_decision)
        .order_by(DecisionRecord.id)
    ).all()
    labels = connection.execute(
        select(LabelChangeRecord.id, LabelChangeRecord.sample_id, LabelChangeRecord.new_label)
        .where(LabelChangeRecord.dataset_id == dataset_id, LabelChangeRecord.id > after_label)
        .order_by(LabelChangeRecord.id)
    ).all()
    return Decisions(
        job=[(int(i), int(s), str(a), r) for i, s, a, r in job],
        labels=[(int(i), int(s), label) for i, s, label in labels],
    )


def mark_ended(connection: Connection, run_id: int, status: str) -> None:
    """Records the run as ``finished`` or ``failed``, now."""
    stamp = now()
    connection.execute(
        update(RunRecord)
        .where(RunRecord.id == run_id)
        .values(status=status, ended_at=stamp, heartbeat_at=stamp)
    )


@dataclass(frozen=True)
class RestoredRun:
    """What a run recorded so far, as arrays over the samples that have state."""

    ids: npt.NDArray[np.int64]
    loss_reports: npt.NDArray[np.int64]
    mean_loss: npt.NDArray[np.float64]  # NaN: none
    max_loss: npt.NDArray[np.float64]
    last_loss: npt.NDArray[np.float64]
    last_epoch: npt.NDArray[np.int64]  # -1: none
    score: npt.NDArray[np.float64]
    coverage_epochs: npt.NDArray[np.int64]
    relabeled_ids: npt.NDArray[np.int64]  # samples whose current label differs
    relabeled_to: npt.NDArray[np.int64]
    last_decision: int  # cursors past every decision made before the run continued
    last_label_change: int


def restore_run(connection: Connection, run_id: int, dataset_id: int) -> RestoredRun:
    """The per-sample sums, current labels and decision cursors a continued run starts from."""
    rows = connection.execute(
        select(
            SampleStateRecord.sample_id,
            SampleStateRecord.loss_reports,
            SampleStateRecord.mean_loss,
            SampleStateRecord.max_loss,
            SampleStateRecord.last_loss,
            SampleStateRecord.last_epoch,
            SampleStateRecord.score,
            SampleStateRecord.coverage_epochs,
        ).where(SampleStateRecord.run_id == run_id)
    ).all()
    columns: list[Any] = [list(c) for c in zip(*rows, strict=True)] if rows else [[]] * 8
    ids, reports, mean, maximum, last, last_epoch, score, covered = columns
    labels = connection.execute(
        select(SampleRecord.sample_id, SampleRecord.current_label).where(
            SampleRecord.dataset_id == dataset_id,
            SampleRecord.current_label != SampleRecord.original_label,
            SampleRecord.current_label.is_not(None),
        )
    ).all()
    return RestoredRun(
        ids=np.asarray(ids, dtype=np.int64),
        loss_reports=np.asarray(reports, dtype=np.int64),
        mean_loss=_floats(mean),
        max_loss=_floats(maximum),
        last_loss=_floats(last),
        last_epoch=_ints(last_epoch, missing=-1),
        score=_floats(score),
        coverage_epochs=_ints(covered, missing=0),
        relabeled_ids=np.asarray([r[0] for r in labels], dtype=np.int64),
        relabeled_to=np.asarray([r[1] for r in labels], dtype=np.int64),
        last_decision=int(
            connection.execute(select(func.coalesce(func.max(DecisionRecord.id), 0))).scalar_one()
        ),
        last_label_change=int(
            connection.execute(
                select(func.coalesce(func.max(LabelChangeRecord.id), 0))
            ).scalar_one()
        ),
    )


def _floats(values: list[Any]) -> npt.NDArray[np.float64]:
    """NULLs as NaN, compared element-wise in C (no Python step per sample)."""
    objects = np.asarray(values, dtype=object)
    objects[objects == None] = np.nan  # noqa: E711
    return objects.astype(np.float64)


def _ints(values: list[Any], missing: int) -> npt.NDArray[np.int64]:
    objects = np.asarray(values, dtype=object)
    objects[objects == None] = missing  # noqa: E711
    return objects.astype(np.int64)
