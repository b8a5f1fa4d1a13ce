"""Read queries over the store, shaped for the dashboard (and used by benchmarks)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import Connection, select

from .models import (
    VISIT_BLOCK,
    EpochBlockRecord,
    RunEpochRecord,
    RunRecord,
    SampleStateRecord,
)

__all__ = ["effective_status", "hardest_samples", "sample_trajectory", "visit_histogram"]

# A running run whose heartbeat is older than this was killed or lost its store.
INTERRUPTED_AFTER = timedelta(seconds=30)


def effective_status(status: str, heartbeat_at: datetime, at: datetime | None = None) -> str:
    """``running`` becomes ``interrupted`` when the heartbeat stopped."""
    at = at or datetime.now(UTC)
    if heartbeat_at.tzinfo is None:
        heartbeat_at = heartbeat_at.replace(tzinfo=UTC)
    if status == "running" and at - heartbeat_at > INTERRUPTED_AFTER:
        return "interrupted"
    return status


def run_status(connection: Connection, run_id: int) -> str | None:
    row = connection.execute(
        select(RunRecord.status, RunRecord.heartbeat_at).where(RunRecord.id == run_id)
    ).one_or_none()
    return None if row is None else effective_status(row.status, row.heartbeat_at)


def hardest_samples(connection: Connection, run_id: int, limit: int = 100) -> list[Any]:
    """The samples with the largest latest loss (uses the ``(run_id, last_loss)`` index)."""
    return list(
        connection.execute(
            select(SampleStateRecord.sample_id, SampleStateRecord.last_loss)
            .where(SampleStateRecord.run_id == run_id, SampleStateRecord.last_loss.is_not(None))
            .order_by(SampleStateRecord.last_loss.desc())
            .limit(limit)
        ).all()
    )


def sample_trajectory(
    connection: Connection, run_id: int, sample_id: int, epochs: int
) -> dict[str, list[Any]]:
    """Per-epoch statistics of one sample, and its per-visit losses in each epoch.

    Returns ``{"epochs": [[epoch, visits, last, mean, max], ...], "visits": [[epoch, loss],
    ...]}``, epochs in order; epochs without a report of the sample are left out.
    """
    block, position = divmod(sample_id, VISIT_BLOCK)
    rows = connection.execute(
        select(EpochBlockRecord.epoch, EpochBlockRecord.visits, EpochBlockRecord.losses)
        .where(
            EpochBlockRecord.run_id == run_id,
            EpochBlockRecord.block == block,
            EpochBlockRecord.epoch.in_(range(max(epochs, 1))),
        )
        .order_by(EpochBlockRecord.epoch)
    ).all()
    per_epoch: list[list[Any]] = []
    visits: list[list[Any]] = []
    for epoch, counts_blob, losses in rows:
        counts = np.frombuffer(counts_blob, dtype="<i4")
        if position >= len(counts) or counts[position] == 0:
            continue
        first, count = int(counts[:position].sum()), int(counts[position])
        reports = np.frombuffer(losses, dtype="<f4")[first : first + count]
        as_float = reports.astype(np.float64)
        per_epoch.append(
            [epoch, count, float(as_float[-1]), float(as_float.mean()), float(as_float.max())]
        )
        visits.extend([epoch, value] for value in as_float.tolist())
    return {"epochs": per_epoch, "visits": visits}


def visit_histogram(connection: Connection, run_id: int) -> list[int]:
    """Samples per total visit count, as of the last recorded epoch."""
    summary = connection.execute(
        select(RunEpochRecord.summary)
        .where(RunEpochRecord.run_id == run_id)
        .order_by(RunEpochRecord.epoch.desc())
        .limit(1)
    ).scalar_one_or_none()
    return [] if summary is None else list(summary.get("visit_histogram", []))
