"""Runs: the list, and one run's summary for the overview charts."""

from __future__ import annotations

from datasetq.store import runs, samples

from .. import schemas
from ..deps import RunId, SessionDep, api_router

router = api_router("/runs", "runs")


@router.get("", response_model=list[schemas.RunPublic])
def list_runs(session: SessionDep) -> list[schemas.RunPublic]:
    return [schemas.RunPublic(**schemas.RunPublic.fields_of(r)) for r in runs.list_runs(session)]


@router.get("/{run_id}", response_model=schemas.RunSummary, responses=schemas.NOT_FOUND)
def get_run(run_id: RunId, session: SessionDep) -> schemas.RunSummary:
    run = runs.require_run(session, run_id)
    points: list[schemas.EpochPoint] = []
    histogram: list[int] = []
    percentiles: list[int] = [5, 25, 50, 75, 95]
    for record in runs.run_epochs(session, run.id):
        summary = record.summary
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
    flagged, relabeled = runs.review_counts(session, run.dataset.id)
    truth = samples.ground_truth(session, run)
    return schemas.RunSummary(
        **schemas.RunPublic.fields_of(run),
        config={k: v for k, v in run.config.items() if k != "flipped"},
        class_names=run.dataset.class_names,
        evicted=points[-1].evicted_total if points else 0,
        flagged=flagged,
        relabeled=relabeled,
        percentiles=percentiles,
        epochs_detail=points,
        visit_histogram=histogram,
        ground_truth=None
        if truth is None
        else schemas.GroundTruth.model_validate(truth, from_attributes=True),
    )


@router.get(
    "/{run_id}/confusion", response_model=schemas.ConfusionMatrix, responses=schemas.NOT_FOUND
)
def get_confusion(run_id: RunId, session: SessionDep) -> schemas.ConfusionMatrix:
    """Current label x latest recorded prediction; all zeros for a loop that reports no
    predictions. A cell's samples are the list route's ``label=&pred=``."""
    run = runs.require_run(session, run_id)
    cells = samples.confusion_counts(session, run)
    return schemas.ConfusionMatrix(
        class_names=run.dataset.class_names,
        cells=[
            schemas.ConfusionCell(label=a, pred=b, count=n) for (a, b), n in sorted(cells.items())
        ],
        samples=sum(cells.values()),
    )
