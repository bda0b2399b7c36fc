"""Alembic environment of the ledger: always run in-process on the connection the ledger
opened (core/ledger/db.py), never from a URL in a config file."""

from alembic import context

from core.ledger.db import VERSION_TABLE

connection = context.config.attributes["connection"]
# batch mode: SQLite cannot ALTER most things in place; alembic copies the table for it
context.configure(connection=connection, version_table=VERSION_TABLE, render_as_batch=True, transactional_ddl=True)
with context.begin_transaction():
    context.run_migrations()
