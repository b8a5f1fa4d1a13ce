"""Pydantic schemas of the API (separate from the ORM models)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from datasetq.store.runs import RunInfo
from datasetq.store.samples import SortKey

__all__ = ["SortKey"]  # and every model below


def _utc(value: datetime) -> datetime:
    # SQLite hands back its timezone-aware columns without the zone; they are stored in UTC.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


Timestamp = Annotated[datetime, AfterValidator(_utc)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class RunPublic(BaseModel):
    id: int
    name: str
    dataset_id: int
    dataset_name: str
    status: Literal["running", "finished", "failed", "interrupted"]
    started_at: Timestamp
    ended_at: Timestamp | None
    heartbeat_at: Timestamp
    epochs: int
    num_samples: int

    @classmethod
    def fields_of(cls, run: RunInfo) -> dict[str, Any]:
        return {
            "id": run.id,
            "name": run.name,
            "dataset_id": run.dataset.id,
            "dataset_name": run.dataset.name,
            "status": run.current_status,
            "started_at": run.started_at,
            "ended_at": run.ended_at,
            "heartbeat_at": run.heartbeat_at,
            "epochs": run.epochs,
            "num_samples": run.dataset.num_samples,
        }


class EpochPoint(BaseModel):
    epoch: int
    draws: int
    evicted_total: int
    evicted_new: int
    loss_percentiles: list[float] | None
    mean_epoch_loss: float | None
    samples_visited: int | None


class GroundTruth(BaseModel):
    """How many known-flipped labels the run found (when its config records them)."""

    flipped: int
    evicted: int
    flipped_among_evicted: int
    top_ranked: int
    flipped_among_top: int


class RunSummary(RunPublic):
    config: dict[str, Any]
    class_names: list[str]
    evicted: int
    flagged: int
    relabeled: int
    percentiles: list[int]
    epochs_detail: list[EpochPoint]
    visit_histogram: list[int]
    ground_truth: GroundTruth | None


class SampleRow(BaseModel):
    sample_id: int
    label: int | None
    original_label: int | None
    visits: int
    last_loss: float | None
    mean_loss: float | None
    max_loss: float | None
    score: float | None = Field(
        description="suspicion: mean of each epoch's first reported loss (higher: more suspicious)"
    )
    evicted_epoch: int | None
    last_pred: int | None
    last_margin: float | None = Field(
        description="the given label's logit minus the largest other at the latest report "
        "(below 0: the model prefers another class); null when the loop reports no margin"
    )
    flagged: bool
    relabeled: bool
    verdict: str | None = Field(description='a reviewer\'s "keep" or "drop"; null: not decided')


class ConfusionCell(BaseModel):
    label: int
    pred: int
    count: int


class ConfusionMatrix(BaseModel):
    class_names: list[str]
    cells: list[ConfusionCell] = Field(
        description="the non-empty cells: samples whose current label is `label` and whose "
        "latest recorded prediction is `pred` (the sample list's `label=&pred=` filter)"
    )
    samples: int = Field(description="samples with a label and a recorded prediction")


class SamplePage(BaseModel):
    items: list[SampleRow]
    total: int
    next_cursor: str | None


class LabelEvent(BaseModel):
    id: int
    old_label: int | None
    new_label: int | None
    reason: str | None
    author: str
    created_at: Timestamp


class FlagEvent(BaseModel):
    id: int
    flagged: bool
    reason: str | None
    author: str
    created_at: Timestamp


class EpochStat(BaseModel):
    epoch: int
    visits: int
    last_loss: float
    mean_loss: float
    max_loss: float


class VisitLoss(BaseModel):
    epoch: int
    loss: float


class SampleDetail(SampleRow):
    dataset_name: str = Field(description="the dataset its decisions belong to")
    evidence_score: float | None = Field(description="the score when the sampler evicted it")
    wrong_since: int | None = Field(
        description="epoch since which the model has doubted the label at its coverage visits "
        "(found another class more likely, at every visit or on balance), when the sampler "
        "evicted the sample on that evidence (null: evicted by max_visits or a person)"
    )
    source: str | None
    note: str | None
    flag_reason: str | None
    class_names: list[str]
    trajectory: list[EpochStat]
    visit_losses: list[VisitLoss]
    label_history: list[LabelEvent]
    flag_history: list[FlagEvent]
    review_history: list[ReviewActionOut] = Field(
        description="every review action on this sample, oldest first, undone ones included"
    )
    previous_id: int | None
    next_id: int | None


class LabelChange(Strict):
    label: int = Field(ge=0)
    note: str | None = Field(default=None, max_length=2000)


class FlagChange(Strict):
    flagged: bool
    reason: str | None = Field(default=None, max_length=2000)


class BulkLabelChange(LabelChange):
    sample_ids: list[int] = Field(min_length=1, max_length=10_000)


class BulkFlagChange(FlagChange):
    sample_ids: list[int] = Field(min_length=1, max_length=10_000)


class Decision(Strict):
    action: Literal["evict", "reinstate"]


class ChangeResult(BaseModel):
    changed: int
    sample_ids: list[int]
    action_id: int | None = Field(default=None, description="the review action, to undo it")


class Problem(BaseModel):
    """What every error response holds."""

    detail: str


NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": Problem}}
CONFLICT: dict[int | str, dict[str, Any]] = {409: {"model": Problem}}


class ReviewRequest(Strict):
    kind: Literal["relabel", "keep", "drop", "flag", "unflag"] = Field(
        description="relabel (needs label), keep (correct as labelled, or reinstated), drop "
        "(leave out of the export), flag (needs a look), unflag"
    )
    sample_ids: list[int] = Field(min_length=1, max_length=10_000)
    label: int | None = Field(default=None, ge=0)
    reason: str | None = Field(default=None, max_length=2000)
    reviewer: str | None = Field(
        default=None, min_length=1, max_length=200, description="who decides (default: the writer)"
    )


class UndoRequest(Strict):
    reviewer: str | None = Field(default=None, min_length=1, max_length=200)


class ReviewActionOut(BaseModel):
    id: int
    kind: str
    label: int | None
    reason: str | None
    author: str
    created_at: Timestamp
    samples: int
    run_id: int | None
    undoes: int | None = Field(description="for an undo: the action it undid")
    undone_by: int | None = Field(description="the undo that took this action back, if any")
    sample_ids: list[int]
    changed: list[int] = Field(description="the samples whose decided state it changed")


class UndoResult(BaseModel):
    undo: ReviewActionOut | None = Field(description="null: nothing was left to undo")
    message: str


class ExportCountsOut(BaseModel):
    policy: str
    total: int
    kept: int
    dropped: int
    dropped_by_reviewer: int
    dropped_evicted_unreviewed: int
    kept_by_reviewer: int
    kept_evicted_unreviewed: int
    relabeled: int
    flagged: int
