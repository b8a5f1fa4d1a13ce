"""Samples of a run: ranked pages with filters, one sample's detail, and its trajectory.

A per-sample value shown in the dashboard is a column of its model, an entry of
:data:`ROW_COLUMNS` (which fills :class:`SampleRow`) and a field of the API's schema.
"""

from __future__ import annotations

import base64
import json
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, Literal

import numpy as np
from sqlalchemy import ColumnElement, Connection, Engine, and_, func, or_, select, tuple_
from sqlalchemy.orm import Session

from ..errors import InvalidRequestError, NotFoundError
from .models import (
    VISIT_BLOCK,
    EpochBlockRecord,
    LabelChangeRecord,
    ReviewActionRecord,
    SampleRecord,
    SampleStateRecord,
)
from .reviews import ReviewAction, sample_reviews
from .runs import RunInfo

__all__ = [
    "SORT_COLUMNS",
    "Filters",
    "GroundTruthCounts",
    "SampleDetail",
    "SamplePage",
    "SampleRow",
    "check_sample",
    "confusion_counts",
    "count_samples",
    "ground_truth",
    "sample_detail",
    "sample_label",
    "sample_page",
    "sample_source",
    "sample_trajectory",
    "suspicion_ranking",
]

SortKey = Literal["loss", "mean_loss", "score", "max_loss", "visits", "evicted_epoch"]
SORT_COLUMNS: dict[str, Any] = {
    "loss": SampleStateRecord.last_loss,
    "mean_loss": SampleStateRecord.mean_loss,
    # "score" (suspicion) ranks by the mean of each epoch's first reported loss: one value per
    # epoch however often the sampler drew a sample, so priority sampling does not inflate it
    # (docs/study/README.md). suspicion_ranking() ranks by it too.
    "score": SampleStateRecord.score,
    "max_loss": SampleStateRecord.max_loss,
    "visits": SampleStateRecord.visits,
    "evicted_epoch": SampleStateRecord.evicted_epoch,
}


@dataclass(frozen=True)
class SampleRow:
    """One sample in a ranked list."""

    sample_id: int
    label: int | None
    original_label: int | None
    visits: int
    last_loss: float | None
    mean_loss: float | None
    max_loss: float | None
    score: float | None  # suspicion: mean of each epoch's first reported loss
    evicted_epoch: int | None
    last_pred: int | None
    last_margin: float | None  # given label's logit minus the largest other, when reported
    flagged: bool
    relabeled: bool
    verdict: str | None  # a reviewer's "keep" or "drop"


# Each SampleRow field, as the column (or expression) it is read from.
ROW_COLUMNS: dict[str, Any] = {
    "sample_id": SampleStateRecord.sample_id,
    "label": SampleRecord.current_label,
    "original_label": SampleRecord.original_label,
    "visits": SampleStateRecord.visits,
    "last_loss": SampleStateRecord.last_loss,
    "mean_loss": SampleStateRecord.mean_loss,
    "max_loss": SampleStateRecord.max_loss,
    "score": SampleStateRecord.score,
    "evicted_epoch": SampleStateRecord.evicted_epoch,
    "last_pred": SampleStateRecord.last_pred,
    "last_margin": SampleStateRecord.last_margin,
    "flagged": SampleRecord.flagged,
    "relabeled": SampleRecord.current_label.is_distinct_from(SampleRecord.original_label),
    "verdict": SampleRecord.verdict,
}
assert list(ROW_COLUMNS) == [f.name for f in fields(SampleRow)]


def _row(values: Sequence[Any]) -> SampleRow:
    row = dict(zip(ROW_COLUMNS, values, strict=False))
    row["flagged"], row["relabeled"] = bool(row["flagged"]), bool(row["relabeled"])
    return SampleRow(**row)


@dataclass(frozen=True)
class Filters:
    """Which samples a list shows; None leaves a criterion out."""

    evicted: bool | None = None
    flagged: bool | None = None
    relabeled: bool | None = None
    label: int | None = None
    mispredicted: bool | None = None  # last recorded prediction differs from the label
    pred: int | None = None  # last recorded prediction
    reviewed: bool | None = None  # a reviewer kept, dropped, relabelled or flagged it


