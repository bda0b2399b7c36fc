"""JSON lines that are one document per message, gathered into one record per conversation
(`source.group_by`): a `mongoexport` of LibreChat's `messages` collection. The branch-tree
step (tasks/nest/tree.py) needs a conversation's nodes in one record; this makes that record,
`{<group_by>: key, "lines": [document, ...]}` in the file's order, and yields it as the other
nested readers do (RECORD_COLUMN, the record's JSON text).

Memory: the unit is read twice. The first pass keeps only the keys seen, to tell whether each
key's lines are contiguous (an export sorted by the key: `mongoexport --sort`); if they are, the
second pass holds one conversation at a time; if not, it holds the unit's documents until its
end (memory about the size of the parsed file), since a key's last line may be the file's last.

Documents are read as MongoDB Extended JSON: `{"$date": ...}` (ISO text, or `{"$numberLong":
ms}`) becomes ISO 8601 text in UTC, `{"$oid": ...}` its hex text, `$numberLong` / `$numberInt`
/ `$numberDouble` numbers, `$numberDecimal` its text. A line that does not decode, is not JSON,
is not an object, or has no key is one BadRow."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import BinaryIO

import pyarrow as pa

from tasks.extract.blocks import RECORD_COLUMN, LineBlocks, check_line, preview
from tasks.quarantine import BadRow, Reason

LINES = "lines"  # the list of a grouped record's documents
BATCH_BYTES = 8 << 20  # JSON text of records per batch (more when one conversation is larger)


def grouped_batches(
    open_stream: Callable[[], AbstractContextManager[BinaryIO]],
    key: str,
    bad: list[BadRow],
    max_record_bytes: int,
    replace: bool,
) -> Iterator[tuple[int, pa.RecordBatch]]:
    """(record number, batch of RECORD_COLUMN) of a unit's lines grouped by `key`. Records and
    bad lines share one numbering (a record's number is its place among both), so a batch's
    rows are `offset + i`."""
    with open_stream() as fh:
        contiguous = _contiguous(fh, key, max_record_bytes, replace)
    number = 0
    texts: list[str] = []
    size = 0
    start = 0
    with open_stream() as fh:
        for item in _groups(fh, key, bad, max_record_bytes, replace, contiguous):
            if isinstance(item, BadRow):  # a bad line ends the run of records before it
                if texts:
                    yield start, pa.record_batch({RECORD_COLUMN: pa.array(texts, pa.string())})
                    texts, size = [], 0
                item.row = number
                number += 1
                start = number
                continue
            text = json.dumps(item, ensure_ascii=False)
            texts.append(text)
            size += len(text)
            number += 1
            if size >= BATCH_BYTES:
                yield start, pa.record_batch({RECORD_COLUMN: pa.array(texts, pa.string())})
                texts, size, start = [], 0, number
    if texts:
        yield start, pa.record_batch({RECORD_COLUMN: pa.array(texts, pa.string())})


def _contiguous(fh: BinaryIO, key: str, max_record_bytes: int, replace: bool) -> bool:
    """Whether every key's lines follow one another (the first pass: the keys alone are kept)."""
    seen: set = set()
    current = object()
    for doc in _documents(fh, key, [], max_record_bytes, replace, whole=False):
        if isinstance(doc, BadRow):
            continue
        k = doc.get(key)
        if k != current:
            if k in seen:
                return False
            seen.add(k)
            current = k
    return True


def _groups(
    fh: BinaryIO, key: str, bad: list[BadRow], max_record_bytes: int, replace: bool, contiguous: bool
) -> Iterator[dict | BadRow]:
    """Grouped records, and bad lines as they are met (a bad line found by the line reader
    itself, one over max_record_bytes, is in `bad` and passed on too)."""
    held: dict = {}
    for doc in _documents(fh, key, bad, max_record_bytes, replace):
        if isinstance(doc, BadRow):
            yield doc
            continue
        k = doc[key]
        if contiguous and k not in held and held:
            yield from _records(key, held)
            held.clear()
        held.setdefault(k, []).append(doc)
    yield from _records(key, held)


def _records(key: str, held: dict) -> Iterator[dict]:
    for k, docs in held.items():
        yield {key: k, LINES: docs}


def _documents(
    fh: BinaryIO, key: str, bad: list[BadRow], max_record_bytes: int, replace: bool, whole: bool = True
) -> Iterator[dict | BadRow]:
    """The document, or a BadRow, of each non-blank line; read as plain JSON whole, or (`whole`
    false: the first pass, which needs the key alone) only its key."""
    mine: list[BadRow] = []
    blocks = LineBlocks(fh, mine, max_record_bytes)
    for data in blocks:
        while mine:  # over-long lines the reader streamed past
            b = mine.pop(0)
            bad.append(b)
            yield b
        line0 = blocks.line
        records = 0
        for i, raw in enumerate(data.split(b"\n")):
            raw = raw.rstrip(b"\r")
            if not raw.strip():
                continue
            records += 1
            text, doc, reason = check_line(raw, replace)
            if reason is None and not isinstance(doc, dict):
                reason = Reason("not an object", f"not a JSON object (a {type(doc).__name__})")
            elif reason is None and isinstance(doc, dict):
                if whole:
                    doc = plain(doc)
                elif isinstance(doc.get(key), dict):
                    doc[key] = plain(doc[key])
                if not isinstance(doc.get(key), (str, int)) or doc.get(key) == "":
                    reason = Reason("no key", f"has no {key} (text): cannot tell its conversation")
            if reason is not None:
                b = BadRow(0, f"line {line0 + i}", reason, preview(text))
                bad.append(b)
                yield b
                continue
            if isinstance(doc, dict):
                yield doc
        blocks.done(data, records)
    while mine:
        b = mine.pop(0)
        bad.append(b)
        yield b


def plain(value):
    """A value of MongoDB Extended JSON as plain JSON (the wrappers named in the module's text)."""
    if isinstance(value, list):
        return [plain(v) if isinstance(v, (dict, list)) else v for v in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        ((k, v),) = value.items()
        if k == "$date":
            return _date(v)
        if k == "$oid" and isinstance(v, str):
            return v
        if k in ("$numberLong", "$numberInt") and isinstance(v, str):
            try:
                return int(v)
            except ValueError:
                return v
        if k == "$numberDouble" and isinstance(v, str):
            try:
                return float(v) if v not in ("NaN", "Infinity", "-Infinity") else v
            except ValueError:
                return v
        if k == "$numberDecimal":
            return v
    # most values are scalars: no call for them (this runs for every field of every line)
    return {k: plain(v) if isinstance(v, (dict, list)) else v for k, v in value.items()}


def _date(v):
    """`$date`'s value: ISO text as it is; milliseconds since the epoch as ISO text in UTC."""
    if isinstance(v, dict) and "$numberLong" in v:
        v = v["$numberLong"]
    if isinstance(v, str) and v.lstrip("-").isdigit():
        v = int(v)
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        try:
            return datetime.fromtimestamp(v / 1000, UTC).isoformat(timespec="milliseconds")
        except (OverflowError, OSError, ValueError):
            return v
    return v
