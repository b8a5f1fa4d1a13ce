"""the process that records a run

``runs`` gains ``writer`` (``host:pid`` of the live Recorder), so a second Recorder on a run
whose writer is alive is refused with the writer's name instead of interleaving batches.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 07:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A plain ADD COLUMN: SQLite supports it without rebuilding a table others refer to.
    op.add_column("runs", sa.Column("writer", sa.String(200), nullable=True))


def downgrade() -> None:
    op.drop_column("runs", "writer")
