"""Agent turns: re-queue bookkeeping on runs, the per-dataset sample-sharing switch, and
(on PostgreSQL) LangGraph's checkpoint tables.

The checkpoint tables are LangGraph's (`langgraph-checkpoint-postgres`); Alembic creates
them, with the library's own migration statements, so that `alembic upgrade head` stays
the only way the schema changes. A LangGraph upgrade that adds checkpoint migrations needs
a new Alembic revision (a test compares the two). Embedded mode (SQLite) keeps checkpoints
in their own file, created by the SQLite saver.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHECKPOINT_TABLES = (
    "checkpoint_writes",
    "checkpoint_blobs",
    "checkpoints",
    "checkpoint_migrations",
)


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("enqueued_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("requeues", sa.Integer(), server_default="0", nullable=False))
    with op.batch_alter_table("datasets") as batch:
        batch.add_column(
            sa.Column("share_samples", sa.Boolean(), server_default=sa.true(), nullable=False)
        )
    if op.get_bind().dialect.name == "postgresql":
        from langgraph.checkpoint.postgres.base import BasePostgresSaver

        statements = BasePostgresSaver.MIGRATIONS
        for version, statement in enumerate(statements):
            # new, empty tables: a plain index build is instant and runs in the transaction
            op.execute(statement.replace("CONCURRENTLY ", ""))
            op.execute(
                sa.text("INSERT INTO checkpoint_migrations (v) VALUES (:v)").bindparams(v=version)
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in CHECKPOINT_TABLES:
            op.execute(f"DROP TABLE IF EXISTS {table}")
    with op.batch_alter_table("datasets") as batch:
        batch.drop_column("share_samples")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("requeues")
        batch.drop_column("enqueued_at")
