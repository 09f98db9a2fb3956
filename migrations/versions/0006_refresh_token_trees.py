"""Refresh token trees: a family forked from another keeps its root.

A browser stays signed in with one refresh token in an HttpOnly cookie; each tab it opens
forks its own family from that token (`POST /api/auth/fork`), so that tabs never spend one
another's tokens. `root_family_id` links a forked family to the family it came from: reuse
of any spent token, or signing out, revokes the whole tree.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 10:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("refresh_tokens", sa.Column("root_family_id", sa.Uuid(), nullable=True))
    op.create_index(
        op.f("ix_refresh_tokens_root_family_id"),
        "refresh_tokens",
        ["root_family_id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_refresh_tokens_root_family_id"), table_name="refresh_tokens")
    op.drop_column("refresh_tokens", "root_family_id")
