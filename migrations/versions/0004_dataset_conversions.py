"""Dataset conversions on the worker's `datasets` queue: what a worker needs to convert a
dataset from the database alone, and the bookkeeping the reaper needs to re-send or fail
one that nobody finished.

`upload_id` names the staging folder (DATA_DIR/uploads/<upload_id>) every table of an
upload shares; `source` is the inspected table for the converter; `enqueued_at`,
`heartbeat_at`, `attempts` and `requeues` play the same part as on `runs`. Datasets that
were `processing` before this revision have no `upload_id`: the reaper fails them with a
message that asks for the file again (the API that was converting them is gone).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21 16:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("datasets") as batch:
        batch.add_column(sa.Column("upload_id", sa.Uuid(), nullable=True))
        batch.add_column(
            sa.Column(
                "source",
                sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
                nullable=True,
            )
        )
        batch.add_column(sa.Column("enqueued_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("attempts", sa.Integer(), server_default="0", nullable=False))
        batch.add_column(sa.Column("requeues", sa.Integer(), server_default="0", nullable=False))
    op.create_index("ix_datasets_upload_id", "datasets", ["upload_id"], unique=False)
    op.create_index(
        "ix_datasets_status_heartbeat_at", "datasets", ["status", "heartbeat_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_datasets_status_heartbeat_at", table_name="datasets")
    op.drop_index("ix_datasets_upload_id", table_name="datasets")
    with op.batch_alter_table("datasets") as batch:
        batch.drop_column("requeues")
        batch.drop_column("attempts")
        batch.drop_column("heartbeat_at")
        batch.drop_column("enqueued_at")
        batch.drop_column("source")
        batch.drop_column("upload_id")
