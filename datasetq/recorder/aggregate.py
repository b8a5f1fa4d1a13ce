"""Turns an epoch's loss reports into per-sample statistics, with array operations only."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

PERCENTILES = (5, 25, 50, 75, 95)


@dataclass
class EpochAggregate:
    """Per visited sample of one epoch: report count, first, last, mean and max loss."""

    ids: I64
    reports: I64
    losses: F64  # every report, grouped by sample id, in arrival order within a sample
    first: F64  # the coverage visit: measured before this epoch trained on the sample
    last: F64
    mean: F64
    max: F64
    loss_sum: F64


def aggregate_epoch(ids: I64, losses: F64) -> EpochAggregate:
    """Groups loss reports (in arrival order) by sample id."""
    if not len(ids):
        none, empty = np.empty(0, np.int64), np.empty(0)
        return EpochAggregate(none, none, empty, empty, empty, empty, empty, empty)
    order = np.argsort(ids, kind="stable")  # stable: arrival order kept within a sample
    sorted_ids, sorted_losses = ids[order], losses[order]
    starts = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1]])
    ends = np.r_[starts[1:], len(sorted_ids)]
    counts = ends - starts
    sums = np.add.reduceat(sorted_losses, starts)
    return EpochAggregate(
        ids=sorted_ids[starts],
        reports=counts.astype(np.int64),
        losses=sorted_losses,
        first=sorted_losses[starts],
        last=sorted_losses[ends - 1],
        mean=sums / counts,
        max=np.maximum.reduceat(sorted_losses, starts),
        loss_sum=sums,
    )


def epoch_summary(
    latest_loss: npt.NDArray[np.floating[Any]],
    visits: npt.NDArray[np.integer[Any]],
    epoch_visits: npt.NDArray[np.integer[Any]],
    aggregate: EpochAggregate,
    evicted_total: int,
    evicted_new: int,
) -> dict[str, Any]:
    """What the dashboard's charts need for one epoch, small enough for a JSON column."""
    known = latest_loss[~np.isnan(latest_loss)]
    reported = aggregate.mean
    return {
        "percentiles": list(PERCENTILES),
        "latest_loss": _percentiles(known),
        "epoch_loss": _percentiles(reported),
        "mean_epoch_loss": float(reported.mean()) if len(reported) else None,
        "samples_visited": int(np.count_nonzero(epoch_visits)),
        "visit_histogram": np.bincount(np.asarray(visits, dtype=np.int64)).tolist(),
        "epoch_visit_histogram": np.bincount(np.asarray(epoch_visits, dtype=np.int64)).tolist(),
        "evicted_total": evicted_total,
        "evicted_new": evicted_new,
    }


def _percentiles(values: npt.NDArray[Any]) -> list[float] | None:
    if not len(values):
        return None
    return [float(v) for v in np.percentile(values, PERCENTILES)]
