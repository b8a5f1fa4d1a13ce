"""The store's schema as SQLAlchemy 2.0 typed models. Alembic migrations are the source of truth;
``tests/datasetq/store/test_store_schema.py`` checks that these models and the migrations agree.

Sizes matter at ImageNet scale (1.28M samples x tens of epochs), so the per-sample tables are
``WITHOUT ROWID`` on SQLite with their natural primary key, and per-epoch statistics are stored
as arrays per block of 4096 sample ids (:class:`EpochBlockRecord`), not as a row per sample.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
WITHOUT_ROWID = {"sqlite_with_rowid": False}
VISIT_BLOCK = 4096  # sample ids per EpochBlockRecord
# SQLite's INTEGER PRIMARY KEY is the rowid; BigInteger keeps ids 64-bit on PostgreSQL.
Id = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class DatasetRecord(Base):
    """A dataset a run trains on: its classes and how to render a sample."""

    __tablename__ = "datasets"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    num_samples: Mapped[int] = mapped_column(Integer)
    class_names: Mapped[list[str]] = mapped_column(JSON)
    render: Mapped[dict[str, Any]] = mapped_column(JSON)
    fingerprint: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class SampleRecord(Base):
    """One sample of a dataset: labels, review state and where it comes from."""

    __tablename__ = "samples"
    __table_args__ = (
        # Partial indexes: counting and listing flagged or relabelled samples reads only those.
        Index(
            "ix_samples_flagged",
            "dataset_id",
            "sample_id",
            sqlite_where=text("flagged"),
            postgresql_where=text("flagged"),
        ),
        Index(
            "ix_samples_relabeled",
            "dataset_id",
            "sample_id",
            sqlite_where=text("current_label != original_label"),
            postgresql_where=text("current_label != original_label"),
        ),
        WITHOUT_ROWID,
    )

    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"), primary_key=True)
    sample_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    original_label: Mapped[int | None] = mapped_column(Integer)
    current_label: Mapped[int | None] = mapped_column(Integer)
    source: Mapped[str | None] = mapped_column(Text)
    flagged: Mapped[bool] = mapped_column(Boolean, default=False)
    flag_reason: Mapped[str | None] = mapped_column(Text)
    note: Mapped[str | None] = mapped_column(Text)
    # A reviewer's verdict for the export: "keep" (a relabel or an explicit keep) or "drop";
    # NULL: nobody decided. Follows the review log (ReviewActionRecord), undos included.
    verdict: Mapped[str | None] = mapped_column(String(8))


class RunRecord(Base):
    """A training run recorded by a :class:`datasetq.Recorder`."""

    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"), index=True)
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(20))  # running | finished | failed
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    heartbeat_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    epochs: Mapped[int] = mapped_column(Integer, default=0)  # epochs fully recorded
    writer: Mapped[str | None] = mapped_column(String(200))  # host:pid of the live Recorder


class RunEpochRecord(Base):
    """Per-epoch summary of a run, shaped for the dashboard's charts."""

    __tablename__ = "run_epochs"

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), primary_key=True)
    epoch: Mapped[int] = mapped_column(Integer, primary_key=True)
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    draws: Mapped[int] = mapped_column(Integer)
    evicted_total: Mapped[int] = mapped_column(Integer)
    evicted_new: Mapped[int] = mapped_column(Integer)
    # {"percentiles": [...], "loss": [...], "visit_histogram": [...], ...}
    summary: Mapped[dict[str, Any]] = mapped_column(JSON)


class SampleStateRecord(Base):
    """Latest state of one sample in one run: what the dashboard ranks by."""

    __tablename__ = "sample_state"
    __table_args__ = (
        # One index per sort key of the dashboard: keyset pages read 100 rows, not the run.
        Index("ix_sample_state_run_last_loss", "run_id", "last_loss"),
        Index("ix_sample_state_run_mean_loss", "run_id", "mean_loss"),
        Index("ix_sample_state_run_max_loss", "run_id", "max_loss"),
        Index("ix_sample_state_run_visits", "run_id", "visits"),
        Index("ix_sample_state_run_score", "run_id", "score"),
        # Partial: most samples are never evicted, and their state writes skip this index.
        Index(
            "ix_sample_state_run_evicted_epoch",
            "run_id",
            "evicted_epoch",
            sqlite_where=text("evicted_epoch IS NOT NULL"),
            postgresql_where=text("evicted_epoch IS NOT NULL"),
        ),
        WITHOUT_ROWID,
    )

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), primary_key=True)
    sample_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    visits: Mapped[int] = mapped_column(Integer, default=0)  # draws
    loss_reports: Mapped[int] = mapped_column(Integer, default=0)  # losses received
    last_loss: Mapped[float | None] = mapped_column(Float)
    mean_loss: Mapped[float | None] = mapped_column(Float)  # over every reported loss
    max_loss: Mapped[float | None] = mapped_column(Float)
    last_epoch: Mapped[int | None] = mapped_column(Integer)
    evicted_epoch: Mapped[int | None] = mapped_column(Integer)
    last_pred: Mapped[int | None] = mapped_column(Integer)
    last_margin: Mapped[float | None] = mapped_column(Float)
    # The suspicion score: mean over epochs of each epoch's first reported loss (a loss measured
    # before that epoch trained on the sample, once per epoch however often it was drawn).
    score: Mapped[float | None] = mapped_column(Float)
    coverage_epochs: Mapped[int | None] = mapped_column(Integer)
    # The sampler's evidence when it evicted the sample: its score then, and the epoch its run
    # of wrong coverage visits began (NULL: evicted by max_visits or by a person).
    evidence_score: Mapped[float | None] = mapped_column(Float)
    wrong_since: Mapped[int | None] = mapped_column(Integer)


