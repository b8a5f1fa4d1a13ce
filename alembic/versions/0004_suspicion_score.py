"""per-sample suspicion score over coverage visits, and the evidence behind an eviction

``sample_state`` gains ``score`` (the mean over epochs of each epoch's first reported loss, the
dashboard's default ranking), ``coverage_epochs`` (how many epochs it averages),
``evidence_score`` and ``wrong_since`` (the sampler's evidence when it evicted the sample), and
an index on ``(run_id, score)``. The score of samples recorded before this revision is computed
from their stored per-epoch losses, one epoch of one run at a time.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 04:00:00
"""

from collections.abc import Sequence

import numpy as np
import sqlalchemy as sa

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BLOCK = 4096  # sample ids per epoch block, as revision 0003 fixed it
COLUMNS = (
    ("score", sa.Float()),
    ("coverage_epochs", sa.Integer()),
    ("evidence_score", sa.Float()),
    ("wrong_since", sa.Integer()),
)

epoch_blocks = sa.table(
    "epoch_blocks", *(sa.column(c) for c in ("run_id", "epoch", "block", "visits", "losses"))
)
sample_state = sa.table(
    "sample_state", *(sa.column(c) for c in ("run_id", "sample_id", "score", "coverage_epochs"))
)


def upgrade() -> None:
    for name, kind in COLUMNS:
        op.add_column("sample_state", sa.Column(name, kind, nullable=True))
    op.create_index("ix_sample_state_run_score", "sample_state", ["run_id", "score"])
    connection = op.get_bind()
    runs = connection.execute(sa.select(epoch_blocks.c.run_id).distinct()).scalars().all()
    for run_id in runs:
        _score_run(connection, int(run_id))


def _score_run(connection: sa.Connection, run_id: int) -> None:
    """Sums each sample's first loss of every epoch from the run's blocks, then writes the mean."""
    sums: dict[int, np.ndarray] = {}
    epochs: dict[int, np.ndarray] = {}
    rows = connection.execute(
        sa.select(epoch_blocks.c.block, epoch_blocks.c.visits, epoch_blocks.c.losses).where(
            epoch_blocks.c.run_id == run_id
        )
    )
    for block, visits_blob, losses_blob in rows:
        counts = np.frombuffer(visits_blob, dtype="<i4").astype(np.int64)
        losses = np.frombuffer(losses_blob, dtype="<f4").astype(np.float64)
        visited = np.flatnonzero(counts > 0)
        first = np.r_[0, np.cumsum(counts)][visited]
        block_sums = sums.setdefault(int(block), np.zeros(BLOCK))
        block_epochs = epochs.setdefault(int(block), np.zeros(BLOCK, dtype=np.int64))
        block_sums[visited] += losses[first]
        block_epochs[visited] += 1
    for block, block_epochs in epochs.items():
        positions = np.flatnonzero(block_epochs)
        if not len(positions):
            continue
        means = sums[block][positions] / block_epochs[positions]
        connection.execute(
            sa.update(sample_state)
            .where(
                sample_state.c.run_id == run_id,
                sample_state.c.sample_id == sa.bindparam("id"),
            )
            .values(score=sa.bindparam("s"), coverage_epochs=sa.bindparam("n")),
            [
                {"id": int(i), "s": float(s), "n": int(n)}
                for i, s, n in zip(
                    (positions + block * BLOCK).tolist(),
                    means.tolist(),
                    block_epochs[positions].tolist(),
                    strict=True,
                )
            ],
        )


def downgrade() -> None:
    op.drop_index("ix_sample_state_run_score", table_name="sample_state")
    with op.batch_alter_table("sample_state") as batch:
        for name, _ in reversed(COLUMNS):
            batch.drop_column(name)
