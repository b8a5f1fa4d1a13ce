"""the review log: reviewer actions (relabel, keep, drop, flag, unflag, undo) and their samples

``review_actions`` holds one row per action (a bulk action is one row), ``review_entries`` the
samples it applied to, and ``samples.verdict`` the export verdict the log gives ("keep", "drop"
or NULL). Relabels and flags recorded before this revision become actions of the log, in their
order; a relabelled sample's verdict becomes "keep".

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 05:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.add_column("samples", sa.Column("verdict", sa.String(length=8), nullable=True))
    op.create_table(
        "review_actions",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("dataset_id", ID, nullable=False),
        sa.Column("run_id", ID, nullable=True),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("label", sa.Integer(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("author", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("samples", sa.Integer(), nullable=False),
        sa.Column("undoes", sa.BigInteger(), nullable=True),
        sa.Column("undone_by", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["dataset_id"], ["datasets.id"], name=op.f("fk_review_actions_dataset_id_datasets")
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_review_actions_run_id_runs")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_review_actions")),
    )
    op.create_index(
        "ix_review_actions_dataset_author", "review_actions", ["dataset_id", "author", "id"]
    )
    op.create_table(
        "review_entries",
        sa.Column("action_id", ID, nullable=False),
        sa.Column("sample_id", sa.Integer(), nullable=False),
        sa.Column("dataset_id", ID, nullable=False),
        sa.ForeignKeyConstraint(
            ["action_id"],
            ["review_actions.id"],
            name=op.f("fk_review_entries_action_id_review_actions"),
        ),
        sa.ForeignKeyConstraint(
            ["dataset_id"], ["datasets.id"], name=op.f("fk_review_entries_dataset_id_datasets")
        ),
        sa.PrimaryKeyConstraint("action_id", "sample_id", name=op.f("pk_review_entries")),
        sqlite_with_rowid=False,
    )
    op.create_index(
        "ix_review_entries_dataset_sample",
        "review_entries",
        ["dataset_id", "sample_id", "action_id"],
    )
    _import_history()


def _import_history() -> None:
    """Earlier relabels and flag changes become actions of the log, oldest first."""
    connection = op.get_bind()
    history = connection.execute(
        sa.text(
            "SELECT created_at, 0 AS seq, id, dataset_id, sample_id, 'relabel' AS kind, "
            "new_label, reason, author FROM label_changes "
            "UNION ALL SELECT created_at, 1, id, dataset_id, sample_id, "
            "CASE WHEN flagged THEN 'flag' ELSE 'unflag' END, NULL, reason, author FROM flags "
            "ORDER BY 1, 2, 3"
        )
    ).all()
    actions = sa.table(
        "review_actions",
        *(
            sa.column(c)
            for c in ("dataset_id", "kind", "label", "reason", "author", "created_at", "samples")
        ),
    )
    entries = sa.table("review_entries", *(sa.column(c) for c in ("action_id", "sample_id")))
    entries.append_column(sa.column("dataset_id"))
    for created_at, _, _, dataset_id, sample_id, kind, label, reason, author in history:
        action_id = connection.execute(
            sa.insert(actions)
            .values(
                dataset_id=dataset_id,
                kind=kind,
                label=label,
                reason=reason,
                author=author,
                created_at=created_at,
                samples=1,
            )
            .returning(sa.literal_column("id"))
        ).scalar_one()
        connection.execute(
            sa.insert(entries).values(
                action_id=action_id, sample_id=sample_id, dataset_id=dataset_id
            )
        )
    connection.execute(
        sa.text("UPDATE samples SET verdict = 'keep' WHERE current_label != original_label")
    )


def downgrade() -> None:
    op.drop_index("ix_review_entries_dataset_sample", table_name="review_entries")
    op.drop_table("review_entries")
    op.drop_index("ix_review_actions_dataset_author", table_name="review_actions")
    op.drop_table("review_actions")
    with op.batch_alter_table("samples") as batch:
        batch.drop_column("verdict")
