"""per-epoch statistics as arrays per block of 4096 ids; partial index on evictions

``epoch_samples`` (a row per sample and epoch) and ``visit_blocks`` (the per-visit losses)
become one ``epoch_blocks`` table: a row per epoch and block of 4096 sample ids holding each
id's report count and the per-visit losses, as little-endian arrays (a sample's last, mean and
max loss of an epoch follow from its losses). Existing data is converted, one epoch of one run
at a time.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 00:30:00
"""

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import sqlalchemy as sa

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BLOCK = 4096  # sample ids per block: fixed by this revision, whatever the code says later
NOT_NULL = "evicted_epoch IS NOT NULL"
RUN_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

epoch_blocks = sa.table(
    "epoch_blocks", *(sa.column(c) for c in ("run_id", "epoch", "block", "visits", "losses"))
)
epoch_samples = sa.table(
    "epoch_samples",
    *(
        sa.column(name)
        for name in ("run_id", "epoch", "sample_id", "visits", "first_visit", "last_loss")
    ),
    sa.column("mean_loss"),
    sa.column("max_loss"),
)
visit_blocks = sa.table(
    "visit_blocks", sa.column("run_id"), sa.column("epoch"), sa.column("block"), sa.column("losses")
)


def _run_epochs(connection: Any, table: Any) -> list[tuple[int, int]]:
    return [
        (int(r), int(e))
        for r, e in connection.execute(
            sa.select(table.c.run_id, table.c.epoch).distinct().order_by("run_id", "epoch")
        )
    ]


def upgrade() -> None:
    op.create_table(
        "epoch_blocks",
        sa.Column("run_id", RUN_ID, nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("block", sa.Integer(), nullable=False),
        sa.Column("visits", sa.LargeBinary(), nullable=False),
        sa.Column("losses", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_epoch_blocks_run_id_runs")),
        sa.PrimaryKeyConstraint("run_id", "epoch", "block", name=op.f("pk_epoch_blocks")),
        sqlite_with_rowid=False,
    )
    connection = op.get_bind()
    for run_id, epoch in _run_epochs(connection, epoch_samples):
        rows = list(_blocks_of_epoch(connection, run_id, epoch))
        if rows:
            connection.execute(sa.insert(epoch_blocks), rows)
    op.drop_table("epoch_samples")
    op.drop_table("visit_blocks")
    op.drop_index("ix_sample_state_run_evicted_epoch", table_name="sample_state")
    op.create_index(
        "ix_sample_state_run_evicted_epoch",
        "sample_state",
        ["run_id", "evicted_epoch"],
        sqlite_where=sa.text(NOT_NULL),
        postgresql_where=sa.text(NOT_NULL),
    )


def _blocks_of_epoch(connection: Any, run_id: int, epoch: int) -> Iterator[dict[str, Any]]:
    c = epoch_samples.c
    rows = connection.execute(
        sa.select(c.sample_id, c.visits)
        .where(c.run_id == run_id, c.epoch == epoch)
        .order_by(c.sample_id)
    ).all()
    losses = {
        int(block): bytes(blob)
        for block, blob in connection.execute(
            sa.select(visit_blocks.c.block, visit_blocks.c.losses).where(
                visit_blocks.c.run_id == run_id, visit_blocks.c.epoch == epoch
            )
        )
    }
    if not rows:
        return
    ids, visits = np.array(rows, dtype=np.int64).T
    blocks = ids // BLOCK
    # ids are sorted: each block's samples are one run, found in one pass (not a scan per block)
    starts = np.flatnonzero(np.r_[True, blocks[1:] != blocks[:-1]])
    for start, end in zip(starts.tolist(), [*starts[1:].tolist(), len(ids)], strict=True):
        block = int(blocks[start])
        positions = ids[start:end] - block * BLOCK
        counts = np.zeros(int(positions[-1]) + 1, dtype="<i4")
        counts[positions] = visits[start:end]
        # Same layout as before: every report, grouped by id, in arrival order. Both tables
        # were always written by one transaction, so the lengths agree.
        blob = losses.get(block, b"")
        if len(blob) != 4 * int(counts.sum()):
            raise RuntimeError(
                f"run {run_id} epoch {epoch} block {block}: {len(blob) // 4} per-visit losses "
                f"for {int(counts.sum())} reports in epoch_samples: the two tables disagree"
            )
        yield {
            "run_id": run_id,
            "epoch": epoch,
            "block": block,
            "visits": counts.tobytes(),
            "losses": blob,
        }


def downgrade() -> None:
    op.drop_index("ix_sample_state_run_evicted_epoch", table_name="sample_state")
    op.create_index(
        "ix_sample_state_run_evicted_epoch", "sample_state", ["run_id", "evicted_epoch"]
    )
    op.create_table(
        "epoch_samples",
        sa.Column("run_id", RUN_ID, nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("sample_id", sa.Integer(), nullable=False),
        sa.Column("visits", sa.Integer(), nullable=False),
        sa.Column("first_visit", sa.Integer(), nullable=False),
        sa.Column("last_loss", sa.Float(), nullable=False),
        sa.Column("mean_loss", sa.Float(), nullable=True),
        sa.Column("max_loss", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_epoch_samples_run_id_runs")),
        sa.PrimaryKeyConstraint("run_id", "epoch", "sample_id", name=op.f("pk_epoch_samples")),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "visit_blocks",
        sa.Column("run_id", RUN_ID, nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("block", sa.Integer(), nullable=False),
        sa.Column("losses", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_visit_blocks_run_id_runs")),
        sa.PrimaryKeyConstraint("run_id", "epoch", "block", name=op.f("pk_visit_blocks")),
        sqlite_with_rowid=False,
    )
    connection = op.get_bind()
    c = epoch_blocks.c
    for run_id, epoch in _run_epochs(connection, epoch_blocks):
        sample_rows, loss_rows = [], []
        for block, counts_blob, losses in connection.execute(
            sa.select(c.block, c.visits, c.losses).where(c.run_id == run_id, c.epoch == epoch)
        ):
            counts = np.frombuffer(counts_blob, dtype="<i4")
            reports = np.frombuffer(losses, dtype="<f4").astype(float)
            positions = np.flatnonzero(counts)
            if not len(positions):
                continue
            sizes = counts[positions]
            first = np.r_[0, np.cumsum(sizes)[:-1]]
            repeated = sizes > 1
            # Per-sample statistics in array operations; NULL mean and max when visited once.
            last = reports[first + sizes - 1]
            mean = np.add.reduceat(reports, first) / sizes
            maximum = np.maximum.reduceat(reports, first)
            sample_rows.extend(
                {
                    "run_id": run_id,
                    "epoch": epoch,
                    "sample_id": sample_id,
                    "visits": size,
                    "first_visit": offset,
                    "last_loss": last_loss,
                    "mean_loss": mean_loss if several else None,
                    "max_loss": max_loss if several else None,
                }
                for sample_id, size, offset, last_loss, mean_loss, max_loss, several in zip(
                    (int(block) * BLOCK + positions).tolist(),
                    sizes.tolist(),
                    first.tolist(),
                    last.tolist(),
                    mean.tolist(),
                    maximum.tolist(),
                    repeated.tolist(),
                    strict=True,
                )
            )
            loss_rows.append(
                {"run_id": run_id, "epoch": epoch, "block": int(block), "losses": bytes(losses)}
            )
        if sample_rows:
            connection.execute(sa.insert(epoch_samples), sample_rows)
        if loss_rows:
            connection.execute(sa.insert(visit_blocks), loss_rows)
    op.drop_table("epoch_blocks")