class EpochBlockRecord(Base):
    """One epoch of a run for a block of 4096 sample ids: the samples' loss trajectory.

    Two little-endian arrays, so an epoch is a few rows per 4096 samples however often each
    was visited, and writes are vectorised (no row per sample or per visit):

    - ``visits``: int32 per id of the block (``id - block * 4096``), loss reports this epoch;
      trailing ids without a report may be left out;
    - ``losses``: float32 per report, grouped by id, in arrival order within a sample.

    A sample's reports start after the counts of the ids before it; its last, mean and max
    loss of the epoch follow from them (see :func:`datasetq.store.queries.sample_trajectory`).
    """

    __tablename__ = "epoch_blocks"
    __table_args__ = (WITHOUT_ROWID,)

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), primary_key=True)
    epoch: Mapped[int] = mapped_column(Integer, primary_key=True)
    block: Mapped[int] = mapped_column(Integer, primary_key=True)
    visits: Mapped[bytes] = mapped_column(LargeBinary)
    losses: Mapped[bytes] = mapped_column(LargeBinary)


class VisitRecord(Base):
    """The raw log of every reported loss, in arrival order (when ``record_visits`` is on).

    Append-only and without secondary index, so it ingests at close to SQLite's raw speed; the
    dashboard reads per-visit losses from :class:`EpochBlockRecord` instead.
    """

    __tablename__ = "visits"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"))
    epoch: Mapped[int] = mapped_column(Integer)
    sample_id: Mapped[int] = mapped_column(Integer)
    loss: Mapped[float] = mapped_column(Float)


class EvictionRecord(Base):
    """An eviction (or reinstatement) event."""

    __tablename__ = "evictions"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), index=True)
    sample_id: Mapped[int] = mapped_column(Integer)
    epoch: Mapped[int] = mapped_column(Integer)
    reinstated: Mapped[bool] = mapped_column(Boolean, default=False)


class IngestBatchRecord(Base):
    """Idempotency keys: a batch whose key is here is stored, and is skipped if sent again."""

    __tablename__ = "ingest_batches"

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    rows: Mapped[int] = mapped_column(Integer)
    stored_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class LabelChangeRecord(Base):
    """The history of a sample's label: when, who, old -> new, why."""

    __tablename__ = "label_changes"
    __table_args__ = (Index("ix_label_changes_dataset_sample", "dataset_id", "sample_id"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"))
    sample_id: Mapped[int] = mapped_column(Integer)
    old_label: Mapped[int | None] = mapped_column(Integer)
    new_label: Mapped[int | None] = mapped_column(Integer)
    reason: Mapped[str | None] = mapped_column(Text)
    author: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class FlagRecord(Base):
    """The history of a sample's flag."""

    __tablename__ = "flags"
    __table_args__ = (Index("ix_flags_dataset_sample", "dataset_id", "sample_id"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"))
    sample_id: Mapped[int] = mapped_column(Integer)
    flagged: Mapped[bool] = mapped_column(Boolean)
    reason: Mapped[str | None] = mapped_column(Text)
    author: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class DecisionRecord(Base):
    """A decision for running jobs (evict or reinstate a sample), picked up between epochs."""

    __tablename__ = "decisions"
    __table_args__ = (Index("ix_decisions_dataset_id_id", "dataset_id", "id"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"))
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"))  # None: every run
    sample_id: Mapped[int] = mapped_column(Integer)
    action: Mapped[str] = mapped_column(String(20))  # evict | reinstate
    author: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ReviewActionRecord(Base):
    """One reviewer action (on one sample or many): the append-only review log.

    ``kind`` is relabel, keep, drop, flag, unflag or undo. An undo names the action it undoes
    (``undoes``); the undone action gets ``undone_by``. Nothing is ever deleted.
    """

    __tablename__ = "review_actions"
    __table_args__ = (Index("ix_review_actions_dataset_author", "dataset_id", "author", "id"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"))
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"))  # where it was made
    kind: Mapped[str] = mapped_column(String(10))
    label: Mapped[int | None] = mapped_column(Integer)
    reason: Mapped[str | None] = mapped_column(Text)
    author: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    samples: Mapped[int] = mapped_column(Integer)
    undoes: Mapped[int | None] = mapped_column(BigInteger)
    undone_by: Mapped[int | None] = mapped_column(BigInteger)


class ReviewEntryRecord(Base):
    """A sample an action applied to."""

    __tablename__ = "review_entries"
    __table_args__ = (
        Index("ix_review_entries_dataset_sample", "dataset_id", "sample_id", "action_id"),
        WITHOUT_ROWID,
    )

    action_id: Mapped[int] = mapped_column(ForeignKey("review_actions.id"), primary_key=True)
    sample_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"))
