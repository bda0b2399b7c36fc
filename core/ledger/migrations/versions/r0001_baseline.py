"""Baseline: the ledger as memos-etl wrote it before versioned migrations (up to bd74719).

Ledgers made by that code have these tables and no version table; they are stamped at this
revision when first opened and upgraded from here.

Revision ID: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None


def upgrade() -> None:
    tz = sa.DateTime(timezone=True)
    op.create_table(
        "runs",
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("flow", sa.String(32), nullable=False),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("target", sa.String(512), nullable=False),
        sa.Column("started_at", tz, nullable=False),
        sa.Column("finished_at", tz),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("host", sa.String(255)),
        sa.Column("pid", sa.Integer),
        sa.Column("report", sa.Text))
    op.create_table(
        "batches",
        sa.Column("batch_key", sa.String(64), primary_key=True),
        sa.Column("target", sa.String(512), nullable=False),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("conversation_id", sa.String(128), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("n_messages", sa.Integer, nullable=False),
        sa.Column("n_tokens", sa.Integer, nullable=False),
        sa.Column("first_key", sa.Text, nullable=False),
        sa.Column("last_key", sa.Text, nullable=False),
        sa.Column("last_order", sa.BigInteger),
        sa.Column("sent_at", tz, nullable=False),
        sa.Column("acked_at", tz),
        sa.Column("task_id", sa.String(128)),
        sa.Column("detail", sa.Text),
        sa.Column("msg_hashes", sa.LargeBinary, nullable=False))
    op.create_index("ix_batches_conv", "batches", ["target", "user_id", "conversation_id"])
    op.create_index("ix_batches_status", "batches", ["target", "status"])
    op.create_table(
        "messages",
        sa.Column("target", sa.String(512), primary_key=True),
        sa.Column("key_lo", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("key_hi", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("batch_key", sa.String(64), nullable=False))
    op.create_table(
        "conversations",
        sa.Column("target", sa.String(512), primary_key=True),
        sa.Column("user_id", sa.String(128), primary_key=True),
        sa.Column("conversation_id", sa.String(128), primary_key=True),
        sa.Column("delivered_messages", sa.BigInteger, nullable=False),
        sa.Column("last_order", sa.BigInteger),
        sa.Column("last_batch_key", sa.String(64)),
        sa.Column("tail", sa.LargeBinary),
        sa.Column("updated_at", tz, nullable=False))
    op.create_table(
        "objects",
        sa.Column("source", sa.String(64), primary_key=True),
        sa.Column("target", sa.String(512), primary_key=True),
        sa.Column("unit", sa.String(1024), primary_key=True),
        sa.Column("version", sa.String(256), nullable=False),
        sa.Column("size", sa.BigInteger),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("detail", sa.Text),
        sa.Column("updated_at", tz, nullable=False))
    op.create_table(
        "source_state",
        sa.Column("source", sa.String(64), primary_key=True),
        sa.Column("target", sa.String(512), primary_key=True),
        sa.Column("cursor", sa.Text),
        sa.Column("columns", sa.Text),
        sa.Column("updated_at", tz, nullable=False))
    op.create_table(
        "leases",
        sa.Column("target", sa.String(512), primary_key=True),
        sa.Column("user_id", sa.String(128), primary_key=True),
        sa.Column("conversation_id", sa.String(128), primary_key=True),
        sa.Column("holder", sa.String(64), nullable=False),
        sa.Column("expires_at", tz, nullable=False))
    op.create_table(
        "backfill_parts",
        sa.Column("backfill_id", sa.String(32), primary_key=True),
        sa.Column("part_key", sa.String(512), primary_key=True),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("target", sa.String(512), nullable=False),
        sa.Column("spec", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("run_id", sa.String(64)),
        sa.Column("flow_run_id", sa.String(64)),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("heartbeat_at", tz),
        sa.Column("updated_at", tz, nullable=False),
        sa.Column("report", sa.Text))


def downgrade() -> None:
    for name in ("backfill_parts", "leases", "source_state", "objects", "conversations", "messages", "batches",
                 "runs"):
        op.drop_table(name)
