"""Rate limits: the token buckets a fleet shares through the ledger (load.fleet_limit with the
state-store limiter, core/ledger/ratelimits.py). One row per limit name: the request and token
levels, and the database-clock time they were last brought up to date.

A new table only: an existing ledger upgrades in place with nothing rewritten.

Revision ID: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"


def upgrade() -> None:
    op.create_table(
        "rate_limits",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("requests", sa.Double, nullable=False),
        sa.Column("tokens", sa.Double, nullable=False),
        sa.Column("updated_s", sa.Double, nullable=False))


def downgrade() -> None:
    op.drop_table("rate_limits")
