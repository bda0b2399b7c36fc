"""Rewrites: conversations whose delivered copy a source policy replaces (on_change: replace,
on_delete: delete), with the step each has reached, so a killed run's rewrite is finished by
the next one.

Revision ID: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    op.create_table(
        "rewrites",
        sa.Column("target", sa.String(512), primary_key=True),
        sa.Column("user_id", sa.String(128), primary_key=True),
        sa.Column("conversation_id", sa.String(128), primary_key=True),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("reason", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False))
    op.create_index("ix_rewrites_source", "rewrites", ["target", "source"])


def downgrade() -> None:
    op.drop_index("ix_rewrites_source", "rewrites")
    op.drop_table("rewrites")
