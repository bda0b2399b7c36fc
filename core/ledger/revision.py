"""The ledger's newest schema revision, in a module of its own: the quick `status` path
(overview.py) checks it without importing SQLAlchemy. tests/test_ledger_migrations.py checks
it is the head of migrations/versions."""

HEAD = "0005"
