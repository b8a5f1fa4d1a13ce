"""The cleaned manifest of a run: which samples to keep, with which label, and why.

A reviewer's decision always wins over the sampler: a dropped sample is left out, a kept or
relabelled one stays (with its new label), evicted or not. What happens to samples the sampler
evicted and nobody reviewed is the export's ``evicted`` policy:

- ``"drop"`` (the default): left out, marked as the sampler's suggestion;
- ``"keep"``: kept as labelled;
- ``"mark"``: kept, with ``needs_review`` set, for a later pass.

Flags mark samples that need a look; they change nothing in the export.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from sqlalchemy import ColumnElement, and_, case, func, select
from sqlalchemy.orm import Session

from .models import SampleRecord, SampleStateRecord
from .runs import RunInfo

__all__ = [
    "EVICTED_POLICIES",
    "EvictedPolicy",
    "ExportCounts",
    "manifest_counts",
    "manifest_header",
    "manifest_rows",
]

EvictedPolicy = Literal["drop", "keep", "mark"]
EVICTED_POLICIES: tuple[str, ...] = ("drop", "keep", "mark")
MANIFEST_VERSION = 2


@dataclass(frozen=True)
class ExportCounts:
    """What an export with one policy holds: every sample is in exactly one group."""

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


def _decide(verdict: str | None, evicted: int | None, policy: str) -> tuple[bool, str, bool]:
    """``(keep, reason, needs_review)`` of one sample under ``policy``."""
    if verdict == "drop":
        return False, "dropped by a reviewer", False
    if verdict == "keep":
        return True, "kept by a reviewer", False
    if evicted is not None:
        suggestion = f"evicted by the sampler in epoch {evicted}, not reviewed"
        if policy == "drop":
            return False, suggestion, False
        return True, suggestion, policy == "mark"
    return True, "", False


def _check_policy(policy: str) -> None:
    if policy not in EVICTED_POLICIES:
        raise ValueError(f"evicted should be one of {EVICTED_POLICIES}, but got {policy!r}")


def _state_of(run: RunInfo) -> ColumnElement[bool]:
    """Joins a sample to its state in ``run`` (none for a sample the run never reported)."""
    return and_(
        SampleStateRecord.run_id == run.id,
        SampleStateRecord.sample_id == SampleRecord.sample_id,
    )


def labels_fingerprint(labels: Any) -> str:
    """SHA-256 of the labels in sample order (int64 little-endian; -1 for none)."""
    if isinstance(labels, np.ndarray):
        array = labels.astype("<i8")
    else:  # from the store: NULL for a sample without a label
        array = np.asarray([-1 if v is None else v for v in labels], dtype="<i8")
    return hashlib.sha256(array.tobytes()).hexdigest()


def manifest_header(session: Session, run: RunInfo, policy: str) -> dict[str, Any]:
    """What identifies the dataset a manifest belongs to (checked when it is loaded)."""
    dataset = run.dataset
    original = session.execute(
        select(SampleRecord.original_label)
        .where(SampleRecord.dataset_id == dataset.id)
        .order_by(SampleRecord.sample_id)
    ).scalars()
    return {
        "format": "datasetq-manifest",
        "version": MANIFEST_VERSION,
        "dataset": dataset.name,
        "num_samples": dataset.num_samples,
        "labels_sha256": labels_fingerprint(list(original)),
        "source_kind": dataset.render.kind,
        "run": run.name,
        "evicted": policy,
    }


def manifest_rows(
    session: Session, run: RunInfo, policy: str, chunk: int = 10_000
) -> Iterator[dict[str, Any]]:
    """Every sample of the run's dataset in id order, read ``chunk`` rows at a time."""
    dataset = run.dataset
    _check_policy(policy)
    names = dataset.class_names
    after = -1
    while True:
        rows = session.execute(
            select(
                SampleRecord.sample_id,
                SampleRecord.source,
                SampleRecord.original_label,
                SampleRecord.current_label,
                SampleRecord.verdict,
                SampleRecord.flagged,
                SampleStateRecord.evicted_epoch,
            )
            .outerjoin(SampleStateRecord, _state_of(run))
            .where(SampleRecord.dataset_id == dataset.id, SampleRecord.sample_id > after)
            .order_by(SampleRecord.sample_id)
            .limit(chunk)
        ).all()
        if not rows:
            return
        for sample_id, source, original, label, verdict, flagged, evicted in rows:
            keep, reason, needs_review = _decide(verdict, evicted, policy)
            yield {
                "sample_id": sample_id,
                "source": source,
                "original_label": original,
                "label": label,
                "label_name": names[label]
                if label is not None and 0 <= label < len(names)
                else None,
                "keep": keep,
                "reason": reason or None,
                "reviewed": verdict is not None,
                "needs_review": needs_review,
                "flagged": bool(flagged),
                "evicted_epoch": evicted,
            }
        after = rows[-1][0]


def manifest_counts(session: Session, run: RunInfo, policy: str) -> ExportCounts:
    """The counts :func:`manifest_rows` gives for ``policy``, from one grouped query."""
    dataset = run.dataset
    _check_policy(policy)
    evicted = SampleStateRecord.evicted_epoch.is_not(None)
    groups = session.execute(
        select(
            SampleRecord.verdict,
            evicted,
            func.count(),
            func.sum(case((SampleRecord.current_label != SampleRecord.original_label, 1), else_=0)),
            func.sum(case((SampleRecord.flagged, 1), else_=0)),
        )
        .outerjoin(SampleStateRecord, _state_of(run))
        .where(SampleRecord.dataset_id == dataset.id)
        .group_by(SampleRecord.verdict, evicted)
    ).all()
    tally = {
        "total": 0,
        "kept": 0,
        "dropped": 0,
        "dropped_by_reviewer": 0,
        "dropped_evicted_unreviewed": 0,
        "kept_by_reviewer": 0,
        "kept_evicted_unreviewed": 0,
        "relabeled": 0,
        "flagged": 0,
    }
    for verdict, evicted_group, count, relabeled, flagged in groups:
        was_evicted = bool(evicted_group)
        keep, _, _ = _decide(verdict, 0 if was_evicted else None, policy)
        tally["total"] += count
        tally["kept" if keep else "dropped"] += count
        tally["relabeled"] += int(relabeled or 0)
        tally["flagged"] += int(flagged or 0)
        if verdict == "drop":
            tally["dropped_by_reviewer"] += count
        elif verdict == "keep":
            tally["kept_by_reviewer"] += count
        elif was_evicted:
            tally["kept_evicted_unreviewed" if keep else "dropped_evicted_unreviewed"] += count
    return ExportCounts(policy=policy, **tally)
