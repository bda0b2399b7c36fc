"""Message fingerprints and source units (changes and deletions after delivery), erasures.

Adds nullable columns only: messages delivered before this revision keep NULL there and are
not compared (their fingerprint is unknown), so the upgrade is a quick ALTER, no rewrite.

Revision ID: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    op.add_column("messages", sa.Column("fp", sa.BigInteger))
    op.add_column("messages", sa.Column("unit", sa.BigInteger))
    op.create_index("ix_messages_unit", "messages", ["target", "unit"])
    op.create_table(
        "erasures",
        sa.Column("erasure_id", sa.String(40), primary_key=True),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("conversation_id", sa.String(128)),
        sa.Column("target", sa.String(512), nullable=False),
        sa.Column("erased_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("erased_by", sa.String(128)),
        sa.Column("memories_deleted", sa.Integer),
        sa.Column("messages_forgotten", sa.Integer),
        sa.Column("status", sa.String(16), nullable=False))
    op.create_index("ix_erasures_user", "erasures", ["user_id"])


def downgrade() -> None:
    op.drop_index("ix_erasures_user", "erasures")
    op.drop_table("erasures")
    op.drop_index("ix_messages_unit", "messages")
    op.drop_column("messages", "unit")
    op.drop_column("messages", "fp")
