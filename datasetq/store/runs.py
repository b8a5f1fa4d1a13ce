"""Runs and their datasets: look one up, list them, read a run's epochs and progress."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from ..errors import NotFoundError
from ..render import NoRender, RenderSpec, render_from_json
from .models import DatasetRecord, RunEpochRecord, RunRecord

__all__ = [
    "DatasetInfo",
    "EpochInfo",
    "RunInfo",
    "RunProgress",
    "effective_status",
    "find_run",
    "get_run",
    "list_runs",
    "require_run",
    "review_counts",
    "run_epochs",
    "run_progress",
]

# A running run whose heartbeat is older than this was killed or lost its store.
INTERRUPTED_AFTER = timedelta(seconds=30)


def heartbeat_age(heartbeat_at: datetime, at: datetime | None = None) -> timedelta:
    """How long ago the heartbeat was (SQLite hands timestamps back without their UTC zone)."""
    if heartbeat_at.tzinfo is None:
        heartbeat_at = heartbeat_at.replace(tzinfo=UTC)
    return (at or datetime.now(UTC)) - heartbeat_at


def effective_status(status: str, heartbeat_at: datetime, at: datetime | None = None) -> str:
    """``running`` becomes ``interrupted`` when the heartbeat stopped."""
    if status == "running" and heartbeat_age(heartbeat_at, at) > INTERRUPTED_AFTER:
        return "interrupted"
    return status


@dataclass(frozen=True)
class DatasetInfo:
    """A registered dataset: its size, classes and how to render a sample."""

    id: int
    name: str
    num_samples: int
    class_names: list[str]
    render: RenderSpec


@dataclass(frozen=True)
class RunInfo:
    """A recorded run and the dataset it trains on."""

    id: int
    name: str
    dataset: DatasetInfo
    status: str  # as recorded: running | finished | failed
    started_at: datetime
    ended_at: datetime | None
    heartbeat_at: datetime
    epochs: int  # epochs fully recorded
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def dataset_id(self) -> int:
        return self.dataset.id

    @property
    def current_status(self) -> str:
        """The status, with a running run whose heartbeat stopped shown as ``interrupted``."""
        return effective_status(self.status, self.heartbeat_at)


def _info(run: RunRecord, dataset: DatasetRecord) -> RunInfo:
    return RunInfo(
        id=run.id,
        name=run.name,
        dataset=DatasetInfo(
            id=dataset.id,
            name=dataset.name,
            num_samples=dataset.num_samples,
            class_names=list(dataset.class_names),
            render=_render(dataset.render),
        ),
        status=run.status,
        started_at=run.started_at,
        ended_at=run.ended_at,
        heartbeat_at=run.heartbeat_at,
        epochs=run.epochs,
        config=dict(run.config or {}),
    )


def _render(stored: Any) -> RenderSpec:
    try:
        return render_from_json(stored)
    except ValueError:  # written by a newer datasetq, or by hand: shown without images
        return NoRender()


_RUNS = select(RunRecord, DatasetRecord).join(
    DatasetRecord, DatasetRecord.id == RunRecord.dataset_id
)


def get_run(session: Session, run_id: int) -> RunInfo | None:
    """The run with id ``run_id``, or None."""
    row = session.execute(_RUNS.where(RunRecord.id == run_id)).one_or_none()
    return None if row is None else _info(row[0], row[1])


def require_run(session: Session, run_id: int) -> RunInfo:
    """The run with id ``run_id``; raises :class:`NotFoundError` when there is none."""
    run = get_run(session, run_id)
    if run is None:
        raise NotFoundError(f"Run {run_id} not found")
    return run


def find_run(session: Session, name_or_id: str) -> RunInfo | None:
    """The run named ``name_or_id``, else the run with that id; None if neither exists."""
    row = session.execute(_RUNS.where(RunRecord.name == name_or_id)).one_or_none()
    if row is not None:
        return _info(row[0], row[1])
    return get_run(session, int(name_or_id)) if name_or_id.isdigit() else None


def list_runs(session: Session) -> list[RunInfo]:
    """Every run, newest first."""
    rows = session.execute(_RUNS.order_by(RunRecord.id.desc())).all()
    return [_info(run, dataset) for run, dataset in rows]


@dataclass(frozen=True)
class EpochInfo:
    """What the recorder stored at the end of one epoch."""

    epoch: int
    draws: int
    evicted_total: int
    evicted_new: int
    summary: dict[str, Any]


def run_epochs(session: Session, run_id: int) -> list[EpochInfo]:
    """The run's recorded epochs, in order."""
    records = session.execute(
        select(RunEpochRecord).where(RunEpochRecord.run_id == run_id).order_by(RunEpochRecord.epoch)
    ).scalars()
    return [
        EpochInfo(r.epoch, r.draws, r.evicted_total, r.evicted_new, dict(r.summary or {}))
        for r in records
    ]


@dataclass(frozen=True)
class RunProgress:
    """How far a run is: what the event stream reports whenever it changes."""

    epochs: int
    status: str
    evicted: int
    latest_run_id: int  # the newest run in the store: a dashboard lists new runs by it


def run_progress(session: Session, run_id: int) -> RunProgress | None:
    """The run's recorded epochs, current status and evictions so far; None if it is gone."""
    row = session.execute(
        select(RunRecord.epochs, RunRecord.status, RunRecord.heartbeat_at).where(
            RunRecord.id == run_id
        )
    ).one_or_none()
    if row is None:
        return None
    evicted = session.execute(
        select(RunEpochRecord.evicted_total)
        .where(RunEpochRecord.run_id == run_id)
        .order_by(RunEpochRecord.epoch.desc())
        .limit(1)
    ).scalar_one_or_none()
    latest = session.execute(select(func.max(RunRecord.id))).scalar_one()
    status = effective_status(row.status, row.heartbeat_at)
    return RunProgress(row.epochs, status, evicted or 0, int(latest))


def review_counts(session: Session, dataset_id: int) -> tuple[int, int]:
    """Flagged and relabelled samples, read from their partial indexes (not the dataset)."""
    sqlite = session.get_bind().dialect.name == "sqlite"
    counts = []
    for index, condition in (
        ("ix_samples_flagged", "flagged"),
        ("ix_samples_relabeled", "current_label != original_label"),
    ):
        # SQLite's planner, without statistics, may prefer the primary key; name the index.
        hint = f" INDEXED BY {index}" if sqlite else ""
        statement = text(
            f"SELECT count(*) FROM samples{hint} WHERE dataset_id = :dataset AND {condition}"
        )
        counts.append(int(session.execute(statement, {"dataset": dataset_id}).scalar_one()))
    return counts[0], counts[1]
