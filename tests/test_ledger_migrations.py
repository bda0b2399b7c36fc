"""Ledgers upgrade in place: one written before versioned migrations (the schema as memos-etl
had it up to bd74719, made here from its own table definitions and filled with a real sync's
state) is upgraded at open on SQLite and PostgreSQL, ends up exactly at the newest schema, and
a re-sync of everything it holds sends nothing."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from core.config import load_mapping
from core.ledger import Ledger
from core.ledger import db as ledger_db
from core.ledger.ratelimits import Bucket
from core.ledger.tables import metadata as current
from flows.runner import run
from tests.conftest import new_pg_database
from tests.helpers import chat_rows, sample_mapping_at, stats, write_jsonl

# -- the ledger's tables as the code before revisions created them (metadata.create_all) ------
OLD = sa.MetaData()
tz = sa.DateTime(timezone=True)
sa.Table(
    "runs",
    OLD,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("flow", sa.String(32), nullable=False),
    sa.Column("source", sa.String(64), nullable=False),
    sa.Column("target", sa.String(512), nullable=False),
    sa.Column("started_at", tz, nullable=False),
    sa.Column("finished_at", tz),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("host", sa.String(255)),
    sa.Column("pid", sa.Integer),
    sa.Column("report", sa.Text),
)
sa.Table(
    "batches",
    OLD,
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
    sa.Column("msg_hashes", sa.LargeBinary, nullable=False),
    sa.Index("ix_batches_conv", "target", "user_id", "conversation_id"),
    sa.Index("ix_batches_status", "target", "status"),
)
sa.Table(
    "messages",
    OLD,
    sa.Column("target", sa.String(512), primary_key=True),
    sa.Column("key_lo", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("key_hi", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("batch_key", sa.String(64), nullable=False),
)
sa.Table(
    "conversations",
    OLD,
    sa.Column("target", sa.String(512), primary_key=True),
    sa.Column("user_id", sa.String(128), primary_key=True),
    sa.Column("conversation_id", sa.String(128), primary_key=True),
    sa.Column("delivered_messages", sa.BigInteger, nullable=False),
    sa.Column("last_order", sa.BigInteger),
    sa.Column("last_batch_key", sa.String(64)),
    sa.Column("tail", sa.LargeBinary),
    sa.Column("updated_at", tz, nullable=False),
)
sa.Table(
    "objects",
    OLD,
    sa.Column("source", sa.String(64), primary_key=True),
    sa.Column("target", sa.String(512), primary_key=True),
    sa.Column("unit", sa.String(1024), primary_key=True),
    sa.Column("version", sa.String(256), nullable=False),
    sa.Column("size", sa.BigInteger),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("detail", sa.Text),
    sa.Column("updated_at", tz, nullable=False),
)
sa.Table(
    "source_state",
    OLD,
    sa.Column("source", sa.String(64), primary_key=True),
    sa.Column("target", sa.String(512), primary_key=True),
    sa.Column("cursor", sa.Text),
    sa.Column("columns", sa.Text),
    sa.Column("updated_at", tz, nullable=False),
)
sa.Table(
    "leases",
    OLD,
    sa.Column("target", sa.String(512), primary_key=True),
    sa.Column("user_id", sa.String(128), primary_key=True),
    sa.Column("conversation_id", sa.String(128), primary_key=True),
    sa.Column("holder", sa.String(64), nullable=False),
    sa.Column("expires_at", tz, nullable=False),
)
sa.Table(
    "backfill_parts",
    OLD,
    sa.Column("backfill_id", sa.String(32), primary_key=True),
    sa.Column("part_key", sa.String(512), primary_key=True),
    sa.Column("source", sa.String(64), nullable=False),
    sa.Column("target", sa.String(512), nullable=False),
    sa.Column("spec", sa.Text, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("run_id", sa.String(64)),
    sa.Column("flow_run_id", sa.String(64)),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("heartbeat_at", tz),
    sa.Column("updated_at", tz, nullable=False),
    sa.Column("report", sa.Text),
)


@pytest.fixture(params=["sqlite", "postgresql"])
def urls(request, tmp_path):
    """(a ledger to fill with a real sync, the old-format ledger to copy it into)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'new.db'}", f"sqlite:///{tmp_path / 'old.db'}"
    return request.getfixturevalue("pg_ledger_url"), new_pg_database(request.getfixturevalue("postgres_url"), "old")


