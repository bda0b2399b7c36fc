"""Documents: each version of a document file uploaded to a knowledge base (path, content hash,
MemOS's file id, parse status), and the knowledge bases the ledger created.

Revision ID: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    op.create_table(
        "documents",
        sa.Column("target", sa.String(512), primary_key=True),
        sa.Column("source", sa.String(64), primary_key=True),
        sa.Column("path", sa.String(1024), primary_key=True),
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("name", sa.String(512), nullable=False),
        sa.Column("knowledgebase_id", sa.String(128), nullable=False),
        sa.Column("file_id", sa.String(128)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("detail", sa.Text))
    op.create_index("ix_documents_status", "documents", ["target", "source", "status"])
    op.create_table(
        "knowledgebases",
        sa.Column("target", sa.String(512), primary_key=True),
        sa.Column("name", sa.String(256), primary_key=True),
        sa.Column("knowledgebase_id", sa.String(128)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False))


def downgrade() -> None:
    op.drop_table("knowledgebases")
    op.drop_index("ix_documents_status", "documents")
    op.drop_table("documents")
