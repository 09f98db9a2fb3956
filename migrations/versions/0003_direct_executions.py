"""Direct executions: a run is either an agent turn or code the user ran themselves.

`kind` says which task a (re-)sent message goes to; `code` holds the user's snippet so that
the reaper can send a lost execution again from the database alone.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21 14:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(
            sa.Column(
                "kind",
                sa.Enum(
                    "turn",
                    "execution",
                    name="run_kind",
                    native_enum=False,
                    length=16,
                    create_constraint=True,
                ),
                server_default="turn",
                nullable=False,
            )
        )
        batch.add_column(sa.Column("code", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_constraint("run_kind", type_="check")  # named ck_runs_run_kind
        batch.drop_column("code")
        batch.drop_column("kind")
