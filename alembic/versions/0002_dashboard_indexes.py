"""indexes for the dashboard's sort keys and for flagged / relabelled samples

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 17:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SORT_KEYS = ("mean_loss", "max_loss", "visits", "evicted_epoch")
PARTIAL = {
    "ix_samples_flagged": "flagged",
    "ix_samples_relabeled": "current_label != original_label",
}


def upgrade() -> None:
    for key in SORT_KEYS:
        op.create_index(f"ix_sample_state_run_{key}", "sample_state", ["run_id", key])
    for name, condition in PARTIAL.items():
        op.create_index(
            name,
            "samples",
            ["dataset_id", "sample_id"],
            sqlite_where=sa.text(condition),
            postgresql_where=sa.text(condition),
        )


def downgrade() -> None:
    for name in PARTIAL:
        op.drop_index(name, table_name="samples")
    for key in SORT_KEYS:
        op.drop_index(f"ix_sample_state_run_{key}", table_name="sample_state")
