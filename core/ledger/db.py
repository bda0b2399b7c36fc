"""The ledger's database: engine, schema upgrades at open, and ledger failures as one clear error.

Every public ledger call runs through `guarded`: a dropped connection (a PostgreSQL restart or
failover, a network blip) is retried with backoff for up to `RETRY_S`; anything else the
database refuses (disk full, read-only file, a server gone for longer) becomes a LedgerError
that names the ledger (without its password) and the call, and says that nothing is lost.
Retrying a whole call is safe because each call is one transaction: a failed one left nothing.
"""

from __future__ import annotations

import functools
import logging
import os
import random
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

from core.errors import LedgerError
from core.ledger.revision import HEAD

log = logging.getLogger("memos_etl.ledger")

VERSION_TABLE = "memos_etl_ledger_version"
RETRY_S = 60.0  # how long a lost connection is retried before the run stops
OPEN_RETRY_S = 10.0  # ... and when the ledger is first opened
_MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def now() -> datetime:
    return datetime.now(UTC)


def safe_url(url: str) -> str:
    """The URL with any password masked."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy reads: shown as given
        return url


def create_engine(url: str) -> sa.engine.Engine:
    kwargs: dict = {}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"timeout": 60, "check_same_thread": False}
        db = sa.engine.make_url(url).database
        if db and db != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(db)), exist_ok=True)
    else:
        kwargs.update(pool_size=16, max_overflow=16, pool_pre_ping=True)
    engine = sa.create_engine(url, **kwargs)
    if url.startswith("sqlite"):
        sa.event.listen(engine, "connect", _sqlite_pragmas)
    return engine


#: PostgreSQL SQLSTATEs of a server gone, stopping or starting: worth waiting for. Class 08 is
#: "connection exception"; 57P01-03 admin/crash shutdown and "cannot connect now" (starting up,
#: recovery); 53300 too many connections.
_PG_WAIT_STATES = ("08", "57P01", "57P02", "57P03", "53300")


def _is_disconnect(exc: BaseException) -> bool:
    """A lost or refused connection, by the driver's error type and SQLSTATE (never by message
    text). psycopg gives no SQLSTATE when the connection itself failed (refused, timed out,
    closed mid-query): those count too. SQLite's errors are never a disconnect."""
    if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
        return True
    if not isinstance(exc, sa.exc.OperationalError):
        return False
    try:
        import psycopg
    except ImportError:  # pragma: no cover - the driver is a dependency
        return False
    orig = exc.orig
    if not isinstance(orig, psycopg.OperationalError):
        return False
    state = orig.sqlstate
    return state is None or state.startswith(_PG_WAIT_STATES)


class Store:
    """What every ledger concept (runs.py, deliveries.py, ...) works on: the Ledger that mixes
    them sets these when it opens the database."""

    url: str
    safe_url: str
    engine: sa.engine.Engine
    retry_s: float


def guarded(what: str):
    """Decorator for a ledger call: retry lost connections, turn database failures into LedgerError."""

    def wrap(fn):
        @functools.wraps(fn)
        def call(self, *args, **kwargs):
            deadline = time.monotonic() + self.retry_s
            attempt = 0
            while True:
                try:
                    return fn(self, *args, **kwargs)
                except (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.DBAPIError) as exc:
                    if isinstance(exc, sa.exc.IntegrityError) or isinstance(exc, sa.exc.ProgrammingError):
                        raise
                    if not _is_disconnect(exc) or time.monotonic() >= deadline:
                        raise LedgerError(self.safe_url, what or fn.__name__, exc) from None
                    attempt += 1
                    delay = min(deadline - time.monotonic(), random.uniform(0, min(5.0, 0.2 * 2**attempt)))
                    log.warning(
                        "ledger %s: %s lost its connection (%s); retrying in %.1fs",
                        self.safe_url,
                        what or fn.__name__,
                        str(exc.orig or exc).splitlines()[0][:200],
                        delay,
                    )
                    time.sleep(max(delay, 0.05))

        return call

    return wrap


def current_revision(conn) -> str | None:
    """The ledger's schema revision: None for an empty database, "0001" for a ledger made
    before revisions were recorded (it has the tables but no version table)."""
    names = set(sa.inspect(conn).get_table_names())
    if VERSION_TABLE in names:
        row = conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).first()
        return row[0] if row else None
    return "0001" if "runs" in names else None


def upgrade(engine: sa.engine.Engine, url: str) -> None:
    """Bring the ledger's schema to HEAD in place (a new ledger is made by the same migrations)."""
    with engine.begin() as c:
        if engine.dialect.name == "postgresql":
            # workers starting together on one database would race to upgrade it
            c.execute(sa.text("SELECT pg_advisory_xact_lock(4242001)"))
        elif engine.dialect.name == "sqlite":
            # the same race on a new SQLite file ("table runs already exists"): Python's driver
            # opens no transaction for a SELECT or a CREATE, so take the write lock first; the
            # other process waits (timeout 60 s) and then finds the schema current
            c.exec_driver_sql("BEGIN IMMEDIATE")
        rev = current_revision(c)
        if rev == HEAD:
            return
        # imported here: alembic costs about a second to import, and an up-to-date ledger never needs it
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(_MIGRATIONS))
        cfg.attributes["connection"] = c
        if rev is not None and VERSION_TABLE not in sa.inspect(c).get_table_names():
            command.stamp(cfg, rev)  # a ledger from before versioning: its schema is the baseline
        if rev is not None:
            print(
                f"memos-etl: upgrading the ledger {safe_url(url)} from schema revision {rev} to {HEAD} "
                "(in place; nothing delivered is lost)",
                file=sys.stderr,
            )
        command.upgrade(cfg, "head")


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA busy_timeout=60000")
    # WAL lets the loaders of several buckets commit while others read; NORMAL is durable
    # across process crashes (what exactly-once needs), not across power loss of the host
    _wal(cur)
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def _wal(cur, wait_s: float = 60.0) -> None:
    """Put the database in WAL mode (it stays so: the file records it). Changing the mode does
    not wait on the busy timeout: a process that asks while another is creating a new ledger
    gets `database is locked` at once (3 processes opening one new file under load: 5 failures
    in 40 rounds), so it asks again until the mode is set or `wait_s` has passed."""
    import sqlite3

    deadline = time.monotonic() + wait_s
    while True:
        try:
            if str(cur.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal":
                return
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(random.uniform(0.01, 0.1))
