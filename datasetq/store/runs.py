"""Runs in the store: find one by name or id, list them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from .models import DatasetRecord, RunRecord
from .queries import effective_status

__all__ = ["RunListing", "find_run", "list_runs"]


@dataclass(frozen=True)
class RunListing:
    id: int
    name: str
    dataset: str
    status: str
    epochs: int
    started_at: datetime


def find_run(session: Session, name_or_id: str) -> tuple[RunRecord, DatasetRecord] | None:
    """The run named ``name_or_id``, else the run with that id; None if neither exists."""
    statement = select(RunRecord, DatasetRecord).join(
        DatasetRecord, DatasetRecord.id == RunRecord.dataset_id
    )
    row = session.execute(statement.where(RunRecord.name == name_or_id)).one_or_none()
    if row is None and name_or_id.isdigit():
        row = session.execute(statement.where(RunRecord.id == int(name_or_id))).one_or_none()
    return None if row is None else (row[0], row[1])


def list_runs(session: Session) -> list[RunListing]:
    rows = session.execute(
        select(RunRecord, DatasetRecord.name)
        .join(DatasetRecord, DatasetRecord.id == RunRecord.dataset_id)
        .order_by(RunRecord.id)
    ).all()
    return [
        RunListing(
            id=run.id,
            name=run.name,
            dataset=dataset,
            status=effective_status(run.status, run.heartbeat_at),
            epochs=run.epochs,
            started_at=run.started_at,
        )
        for run, dataset in rows
    ]
