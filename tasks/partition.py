"""Partition a backfill range into independent slices. Pure functions, no I/O beyond listing.

A backfill is split by one of:

* `cursor`: [since, until) of a SQL source's cursor column in steps of `every` (a duration
  such as 1d, 12h, 30m for datetime cursors; a number for numeric ones);
* `partition`: Hive partition values (dt=2024-01-01/...) of a file or S3 source, `every`
  values per slice (default 1);
* `file`: files/objects, `every` per slice (default 1);
* `hash`: conversation hash buckets (every row of the range is read by each slice, and each
  keeps the conversations of its bucket): for sources that cannot be cut any other way.

Every slice has a stable key; the backfill's id is a hash of the source, target and split,
so running the same backfill again resumes it (core/ledger/backfill.py).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from core.config import Mapping
from core.errors import ConfigError
from tasks.cursor import parse_bound
from tasks.extract.kinds import kind_of
from tasks.extract.units import Slice, partition_value

BY = ("auto", "cursor", "partition", "file", "hash")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


@dataclass(frozen=True)
class Part:
    key: str
    slice: Slice


def parse_duration(text: str) -> timedelta:
    m = _DURATION.match(str(text))
    if not m:
        raise ConfigError("backfill", "every", f"{text!r} is not a duration like 1d, 12h, 30m or 1w")
    return timedelta(seconds=float(m.group(1)) * _UNIT_S[m.group(2)])


def split(
    mapping: Mapping,
    source,
    by: str = "auto",
    since: str | None = None,
    until: str | None = None,
    every: str | int | None = None,
    buckets: int = 16,
) -> list[Part]:
    if by not in BY:
        raise ConfigError("backfill", "by", f"{by!r}: choose one of {', '.join(BY)}")
    lo, hi = parse_bound(since), parse_bound(until)
    by_cursor = kind_of(mapping).style(mapping) == "cursor"  # rows in cursor ranges (SQL), not units
    if by == "auto":
        by = "cursor" if by_cursor else ("partition" if _has_partitions(mapping, source) else "file")
    if by == "cursor":
        if not by_cursor:
            raise ConfigError("backfill", "by", "cursor ranges need a SQL source; use partition, file or hash")
        parts = _cursor_parts(lo, hi, every)
    elif by == "partition":
        parts = _partition_parts(mapping, source, lo, hi, int(every or 1))
    elif by == "file":
        if by_cursor:
            raise ConfigError("backfill", "by", "a SQL source has no files; use cursor or hash")
        parts = _file_parts(mapping, source, lo, hi, int(every or 1))
    else:
        if buckets < 1:
            raise ConfigError("backfill", "buckets", "needs at least 1")
        parts = [
            Part(f"hash:{i}/{buckets}", Slice(since=lo, until=hi, buckets=(i,), of_buckets=buckets))
            for i in range(buckets)
        ]
    if not parts:
        raise ConfigError(
            "backfill", "since/until", f"nothing of source {mapping.source.name} is in [{since or ''}, {until or ''})"
        )
    return parts


def backfill_id(source: str, target: str, by: str, since, until, every, buckets: int) -> str:
    text = json.dumps([source, target, by, since, until, str(every), buckets], default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def _cursor_parts(lo: Any, hi: Any, every) -> list[Part]:
    if lo is None or hi is None:
        raise ConfigError("backfill", "since/until", "a cursor backfill needs both --since and --until")
    if isinstance(lo, datetime) != isinstance(hi, datetime):
        raise ConfigError("backfill", "since/until", "give both as ISO datetimes, or both as numbers")
    step: timedelta | float
    if isinstance(lo, datetime):
        lo, hi = _aware(lo), _aware(hi)
        step = parse_duration(every or "1d")
    elif isinstance(lo, (int, float)) and isinstance(hi, (int, float)):
        width: float = float(every) if every is not None else max(1, math.ceil((hi - lo) / 8))
        step = int(width) if isinstance(lo, int) and isinstance(hi, int) and float(width).is_integer() else width
    else:
        raise ConfigError("backfill", "since/until", "cursor bounds must be datetimes or numbers")
    if not lo < hi:
        raise ConfigError("backfill", "since/until", f"empty range: {lo} is not before {hi}")
    out, a = [], lo
    while a < hi:
        b = min(a + step, hi)
        out.append(Part(f"cursor:[{_text(a)},{_text(b)})", Slice(since=a, until=b)))
        a = b
    return out


def _aware(d: datetime) -> datetime:
    return d if d.tzinfo else d.replace(tzinfo=UTC)


def _text(v: Any) -> str:
    return v.isoformat() if isinstance(v, (datetime, date)) else str(v)


def _partition_key(mapping: Mapping) -> str | None:
    return mapping.source.s3.partition_key if mapping.source.s3 else None


def _has_partitions(mapping: Mapping, source) -> bool:
    key = _partition_key(mapping)
    return any(partition_value(u.rel, key) is not None for u in source.units(Slice()))


def _groups(values: list[str], every: int, join: str) -> list[tuple[tuple[str, ...], str]]:
    """Consecutive groups of `every` values, each with a label for its part key."""
    step = max(1, every)
    out = []
    for i in range(0, len(values), step):
        group = tuple(values[i : i + step])
        out.append(
            (group, group[0] if len(group) == 1 else join.format(first=group[0], last=group[-1], more=len(group) - 1))
        )
    return out


def _partition_parts(mapping: Mapping, source, lo, hi, every: int) -> list[Part]:
    key = _partition_key(mapping)
    values = sorted(
        {v for u in source.units(Slice(since=lo, until=hi)) if (v := partition_value(u.rel, key)) is not None}
    )
    return [
        Part(f"partition:{label}", Slice(partitions=group))
        for group, label in _groups(values, every, "{first}..{last}")
    ]


def _file_parts(mapping: Mapping, source, lo, hi, every: int) -> list[Part]:
    rels = [u.rel for u in source.units(Slice(since=lo, until=hi))]
    return [Part(f"file:{label}", Slice(units=group)) for group, label in _groups(rels, every, "{first}+{more}")]