def _filtered(run: RunInfo, filters: Filters) -> tuple[Any, list[ColumnElement[bool]]]:
    joined = (
        select()
        .select_from(SampleStateRecord)
        .join(
            SampleRecord,
            and_(
                SampleRecord.dataset_id == run.dataset.id,
                SampleRecord.sample_id == SampleStateRecord.sample_id,
            ),
        )
    )
    conditions: list[ColumnElement[bool]] = [SampleStateRecord.run_id == run.id]
    if filters.evicted is not None:
        column = SampleStateRecord.evicted_epoch
        conditions.append(column.is_not(None) if filters.evicted else column.is_(None))
    if filters.flagged is not None:
        conditions.append(SampleRecord.flagged.is_(filters.flagged))
    if filters.relabeled is not None:
        changed = SampleRecord.current_label != SampleRecord.original_label
        conditions.append(changed if filters.relabeled else ~changed)
    if filters.label is not None:
        conditions.append(SampleRecord.current_label == filters.label)
    if filters.mispredicted is not None:
        wrong = and_(
            SampleStateRecord.last_pred.is_not(None),
            SampleStateRecord.last_pred != SampleRecord.current_label,
        )
        conditions.append(wrong if filters.mispredicted else ~wrong)
    if filters.pred is not None:
        conditions.append(SampleStateRecord.last_pred == filters.pred)
    if filters.reviewed is not None:
        decided = or_(SampleRecord.verdict.is_not(None), SampleRecord.flagged.is_(True))
        conditions.append(decided if filters.reviewed else ~decided)
    return joined, conditions


# ------------------------------------------------------------------ keyset cursors
def encode_cursor(value: Any, sample_id: int) -> str:
    return base64.urlsafe_b64encode(json.dumps([value, sample_id]).encode()).decode()


def decode_cursor(cursor: str) -> tuple[float, int]:
    """The ``(value, sample_id)`` a page ended at; :class:`InvalidRequestError` otherwise."""
    try:
        value, sample_id = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        if not isinstance(value, int | float) or not isinstance(sample_id, int):
            raise ValueError
        if isinstance(value, bool) or isinstance(sample_id, bool):
            raise ValueError
        if abs(value) > 2**62 or abs(sample_id) > 2**62:
            raise ValueError
        return value, sample_id
    except (ValueError, TypeError, json.JSONDecodeError, UnicodeDecodeError):
        raise InvalidRequestError("cursor is not one this API returned") from None


# ------------------------------------------------------------------ pages
@dataclass(frozen=True)
class SamplePage:
    items: list[SampleRow]
    total: int  # samples matching the filters (with a value for the sort key)
    next_cursor: str | None  # pass back to get the next page; None on the last


