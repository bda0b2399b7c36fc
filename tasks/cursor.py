"""Cursor values for incremental SQL sources: storage, lag and comparison. Pure functions.

A cursor is the largest value of `source.sql.cursor_column` a completed run delivered. The
next run reads from `behind(cursor, lag)`, inclusive: rows that committed late with a value
inside the lag window are read again, and the ledger drops the ones already delivered, so
overlap costs a re-read, never a duplicate. The lag is in seconds for a datetime cursor and
in cursor units for a numeric one; it shifts the instant (UTC), not the wall clock, so it
stays exact across DST changes. String cursors take no lag.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any


def encode(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return json.dumps({"t": "datetime", "v": value.isoformat()})
    if isinstance(value, date):
        return json.dumps({"t": "date", "v": value.isoformat()})
    if isinstance(value, bool):
        raise TypeError("a boolean column cannot be a cursor")
    if isinstance(value, int):
        return json.dumps({"t": "int", "v": value})
    if isinstance(value, (float, Decimal)):
        return json.dumps({"t": "float", "v": float(value)})
    return json.dumps({"t": "str", "v": str(value)})


def decode(text: str | None) -> Any:
    if not text:
        return None
    d = json.loads(text)
    kind, v = d["t"], d["v"]
    if kind == "datetime":
        return datetime.fromisoformat(v)
    if kind == "date":
        return date.fromisoformat(v)
    return {"int": int, "float": float, "str": str}[kind](v)


def behind(value: Any, lag: float) -> Any:
    """The value `lag` before `value` (never past the start: None stays None)."""
    if value is None or not lag:
        return value
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            return (value.astimezone(UTC) - timedelta(seconds=lag)).astimezone(value.tzinfo)
        return value - timedelta(seconds=lag)
    if isinstance(value, date):
        return value - timedelta(days=int(lag // 86400))
    if isinstance(value, int):
        return value - int(lag)
    if isinstance(value, float):
        return value - lag
    return value


def later(a: Any, b: Any) -> Any:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


def parse_bound(text: str | None) -> Any:
    """A --since/--until value from the command line: int, float, ISO datetime, or text."""
    if text is None:
        return None
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return text