def schema_diff(conn) -> list:
    """Differences between a database and core/ledger/tables.py (the version table aside)."""
    ctx = MigrationContext.configure(
        conn,
        opts={"include_name": lambda name, kind, parent: not (kind == "table" and name == ledger_db.VERSION_TABLE)},
    )
    return compare_metadata(ctx, current)


def test_head_constant_is_the_newest_migration():
    cfg = Config()
    cfg.set_main_option("script_location", str(ledger_db._MIGRATIONS))
    assert ScriptDirectory.from_config(cfg).get_current_head() == ledger_db.HEAD


def test_ledger_from_before_versions_upgrades_in_place_and_resends_nothing(
    urls, dev_server, run_config, tmp_path, capfd
):
    new_url, old_url = urls
    data = tmp_path / "data"
    write_jsonl(data / "chats.jsonl", chat_rows(4, 6))
    mapping = load_mapping(sample_mapping_at(tmp_path, data))
    run_config.state.ledger_url = new_url
    first = run(mapping, run_config)
    assert first.counts.delivered == 24
    sent = stats(dev_server.url)["add_requests"]

    # an old ledger holding that state: old tables, old columns, no version table
    src, dst = sa.create_engine(new_url), sa.create_engine(old_url)
    OLD.create_all(dst)
    with src.connect() as r, dst.begin() as w:
        for table in OLD.sorted_tables:
            rows = [
                {k: v for k, v in row.items() if k in table.c}
                for row in r.execute(sa.select(current.tables[table.name])).mappings()
            ]
            if rows:
                w.execute(table.insert(), rows)
    src.dispose()
    with dst.connect() as c:
        assert ledger_db.VERSION_TABLE not in sa.inspect(c).get_table_names()

    capfd.readouterr()
    run_config.state.ledger_url = old_url
    Ledger(old_url).reset_cursor(mapping.source.name, run_config.target.ledger_name)  # read everything again
    assert "upgrading the ledger" in capfd.readouterr().err
    again = run(mapping, run_config)
    assert again.status == "completed" and again.counts.read == 24
    assert again.counts.already_delivered == 24 and again.counts.requests == 0
    assert stats(dev_server.url)["add_requests"] == sent

    with dst.connect() as c:
        assert (
            MigrationContext.configure(c, opts={"version_table": ledger_db.VERSION_TABLE}).get_current_revision()
            == ledger_db.HEAD
        )
        diff = schema_diff(c)
    assert diff == [], f"upgraded ledger differs from core/ledger/tables.py: {diff}"
    # opening it again is quiet: nothing to upgrade
    upgraded = Ledger(old_url)
    assert "upgrading" not in capfd.readouterr().err
    # revision 0005's rate limits work on the upgraded ledger: a full bucket, then a wait
    upgraded.open_rate_limit("fleet", 1, 100)
    assert upgraded.take_rate("fleet", Bucket(1, 1, 2.0), Bucket(100, 100, 100.0)) == 0.0
    assert 0.3 < upgraded.take_rate("fleet", Bucket(1, 1, 2.0), Bucket(100, 100, 100.0)) <= 1.0
    upgraded.close()
    dst.dispose()


def test_new_ledger_is_made_by_the_migrations_and_matches_the_tables(tmp_path):
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    Ledger(url).close()
    eng = sa.create_engine(url)
    with eng.connect() as c:
        assert schema_diff(c) == []
    eng.dispose()