def sample_page(
    session: Session,
    run: RunInfo,
    sort: str,
    descending: bool,
    limit: int,
    cursor: str | None,
    filters: Filters,
) -> SamplePage:
    """Samples ranked by ``sort``, ``limit`` at a time (keyset pagination by ``cursor``).

    Samples without a value for the sort key (never scored, never evicted) are left out.
    """
    column = _sort_column(sort)
    joined, conditions = _filtered(run, filters)
    conditions.append(column.is_not(None))  # a sample without this value has no rank yet
    order, beyond = _ranking(column, descending)
    if cursor is not None:
        conditions.append(beyond(*decode_cursor(cursor)))
    rows = session.execute(
        joined.add_columns(*ROW_COLUMNS.values(), column)
        .where(*conditions)
        .order_by(*order)
        .limit(limit + 1)
    ).all()
    items = [_row(r[:-1]) for r in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        next_cursor = encode_cursor(last[-1], last[0])
    return SamplePage(items, count_samples(session, run, sort, filters), next_cursor)


def _ranking(column: Any, descending: bool) -> tuple[tuple[Any, Any], Any]:
    """A list's order by ``(column, sample_id)``, and ``beyond(value, sample_id)``: the
    condition for the samples that come after that key in it."""
    key = tuple_(column, SampleStateRecord.sample_id)
    if descending:
        order = (column.desc(), SampleStateRecord.sample_id.desc())
        return order, lambda value, sample_id: key < tuple_(value, sample_id)
    order = (column.asc(), SampleStateRecord.sample_id.asc())
    return order, lambda value, sample_id: key > tuple_(value, sample_id)


def _sort_column(sort: str) -> Any:
    column = SORT_COLUMNS.get(sort)
    if column is None:
        raise InvalidRequestError(f"sort should be one of {sorted(SORT_COLUMNS)}, not {sort!r}")
    return column


class _CountCache:
    """Counts of filtered samples per database, until the run or a decision moves."""

    def __init__(self) -> None:
        self._by_engine: weakref.WeakKeyDictionary[Engine, dict[tuple[Any, ...], int]] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()

    def get(self, engine: Engine, key: tuple[Any, ...]) -> int | None:
        with self._lock:
            return self._by_engine.get(engine, {}).get(key)

    def put(self, engine: Engine, key: tuple[Any, ...], value: int) -> None:
        with self._lock:
            counts = self._by_engine.setdefault(engine, {})
            if len(counts) > 1024:
                counts.clear()
            counts[key] = value


_counts = _CountCache()


def count_samples(session: Session, run: RunInfo, sort: str, filters: Filters) -> int:
    """Samples matching the filters; cached until the run records another epoch or a label or
    decision changes."""
    version = (
        session.execute(select(func.coalesce(func.max(LabelChangeRecord.id), 0))).scalar_one(),
        session.execute(select(func.coalesce(func.max(ReviewActionRecord.id), 0))).scalar_one(),
    )
    key = (run.id, run.epochs, run.heartbeat_at, sort, filters, *version)
    bind = session.get_bind()
    engine = bind if isinstance(bind, Engine) else bind.engine
    cached = _counts.get(engine, key)
    if cached is not None:
        return cached
    joined, conditions = _filtered(run, filters)
    conditions.append(_sort_column(sort).is_not(None))
    total = int(session.execute(joined.add_columns(func.count()).where(*conditions)).scalar_one())
    _counts.put(engine, key, total)
    return total


def confusion_counts(session: Session, run: RunInfo) -> dict[tuple[int, int], int]:
    """Samples per (current label, last recorded prediction), over the samples that have both
    and a loss: each cell holds exactly what ``sample_page`` lists for ``Filters(label=,
    pred=)`` sorted by ``"loss"``."""
    joined, conditions = _filtered(run, Filters())
    label, pred = SampleRecord.current_label, SampleStateRecord.last_pred
    rows = session.execute(
        joined.add_columns(label, pred, func.count())
        .where(*conditions, label.is_not(None), pred.is_not(None))
        .where(SORT_COLUMNS["loss"].is_not(None))
        .group_by(label, pred)
    ).all()
    return {(int(a), int(b)): int(n) for a, b, n in rows}


def suspicion_ranking(session: Session, run_id: int, limit: int) -> list[int]:
    """The ``limit`` most suspicious sample ids, most suspicious first."""
    column = SORT_COLUMNS["score"]
    return list(
        session.execute(
            select(SampleStateRecord.sample_id)
            .where(SampleStateRecord.run_id == run_id, column.is_not(None))
            .order_by(column.desc(), SampleStateRecord.sample_id.desc())
            .limit(limit)
        ).scalars()
    )


@dataclass(frozen=True)
class GroundTruthCounts:
    """For runs whose config lists the labels flipped on purpose (the demo)."""

    flipped: int
    evicted: int
    flipped_among_evicted: int
    top_ranked: int  # the len(flipped) most suspicious samples
    flipped_among_top: int


def ground_truth(session: Session, run: RunInfo) -> GroundTruthCounts | None:
    """How many flipped labels the sampler evicted and the suspicion ranking puts on top;
    None for a run without a list of flipped labels."""
    flipped = run.config.get("flipped")
    if not isinstance(flipped, list) or not flipped:
        return None
    flipped_set = set(flipped)
    evicted = list(
        session.execute(
            select(SampleStateRecord.sample_id).where(
                SampleStateRecord.run_id == run.id, SampleStateRecord.evicted_epoch.is_not(None)
            )
        ).scalars()
    )
    top = suspicion_ranking(session, run.id, len(flipped))
    return GroundTruthCounts(
        flipped=len(flipped_set),
        evicted=len(evicted),
        flipped_among_evicted=sum(1 for i in evicted if i in flipped_set),
        top_ranked=len(top),
        flipped_among_top=sum(1 for i in top if i in flipped_set),
    )


# ------------------------------------------------------------------ one sample
def check_sample(run: RunInfo, sample_id: int) -> None:
    """Raises :class:`NotFoundError` for an id outside the run's dataset."""
    if not 0 <= sample_id < run.dataset.num_samples:
        raise NotFoundError(
            f"Sample {sample_id} not found in run {run.id} ({run.dataset.num_samples} samples)"
        )


def sample_label(session: Session, run: RunInfo, sample_id: int) -> int | None:
    """The sample's current label (None: unlabelled or unknown)."""
    sample = session.get(SampleRecord, (run.dataset.id, sample_id))
    return None if sample is None else sample.current_label


def sample_source(session: Session, run: RunInfo, sample_id: int) -> str | None:
    """Where the registered dataset says the sample's file is (None: rendered from the data)."""
    check_sample(run, sample_id)
    sample = session.get(SampleRecord, (run.dataset.id, sample_id))
    return None if sample is None else sample.source


@dataclass(frozen=True)
class EpochStat:
    epoch: int
    visits: int
    last_loss: float
    mean_loss: float
    max_loss: float


@dataclass(frozen=True)
class VisitLoss:
    epoch: int
    loss: float


@dataclass(frozen=True)
class LabelEvent:
    id: int
    old_label: int | None
    new_label: int | None
    reason: str | None
    author: str
    created_at: datetime


@dataclass(frozen=True)
class SampleDetail:
    """Everything the store knows about one sample of a run."""

    row: SampleRow
    evidence_score: float | None  # the score when the sampler evicted it on evidence
    wrong_since: int | None  # the epoch since which the model has doubted its label
    source: str | None
    note: str | None
    flag_reason: str | None
    verdict: str | None  # a reviewer's "keep" or "drop"
    trajectory: list[EpochStat]
    visit_losses: list[VisitLoss]
    label_history: list[LabelEvent]
    reviews: list[ReviewAction]
    previous_id: int | None  # neighbours in the ranking the detail was asked for
    next_id: int | None


def sample_detail(
    session: Session,
    run: RunInfo,
    sample_id: int,
    sort: str,
    descending: bool = True,
    filters: Filters = Filters(),
) -> SampleDetail:
    """One sample: its row, trajectory, label and review history, and its neighbours in the
    list ``sort`` / ``descending`` / ``filters`` (the list it was opened from), placed by its
    own sort value even when a decision moved it out of the filters. Raises
    :class:`NotFoundError` for an unknown sample."""
    check_sample(run, sample_id)
    sample = session.get(SampleRecord, (run.dataset.id, sample_id))
    if sample is None:
        raise NotFoundError(f"Sample {sample_id} not found")
    state = session.get(SampleStateRecord, (run.id, sample_id))
    trajectory = sample_trajectory(session.connection(), run.id, sample_id, run.epochs)
    labels = session.execute(
        select(LabelChangeRecord)
        .where(
            LabelChangeRecord.dataset_id == run.dataset.id,
            LabelChangeRecord.sample_id == sample_id,
        )
        .order_by(LabelChangeRecord.id)
    ).scalars()
    sort_value = None if state is None else getattr(state, _sort_column(sort).key)
    previous, following = _neighbours(
        session, run, sample_id, sort, sort_value, descending, filters
    )
    row = SampleRow(
        sample_id=sample_id,
        label=sample.current_label,
        original_label=sample.original_label,
        visits=state.visits if state else 0,
        last_loss=state.last_loss if state else None,
        mean_loss=state.mean_loss if state else None,
        max_loss=state.max_loss if state else None,
        score=state.score if state else None,
        evicted_epoch=state.evicted_epoch if state else None,
        last_pred=state.last_pred if state else None,
        last_margin=state.last_margin if state else None,
        flagged=sample.flagged,
        relabeled=sample.current_label != sample.original_label,
        verdict=sample.verdict,
    )
    return SampleDetail(
        row=row,
        evidence_score=state.evidence_score if state else None,
        wrong_since=state.wrong_since if state else None,
        source=sample.source,
        note=sample.note,
        flag_reason=sample.flag_reason,
        verdict=sample.verdict,
        trajectory=[EpochStat(*values) for values in trajectory["epochs"]],
        visit_losses=[VisitLoss(epoch, loss) for epoch, loss in trajectory["visits"]],
        label_history=[
            LabelEvent(r.id, r.old_label, r.new_label, r.reason, r.author, r.created_at)
            for r in labels
        ],
        reviews=sample_reviews(session, run.dataset.id, sample_id),
        previous_id=previous,
        next_id=following,
    )


def _neighbours(
    session: Session,
    run: RunInfo,
    sample_id: int,
    sort: str,
    value: Any,
    descending: bool,
    filters: Filters,
) -> tuple[int | None, int | None]:
    """The samples before and after this one in the filtered ranking."""
    if value is None:
        return None, None
    column = _sort_column(sort)
    joined, conditions = _filtered(run, filters)
    base = joined.add_columns(SampleStateRecord.sample_id).where(*conditions, column.is_not(None))
    # The previous sample is the next one of the same list in the reverse order.
    (order, beyond), (back, behind) = _ranking(column, descending), _ranking(column, not descending)
    following = session.execute(
        base.where(beyond(value, sample_id)).order_by(*order).limit(1)
    ).scalar_one_or_none()
    previous = session.execute(
        base.where(behind(value, sample_id)).order_by(*back).limit(1)
    ).scalar_one_or_none()
    return previous, following


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
