"""Query functions behind the routes: they take a session and return plain data or schemas."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException
from sqlalchemy import ColumnElement, and_, func, select, text, tuple_
from sqlalchemy.orm import Session

from datasetq.store import reviews
from datasetq.store.models import (
    DatasetRecord,
    LabelChangeRecord,
    ReviewActionRecord,
    RunEpochRecord,
    RunRecord,
    SampleRecord,
    SampleStateRecord,
)
from datasetq.store.queries import effective_status, sample_trajectory

from . import schemas

SORT_COLUMNS = {
    "loss": SampleStateRecord.last_loss,
    "mean_loss": SampleStateRecord.mean_loss,
    # "score" (suspicion) ranks by the mean of each epoch's first reported loss: one value per
    # epoch however often the sampler drew a sample, so priority sampling does not inflate it
    # (docs/study/README.md). ground_truth() below ranks by the same column.
    "score": SampleStateRecord.score,
    "max_loss": SampleStateRecord.max_loss,
    "visits": SampleStateRecord.visits,
    "evicted_epoch": SampleStateRecord.evicted_epoch,
}


@dataclass
class Filters:
    evicted: bool | None = None
    flagged: bool | None = None
    relabeled: bool | None = None
    label: int | None = None
    mispredicted: bool | None = None

    def key(self) -> tuple[Any, ...]:
        return (self.evicted, self.flagged, self.relabeled, self.label, self.mispredicted)


@dataclass
class RunContext:
    run: RunRecord
    dataset: DatasetRecord


def get_run(session: Session, run_id: int) -> RunContext:
    row = session.execute(
        select(RunRecord, DatasetRecord)
        .join(DatasetRecord, DatasetRecord.id == RunRecord.dataset_id)
        .where(RunRecord.id == run_id)
    ).one_or_none()
    if row is None:
        raise HTTPException(status_code=404, detail=f"Run {run_id} not found")
    return RunContext(run=row[0], dataset=row[1])


def sample_label(session: Session, context: RunContext, sample_id: int) -> int | None:
    sample = session.get(SampleRecord, (context.dataset.id, sample_id))
    return None if sample is None else sample.current_label


def check_sample(context: RunContext, sample_id: int) -> None:
    if not 0 <= sample_id < context.dataset.num_samples:
        raise HTTPException(
            status_code=404,
            detail=f"Sample {sample_id} not found in run {context.run.id} "
            f"({context.dataset.num_samples} samples)",
        )


def run_public(context: RunContext) -> dict[str, Any]:
    run = context.run
    return {
        "id": run.id,
        "name": run.name,
        "dataset_id": run.dataset_id,
        "dataset_name": context.dataset.name,
        "status": effective_status(run.status, run.heartbeat_at),
        "started_at": run.started_at,
        "ended_at": run.ended_at,
        "heartbeat_at": run.heartbeat_at,
        "epochs": run.epochs,
        "num_samples": context.dataset.num_samples,
    }


def list_runs(session: Session) -> list[schemas.RunPublic]:
    rows = session.execute(
        select(RunRecord, DatasetRecord)
        .join(DatasetRecord, DatasetRecord.id == RunRecord.dataset_id)
        .order_by(RunRecord.id.desc())
    ).all()
    return [schemas.RunPublic(**run_public(RunContext(run, dataset))) for run, dataset in rows]


def run_summary(session: Session, context: RunContext) -> schemas.RunSummary:
    run, dataset = context.run, context.dataset
    epochs = session.execute(
        select(RunEpochRecord).where(RunEpochRecord.run_id == run.id).order_by(RunEpochRecord.epoch)
    ).scalars()
    points: list[schemas.EpochPoint] = []
    histogram: list[int] = []
    percentiles: list[int] = [5, 25, 50, 75, 95]
    for record in epochs:
        summary = record.summary or {}
        percentiles = summary.get("percentiles", percentiles)
        histogram = summary.get("visit_histogram", histogram)
        points.append(
            schemas.EpochPoint(
                epoch=record.epoch,
                draws=record.draws,
                evicted_total=record.evicted_total,
                evicted_new=record.evicted_new,
                loss_percentiles=summary.get("epoch_loss"),
                mean_epoch_loss=summary.get("mean_epoch_loss"),
                samples_visited=summary.get("samples_visited"),
            )
        )
    evicted = points[-1].evicted_total if points else 0
    flagged, relabeled = review_counts(session, dataset.id)
    return schemas.RunSummary(
        **run_public(context),
        config={k: v for k, v in (run.config or {}).items() if k != "flipped"},
        class_names=dataset.class_names,
        evicted=evicted,
        flagged=flagged,
        relabeled=relabeled,
        percentiles=percentiles,
        epochs_detail=points,
        visit_histogram=histogram,
        ground_truth=ground_truth(session, context, evicted),
    )


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


def ground_truth(session: Session, context: RunContext, evicted: int) -> schemas.GroundTruth | None:
    """For runs whose config lists the labels flipped on purpose (the demo)."""
    flipped = (context.run.config or {}).get("flipped")
    if not isinstance(flipped, list) or not flipped:
        return None
    flipped_set = set(flipped)
    evicted_ids = session.execute(
        select(SampleStateRecord.sample_id).where(
            SampleStateRecord.run_id == context.run.id,
            SampleStateRecord.evicted_epoch.is_not(None),
        )
    ).scalars()
    evicted_list = list(evicted_ids)
    top = session.execute(
        select(SampleStateRecord.sample_id)
        .where(
            SampleStateRecord.run_id == context.run.id,
            SORT_COLUMNS["score"].is_not(None),
        )
        .order_by(SORT_COLUMNS["score"].desc(), SampleStateRecord.sample_id.desc())
        .limit(len(flipped))
    ).scalars()
    top_list = list(top)
    return schemas.GroundTruth(
        flipped=len(flipped_set),
        evicted=len(evicted_list),
        flipped_among_evicted=sum(1 for i in evicted_list if i in flipped_set),
        top_ranked=len(top_list),
        flipped_among_top=sum(1 for i in top_list if i in flipped_set),
    )


def _filtered(context: RunContext, filters: Filters) -> tuple[Any, list[ColumnElement[bool]]]:
    joined = (
        select()
        .select_from(SampleStateRecord)
        .join(
            SampleRecord,
            and_(
                SampleRecord.dataset_id == context.dataset.id,
                SampleRecord.sample_id == SampleStateRecord.sample_id,
            ),
        )
    )
    conditions: list[ColumnElement[bool]] = [SampleStateRecord.run_id == context.run.id]
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
    return joined, conditions


ROW_COLUMNS = (
    SampleStateRecord.sample_id,
    SampleRecord.current_label,
    SampleRecord.original_label,
    SampleStateRecord.visits,
    SampleStateRecord.last_loss,
    SampleStateRecord.mean_loss,
    SampleStateRecord.max_loss,
    SampleStateRecord.score,
    SampleStateRecord.evicted_epoch,
    SampleStateRecord.last_pred,
    SampleRecord.flagged,
)


def _row(values: Any) -> schemas.SampleRow:
    (sample_id, label, original, visits, last, mean, maximum, score, evicted, pred, flagged) = (
        values
    )
    return schemas.SampleRow(
        sample_id=sample_id,
        label=label,
        original_label=original,
        visits=visits,
        last_loss=last,
        mean_loss=mean,
        max_loss=maximum,
        score=score,
        evicted_epoch=evicted,
        last_pred=pred,
        flagged=bool(flagged),
        relabeled=label != original,
    )


def encode_cursor(value: Any, sample_id: int) -> str:
    return base64.urlsafe_b64encode(json.dumps([value, sample_id]).encode()).decode()


def decode_cursor(cursor: str) -> tuple[float, int]:
    try:
        value, sample_id = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        if not isinstance(value, int | float) or not isinstance(sample_id, int):
            raise ValueError
        if isinstance(value, bool) or abs(value) > 2**62 or abs(sample_id) > 2**62:
            raise ValueError
        return value, sample_id
    except (ValueError, TypeError, json.JSONDecodeError, UnicodeDecodeError):
        raise HTTPException(status_code=422, detail="cursor is not one this API returned") from None


_count_cache: dict[tuple[Any, ...], int] = {}


def sample_page(
    session: Session,
    context: RunContext,
    sort: str,
    descending: bool,
    limit: int,
    cursor: str | None,
    filters: Filters,
) -> schemas.SamplePage:
    column = SORT_COLUMNS[sort]
    joined, conditions = _filtered(context, filters)
    conditions.append(column.is_not(None))  # a sample without this value has no rank yet
    key = tuple_(column, SampleStateRecord.sample_id)
    if cursor is not None:
        value, after = decode_cursor(cursor)
        conditions.append(key < tuple_(value, after) if descending else key > tuple_(value, after))
    order = (
        (column.desc(), SampleStateRecord.sample_id.desc())
        if descending
        else (
            column.asc(),
            SampleStateRecord.sample_id.asc(),
        )
    )
    rows = session.execute(
        joined.add_columns(*ROW_COLUMNS, column)
        .where(*conditions)
        .order_by(*order)
        .limit(limit + 1)
    ).all()
    items = [_row(r[:-1]) for r in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        next_cursor = encode_cursor(last[-1], last[0])
    return schemas.SamplePage(
        items=items, total=count_samples(session, context, sort, filters), next_cursor=next_cursor
    )


def count_samples(session: Session, context: RunContext, sort: str, filters: Filters) -> int:
    """Rows matching the filters; cached until the run records another epoch or a label moves."""
    version = (
        session.execute(select(func.coalesce(func.max(LabelChangeRecord.id), 0))).scalar_one(),
        session.execute(select(func.coalesce(func.max(ReviewActionRecord.id), 0))).scalar_one(),
    )
    cache_key = (
        context.run.id,
        context.run.epochs,
        context.run.heartbeat_at,
        sort,
        filters.key(),
        *version,
    )
    cached = _count_cache.get(cache_key)
    if cached is not None:
        return cached
    joined, conditions = _filtered(context, filters)
    conditions.append(SORT_COLUMNS[sort].is_not(None))
    total = session.execute(joined.add_columns(func.count()).where(*conditions)).scalar_one()
    if len(_count_cache) > 1024:
        _count_cache.clear()
    _count_cache[cache_key] = total
    return int(total)


def neighbours(
    session: Session, context: RunContext, sample_id: int, sort: str, value: Any
) -> tuple[int | None, int | None]:
    """The samples before and after this one in the ranking (descending)."""
    if value is None:
        return None, None
    column = SORT_COLUMNS[sort]
    key = tuple_(column, SampleStateRecord.sample_id)
    base = select(SampleStateRecord.sample_id).where(
        SampleStateRecord.run_id == context.run.id, column.is_not(None)
    )
    previous = session.execute(
        base.where(key > tuple_(value, sample_id))
        .order_by(column.asc(), SampleStateRecord.sample_id.asc())
        .limit(1)
    ).scalar_one_or_none()
    following = session.execute(
        base.where(key < tuple_(value, sample_id))
        .order_by(column.desc(), SampleStateRecord.sample_id.desc())
        .limit(1)
    ).scalar_one_or_none()
    return previous, following


def sample_detail(
    session: Session, context: RunContext, sample_id: int, sort: str
) -> schemas.SampleDetail:
    check_sample(context, sample_id)
    sample = session.get(SampleRecord, (context.dataset.id, sample_id))
    if sample is None:
        raise HTTPException(status_code=404, detail=f"Sample {sample_id} not found")
    state = session.get(SampleStateRecord, (context.run.id, sample_id))
    trajectory = sample_trajectory(
        session.connection(), context.run.id, sample_id, context.run.epochs
    )
    labels = session.execute(
        select(LabelChangeRecord)
        .where(
            LabelChangeRecord.dataset_id == context.dataset.id,
            LabelChangeRecord.sample_id == sample_id,
        )
        .order_by(LabelChangeRecord.id)
    ).scalars()
    review_log = reviews.sample_reviews(session, context.dataset.id, sample_id)
    sort_value = None
    if state is not None:
        sort_value = getattr(state, SORT_COLUMNS[sort].key)
    previous, following = neighbours(session, context, sample_id, sort, sort_value)
    return schemas.SampleDetail(
        sample_id=sample_id,
        label=sample.current_label,
        original_label=sample.original_label,
        visits=state.visits if state else 0,
        last_loss=state.last_loss if state else None,
        mean_loss=state.mean_loss if state else None,
        max_loss=state.max_loss if state else None,
        score=state.score if state else None,
        evidence_score=state.evidence_score if state else None,
        wrong_since=state.wrong_since if state else None,
        evicted_epoch=state.evicted_epoch if state else None,
        last_pred=state.last_pred if state else None,
        flagged=sample.flagged,
        relabeled=sample.current_label != sample.original_label,
        source=sample.source,
        note=sample.note,
        flag_reason=sample.flag_reason,
        class_names=context.dataset.class_names,
        trajectory=[
            schemas.EpochStat(epoch=e, visits=v, last_loss=last, mean_loss=mean, max_loss=mx)
            for e, v, last, mean, mx in trajectory["epochs"]
        ],
        visit_losses=[schemas.VisitLoss(epoch=e, loss=v) for e, v in trajectory["visits"]],
        label_history=[
            schemas.LabelEvent(
                id=r.id,
                old_label=r.old_label,
                new_label=r.new_label,
                reason=r.reason,
                author=r.author,
                created_at=r.created_at,
            )
            for r in labels
        ],
        flag_history=[
            schemas.FlagEvent(
                id=a.id,
                flagged=a.kind == "flag",
                reason=a.reason,
                author=a.author,
                created_at=a.created_at,
            )
            for a in review_log
            if a.kind in ("flag", "unflag") and a.undone_by is None
        ],
        verdict=sample.verdict,
        dataset_name=context.dataset.name,
        review_history=[
            schemas.ReviewActionOut.model_validate(a, from_attributes=True) for a in review_log
        ],
        previous_id=previous,
        next_id=following,
    )
