"""SQL sources through SQLAlchemy: a table or a SELECT, read in keyset pages.

Pages are ordered by (cursor_column, key_column) and continue after the last row of the
previous page (no OFFSET: each page is an index range scan however deep the table). A unit
is a half-open cursor range [lo, hi); a nightly run's range starts at its cursor minus the
lag and has no end. Memory is bounded by `sql.page_rows`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import sqlalchemy as sa

from core.config import Mapping
from core.errors import SourceError, SourceUnavailable
from tasks.cursor import behind, later, parse_bound
from tasks.extract.apps import app_rows
from tasks.extract.kinds import Kind
from tasks.extract.units import Slice, Unit

#: SQLSTATEs of a server that is there but cannot serve now (class 08, a connection exception,
#: is matched by its prefix): an administrator shutdown, a crash, "cannot connect now" (starting
#: up), too many connections
UNAVAILABLE_STATES = ("57P01", "57P02", "57P03", "53300")
#: libpq gives a connection it could not open no SQLSTATE, only the server's text: these are the
#: FATAL answers of a server that is restarting or full (any other FATAL, e.g. a role, password
#: or database that does not exist, is the source's settings being wrong)
BUSY_SERVER = ("starting up", "shutting down", "in recovery mode", "not yet accepting", "too many")


def unreachable(exc: Exception, connecting: bool = False) -> bool:
    """Whether a SQLAlchemy error says the database cannot be reached now (a later try may
    work), not that the source is wrong: the connection dropped (SQLAlchemy marks it
    invalidated), a SQLSTATE of class 08 or UNAVAILABLE_STATES, or, when `connecting`, a
    driver's OperationalError that is not the server refusing the settings (no FATAL answer,
    or a BUSY_SERVER one) on a database other than SQLite (whose connect errors are about its
    file). A bad password, a missing database or table stays a SourceError."""
    if getattr(exc, "connection_invalidated", False):
        return True
    orig = getattr(exc, "orig", None)
    state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if state:
        return str(state).startswith("08") or str(state) in UNAVAILABLE_STATES
    if not connecting or not isinstance(exc, sa.exc.OperationalError) or "sqlite" in type(orig).__module__:
        return False
    text = str(orig)
    return "FATAL:" not in text or any(busy in text for busy in BUSY_SERVER)


class SqlSource:
    def __init__(self, mapping: Mapping):
        self.mapping = mapping
        assert mapping.source.sql is not None  # source.type sql: the config requires the sql section
        self.cfg = mapping.source.sql
        try:
            url = self.cfg.resolved_url()
        except ValueError as exc:
            raise SourceError(mapping.source.name, "source.sql", str(exc)) from None
        self.safe_url = sa.engine.make_url(url).render_as_string(hide_password=True)
        self.engine = sa.create_engine(url, pool_pre_ping=True)
        self.high_water: Any = None
        self.app = app_rows(mapping)  # an app's store: its rows decoded before mapping (tasks/extract/apps/)

    @property
    def label(self) -> str:
        return f"table {self.cfg.table}" if self.cfg.table else "query"

    def _base(self):
        own = self.app.query(self.engine.dialect.name, self.cfg.table) if self.app else None
        if own:
            return sa.text(f"({own}) AS src")
        if self.cfg.table:
            schema, _, name = self.cfg.table.rpartition(".")
            return sa.table(name, schema=schema or None)
        # the user's SELECT as a derived table; our filters and ordering go around it
        return sa.text(f"({self.cfg.query}) AS src")

    def start(self, stored: Any) -> Any:
        """Where a nightly run starts: `lag` behind the stored cursor, or where the first run
        starts (`initial_value`, else the beginning)."""
        start = behind(stored, self.cfg.lag)
        if start is None and self.cfg.initial_value is not None:
            start = parse_bound(str(self.cfg.initial_value))
        return start

    def units(self, part: Slice) -> list[Unit]:
        rng = f"[{'' if part.since is None else part.since}, {'' if part.until is None else part.until})"
        return [Unit(rel=f"{self.label} {rng}", lo=part.since, hi=part.until)]

    def _connect(self):
        try:
            return self.engine.connect()
        except sa.exc.OperationalError as exc:
            error = SourceUnavailable if unreachable(exc, connecting=True) else SourceError
            raise error(
                self.mapping.source.name, self.safe_url, f"cannot connect: {str(exc.orig).strip().splitlines()[0]}"
            ) from None

    def schema(self, unit: Unit) -> pa.Schema:
        with self._connect() as c:
            try:
                base = self._base()
                cols = c.execute(sa.select(sa.text("*")).select_from(base).limit(0)).keys()
            except sa.exc.SQLAlchemyError as exc:
                raise (SourceUnavailable if unreachable(exc) else SourceError)(
                    self.mapping.source.name,
                    f"{self.safe_url} {self.label}",
                    f"cannot query: {str(getattr(exc, 'orig', exc)).strip().splitlines()[0]}",
                ) from None
        names = self.app.columns(list(cols)) if self.app else list(cols)
        return pa.schema([(k, pa.null()) for k in names])

    def iter_batches(self, unit: Unit, bad: list | None = None) -> Iterator[tuple[int, pa.RecordBatch]]:
        offset = 0
        with self._connect() as c:
            for names, rows in self._pages(c, unit):
                columns = list(zip(*rows))
                ci = names.index(self.cfg.cursor_column)
                rb = pa.RecordBatch.from_arrays([_array(col) for col in columns], names=names)
                yield offset, (self.app.decode(rb, offset, bad if bad is not None else []) if self.app else rb)
                offset += len(rows)
                self.high_water = later(self.high_water, max(v for v in columns[ci] if v is not None))

    def _pages(self, c, unit: Unit) -> Iterator[tuple[list[str], list]]:
        """(column names, rows) a page at a time, in (cursor, key) order. A table: keyset
        pages, each an index range scan. A query: run once and read a page at a time (a
        server-side cursor on PostgreSQL): keyset pages over a derived table would run the
        whole query again for every page (a preset's thread walk: quadratic in the table)."""
        cur: sa.ColumnClause = sa.column(self.cfg.cursor_column)
        key: sa.ColumnClause = sa.column(self.cfg.key_column)
        last = None
        done = 0
        while True:
            q = sa.select(sa.text("*")).select_from(self._base())
            if unit.lo is not None:
                q = q.where(cur >= unit.lo)
            if unit.hi is not None:
                q = q.where(cur < unit.hi)
            if last is not None:
                q = q.where(sa.or_(cur > last[0], sa.and_(cur == last[0], key > last[1])))
            q = q.order_by(cur, key)
            try:
                if self.cfg.query:
                    res = c.execution_options(stream_results=True, max_row_buffer=self.cfg.page_rows).execute(q)
                    names = list(res.keys())
                    while rows := res.fetchmany(self.cfg.page_rows):
                        yield names, rows
                        done += len(rows)
                    return
                res = c.execute(q.limit(self.cfg.page_rows))
                names = list(res.keys())
                rows = res.fetchall()
            except sa.exc.SQLAlchemyError as exc:
                raise (SourceUnavailable if unreachable(exc) else SourceError)(
                    self.mapping.source.name,
                    f"{self.label} after row {done}",
                    f"query failed: {str(getattr(exc, 'orig', exc)).strip().splitlines()[0]}",
                ) from None
            if not rows:
                return
            yield names, rows
            done += len(rows)
            ci, ki = names.index(self.cfg.cursor_column), names.index(self.cfg.key_column)
            last = (rows[-1][ci], rows[-1][ki])
            if len(rows) < self.cfg.page_rows:
                return


def _array(values: tuple) -> pa.Array:
    if any(isinstance(v, (dict, list)) for v in values):
        # JSON and JSONB columns (psycopg gives dicts and lists): kept as JSON text, the way
        # SQLite gives them, for nest and the mapping's dotted paths to read (tasks/nest/columns.py)
        values = tuple(v if v is None or isinstance(v, str) else _json_text(v) for v in values)
    try:
        return pa.array(values, from_pandas=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        # mixed types in one column (SQLite allows it): keep it as text for the mapping
        return pa.array([None if v is None else str(v) for v in values], pa.string())


def _json_text(v) -> str:
    if isinstance(v, (dict, list)):
        return json.dumps(v, ensure_ascii=False, default=str)
    return str(v)


#: source.type sql: rows after the cursor; no connection or no table stops the source
KIND = Kind(SqlSource, plan="cursor", connected=True)
