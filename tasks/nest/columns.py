"""Paths into a record's columns: a column of JSON text (a SQL table's `chat`; PostgreSQL's
JSON and JSONB come as JSON text too, tasks/extract/sql.py) is parsed once per record when a
dotted path of the mapping goes into it, by the levels, their `current`, `skip_records` or
the fields read; and records that are not a person's chat (`nest.skip_records`) are found."""

from __future__ import annotations

import json
from collections.abc import Collection

import orjson

from core.config import NestConfig
from core.errors import NestError


def json_heads(nest: NestConfig, wanted: Collection[str] | None) -> tuple[set[str], set[str]]:
    """The record fields that dotted paths go into: (those the levels need, all of them). A
    column of JSON text (a SQL table's `chat`) is parsed once per record when a path goes in."""
    names = {lv.name for lv in nest.levels}
    needed = {
        p.split(".", 1)[0]
        for lv in nest.levels
        for p in (lv.column, lv.current)
        if p and "." in p and p.split(".", 1)[0] not in names
    }
    paths = [r.key for r in nest.skip_records] + list(wanted or ())
    if nest.perspectives is not None and isinstance(nest.perspectives.of, list):
        paths += nest.perspectives.of
    heads = needed | {p.split(".", 1)[0] for p in paths if "." in p and p.split(".", 1)[0] not in names}
    return needed, heads


def decoded(rec: dict, needed: set[str], heads: set[str]) -> dict:
    """The record with its fields of JSON text that paths go into parsed (a copy; the raw
    record stays for the quarantine). Broken JSON where a level needs it is a NestError."""
    out = None
    for h in heads:
        v = rec.get(h)
        if not isinstance(v, str):
            continue
        try:
            parsed = orjson.loads(v)
        except orjson.JSONDecodeError:
            try:
                parsed = json.loads(v)
            except ValueError as exc:
                if h in needed:
                    raise NestError(f"{h} is text but not JSON: {exc}") from None
                continue
            except RecursionError:
                raise NestError(f"{h} is JSON nested deeper than Python can read") from None
        if out is None:
            out = dict(rec)
        out[h] = parsed
    return rec if out is None else out


def not_a_chat(rec: dict, nest: NestConfig) -> str | None:
    """The kind of the first skip_records rule the record matches (None: a chat to load)."""
    for r in nest.skip_records:
        v = _text(dotted(rec, r.key.split(".")))
        if v is not None and (v in r.values or (r.prefix is not None and v.startswith(r.prefix))):
            return r.kind
    return None


def dotted(cur: object, keys: list[str]):
    """The value at a path of keys inside nested objects; None where one is missing or not an object."""
    for k in keys:
        if not isinstance(cur, dict):
            return None
        cur = cur.get(k)
    return cur


def _text(v) -> str | None:
    """A value as text, booleans as true/false (as the skip rules compare them)."""
    return None if v is None else ("true" if v else "false") if isinstance(v, bool) else str(v)
