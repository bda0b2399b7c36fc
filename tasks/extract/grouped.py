"""JSON lines that are one document per message, gathered into one record per conversation
(`source.group_by`): a `mongoexport` of LibreChat's `messages` collection. The branch-tree
step (tasks/nest/tree.py) needs a conversation's nodes in one record; this makes that record,
`{<group_by>: key, "lines": [document, ...]}` in the file's order, and yields it as the other
nested readers do (RECORD_COLUMN, the record's JSON text), with the records themselves kept
beside the batch for the walk (tasks/extract/records.py `parsed_batch`): a line is parsed once.

Memory: the unit is read twice. The first pass keeps only the keys seen, to tell whether each
key's lines are contiguous (an export sorted by the key: `mongoexport --sort`); if they are, the
second pass holds one conversation at a time; if not, it holds the unit's documents until its
end (memory about the size of the parsed file), since a key's last line may be the file's last.
The first pass's answer is kept for the unit's version (a run's checks read the first batch
before staging reads it all: one first pass, not three); the second pass checks that it met
the same conversations, and a unit that changed in between is unreadable (read again next run).

Speed: a block's lines go through orjson in one tight loop; a block with a line that is not a
document with a key in text (not JSON, not an object, no key, NUL bytes, not UTF-8) is read
again line by line, each bad line with its reason. A record's text is written by orjson, or by
Python's json where orjson would write it differently (integers past 64 bits, NaN and the
infinities of `$numberDouble`, nesting past orjson's limit). orjson reads an integer past 64
bits as a float, silently: a line that may hold one (a run of 19 digits or more after `:`, `,`,
`[`, a space or `-`) is read by Python's json instead, which keeps its value. The first batch holds
FIRST_RECORDS records at most: the run's checks read it twice before staging.

Documents are read as MongoDB Extended JSON: `{"$date": ...}` (ISO text, or `{"$numberLong":
ms}`) becomes ISO 8601 text in UTC, `{"$oid": ...}` its hex text, `$numberLong` / `$numberInt`
/ `$numberDouble` numbers, `$numberDecimal` its text. A line that does not decode, is not JSON,
is not an object, has no key, or is nested deeper than MAX_DEPTH levels (200, as a JSON
document's records: tasks/extract/depth.py) is one BadRow."""

from __future__ import annotations

import json
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import BinaryIO

import orjson
import pyarrow as pa

from tasks.extract.blocks import LineBlocks, check_line, preview
from tasks.extract.depth import MAX_DEPTH
from tasks.extract.records import parsed_batch
from tasks.quarantine import BadRow, Reason

LINES = "lines"  # the list of a grouped record's documents
BATCH_BYTES = 2 << 20  # JSON text of records per batch (more when one conversation is larger): held as objects too
FIRST_RECORDS = 256  # records in the first batch at most: a run's checks read only the first (200 of it)
VERDICTS = 64  # first passes remembered (by unit version): a run's units, checked then staged
#: a line nested deeper is one bad line, as a JSON document's record is (tasks/extract/depth.py): the
#: second pass's `plain` recurses per level and Python's stack ends near 500 of them
TOO_DEEP = Reason("nested too deep", f"nested deeper than {MAX_DEPTH} levels: not read")


def grouped_batches(
    open_stream: Callable[[], AbstractContextManager[BinaryIO]],
    key: str,
    bad: list[BadRow],
    max_record_bytes: int,
    replace: bool,
    version: Hashable = None,
) -> Iterator[tuple[int, pa.RecordBatch]]:
    """(record number, batch of RECORD_COLUMN) of a unit's lines grouped by `key`. Records and
    bad lines share one numbering (a record's number is its place among both), so a batch's
    rows are `offset + i`. `version`: the unit's identity and version, under which the first
    pass's answer is kept (None: not kept)."""
    memo = None if version is None else (version, key, max_record_bytes, replace)
    verdict = _verdicts.get(memo) if memo is not None else None
    if verdict is None:
        with open_stream() as fh:
            verdict = _contiguous(fh, key, max_record_bytes, replace)
        if memo is not None:
            _verdicts.put(memo, verdict)
    contiguous, runs = verdict
    number = 0
    first = True  # the first batch is FIRST_RECORDS at most
    texts: list[str] = []
    objs: list[dict] = []
    size = 0
    start = 0
    seen = _Seen()
    with open_stream() as fh:
        for item in _groups(fh, key, bad, max_record_bytes, replace, contiguous, seen):
            if isinstance(item, BadRow):  # a bad line ends the run of records before it
                if texts:
                    yield start, parsed_batch(texts, objs)
                    texts, objs, size, first = [], [], 0, False
                item.row = number
                number += 1
                start = number
                continue
            text = _text(item, key, seen.exotic)
            texts.append(text)
            objs.append(item)
            size += len(text)
            number += 1
            if size >= BATCH_BYTES or (first and len(texts) >= FIRST_RECORDS):
                yield start, parsed_batch(texts, objs)
                texts, objs, size, start, first = [], [], 0, number, False
    if contiguous and seen.runs != runs:  # the keys met are not those of the first pass
        if memo is not None:
            _verdicts.drop(memo)
        raise OSError(f"the file changed while it was read (its runs of {key} are not those of the first pass)")
    if texts:
        yield start, parsed_batch(texts, objs)


def _text(record: dict, key: str, exotic: set) -> str:
    """A record's JSON text: orjson's, unless a value of it is one orjson writes otherwise than
    Python's json (NaN or an infinity from `$numberDouble`: its key is in `exotic`), or refuses
    to write (an integer past 64 bits, nesting past 254 levels): Python's json then. orjson
    reads such an integer back as a float without a word (the reader reads a line that may hold
    one with Python's json: _maybe_wide); the walk takes the records themselves, not this text."""
    if exotic and record[key] in exotic:
        return json.dumps(record, ensure_ascii=False)
    try:
        return orjson.dumps(record).decode()
    except orjson.JSONEncodeError:
        return json.dumps(record, ensure_ascii=False)


class _Seen:
    """What the second pass met: its runs of one key (`runs`, as _contiguous sums them up, to
    check against the first pass), and the keys of documents with a NaN or an infinity (their
    records' text is Python's json: orjson writes those as null)."""

    def __init__(self) -> None:
        self.runs = 0
        self.exotic: set = set()


class _Verdicts:
    """The first passes' answers, (contiguous, runs of one key summed up), by unit version: the last
    VERDICTS, shared by the threads of a process."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.kept: OrderedDict = OrderedDict()

    def get(self, memo: Hashable) -> tuple[bool, int] | None:
        with self.lock:
            return self.kept.get(memo)

    def put(self, memo: Hashable, verdict: tuple[bool, int]) -> None:
        with self.lock:
            self.kept[memo] = verdict
            while len(self.kept) > VERDICTS:
                self.kept.popitem(last=False)

    def drop(self, memo: Hashable) -> None:
        with self.lock:
            self.kept.pop(memo, None)


_verdicts = _Verdicts()


def _contiguous(fh: BinaryIO, key: str, max_record_bytes: int, replace: bool) -> tuple[bool, int]:
    """Whether every key's lines follow one another, and the runs of one key summed up (their
    keys in order, hashed: the second pass checks it met the same); the first pass, which keeps
    only the keys."""
    seen: set = set()
    current = object()
    runs = 0
    for items in _documents(fh, key, [], max_record_bytes, replace, whole=False):
        for k in items:
            if type(k) is BadRow:
                continue
            if k != current:
                if k in seen:
                    return False, 0
                seen.add(k)
                current = k
                runs = hash((runs, k))
    return True, runs


def _groups(
    fh: BinaryIO,
    key: str,
    bad: list[BadRow],
    max_record_bytes: int,
    replace: bool,
    contiguous: bool,
    seen: _Seen,
) -> Iterator[dict | BadRow]:
    """Grouped records, and bad lines as they are met (a bad line found by the line reader
    itself, one over max_record_bytes, is in `bad` and passed on too)."""
    held: dict = {}
    current: object = _NONE
    docs: list = []
    for items in _documents(fh, key, bad, max_record_bytes, replace, exotic=seen.exotic):
        for doc in items:
            if type(doc) is BadRow:
                yield doc
                continue
            if type(doc) is _Unread:  # a line too deep to read: its key still in the runs, as in the first pass
                if contiguous and doc.key != current:
                    if docs:
                        yield {key: current, LINES: docs}
                    current, docs = doc.key, []
                    seen.runs = hash((seen.runs, doc.key))
                continue
            k = doc[key]
            if not contiguous:
                held.setdefault(k, []).append(doc)
            elif k == current:
                docs.append(doc)
            else:
                if docs:
                    yield {key: current, LINES: docs}
                current, docs = k, [doc]
                seen.runs = hash((seen.runs, k))
    if docs:
        yield {key: current, LINES: docs}
    for k, kept in held.items():
        yield {key: k, LINES: kept}


_NONE = object()


class _Unread:
    """The key of a line nested too deep to read, for the second pass's runs: the first pass,
    which reads only keys, counted it."""

    __slots__ = ("key",)

    def __init__(self, key: str) -> None:
        self.key = key


def _documents(
    fh: BinaryIO,
    key: str,
    bad: list[BadRow],
    max_record_bytes: int,
    replace: bool,
    whole: bool = True,
    exotic: set | None = None,
) -> Iterator[list]:
    """Per block of lines, the document (`whole`; else, for the first pass, only its key) or a
    BadRow of each non-blank line, in the file's order. `exotic`: where the keys of documents
    with a NaN or an infinity are gathered."""
    mine: list[BadRow] = []
    blocks = LineBlocks(fh, mine, max_record_bytes)
    for data in blocks:
        if mine:  # over-long lines the reader streamed past
            bad.extend(mine)
            yield list(mine)
            mine.clear()
        lines = data.split(b"\n")
        # a document's values are wanted whole (the second pass): is there an integer orjson cannot hold?
        exact = whole and _maybe_wide(data)
        found = None if b"\x00" in data else _plain_block(lines, key, whole, exotic, exact)
        if found is not None:
            yield found
            blocks.done(data, len(found))
            continue
        out: list = []
        line0 = blocks.line
        records = 0
        for i, raw in enumerate(lines):
            raw = raw.rstrip(b"\r")
            if not raw.strip():
                continue
            records += 1
            odd: list = []
            text, doc, reason = check_line(raw, replace)
            if reason is None and _maybe_wide(text):
                try:
                    doc = json.loads(text)  # its integers as written (orjson's are floats past 64 bits)
                except RecursionError:
                    reason = TOO_DEEP
            if reason is None and not isinstance(doc, dict):
                reason = Reason("not an object", f"not a JSON object (a {type(doc).__name__})")
            elif reason is None and isinstance(doc, dict):
                try:
                    if whole:
                        doc = plain(doc, odd)
                    elif isinstance(doc.get(key), dict):
                        doc[key] = plain(doc[key], depth=2)
                    k = doc.get(key) if isinstance(doc, dict) else None  # a lone {"$oid": ...} is plain text
                    if not isinstance(k, (str, int)) or k == "":
                        reason = Reason("no key", f"has no {key} (text): cannot tell its conversation")
                except _TooDeep:
                    k, reason = doc.get(key), TOO_DEEP
            if reason is not None:
                b = BadRow(0, f"line {line0 + i}", reason, preview(text))
                bad.append(b)
                out.append(b)
                if reason is TOO_DEEP and whole and isinstance(k, str) and k:
                    out.append(_Unread(k))  # the first pass, which reads only keys, counted its key
                continue
            if isinstance(doc, dict):
                if odd and exotic is not None:
                    exotic.add(doc[key])
                out.append(doc if whole else doc[key])
        yield out
        blocks.done(data, records)
    if mine:
        bad.extend(mine)
        yield list(mine)


def _plain_block(lines: list[bytes], key: str, whole: bool, exotic: set | None, exact: bool = False) -> list | None:
    """The documents (`whole`) or keys of a block's non-blank lines when every one is a JSON
    object whose key is non-empty text; None when one is not (the block is then read line by
    line, each bad line with its reason). orjson reads what check_line reads: it refuses bytes
    that are not UTF-8 as check_line does (the caller sends a block with NUL bytes line by line
    anyway), and a line's trailing `\\r` is JSON whitespace to it. Line by line, each parsed
    document made plain at once: a block's parsed documents all held at once cost the garbage
    collector more than the parse (measured: 2.3 s against 1.1 s on the benchmark's export).
    `exact`: the block may hold an integer past 64 bits (_maybe_wide); a line that may is read
    again by Python's json, which keeps its value (the first pass takes only text keys, which
    orjson reads right: a key that is a number goes line by line)."""
    out: list = []
    odd: list = []
    loads = orjson.loads
    try:
        for raw in lines:
            if not raw.strip():
                continue
            doc = loads(raw)
            if exact and _maybe_wide(raw):
                doc = json.loads(raw)
            k = doc[key]
            if type(k) is not str or not k:
                return None
            if not whole:
                out.append(k)
                continue
            out.append(plain(doc, odd))
            if odd:
                if exotic is not None:
                    exotic.add(k)
                odd.clear()
    except (orjson.JSONDecodeError, KeyError, TypeError, _TooDeep, RecursionError):
        return None
    return out


#: digits as 0, what may come before a number in JSON (`:` `,` `[`, white space, `-`) as x, the rest
#: as space: an integer of 19 digits or more is then x and nineteen 0s (20 digits pass 2**64, 19
#: with a minus sign pass -2**63, where orjson gives a float)
_WIDE = bytes(48 if 48 <= c <= 57 else 120 if chr(c) in ":,[ \t\r\n-" else 32 for c in range(256))
_WIDE_MARK = b"x" + b"0" * 19


def _maybe_wide(data: bytes) -> bool:
    """Whether `data` may hold an integer orjson reads as a float (past 64 bits): a run of 19
    digits or more after a character a number may follow (in a string too: read again, the same
    value). About 0.45 ms a MiB."""
    return _WIDE_MARK in data.translate(_WIDE)


def plain(value, odd: list | None = None, depth: int = 1):
    """A value of MongoDB Extended JSON as plain JSON (the wrappers named in the module's text).
    `odd`: gets each NaN or infinity made (from `$numberDouble`). `depth`: the value's level in
    its line; past MAX_DEPTH, _TooDeep."""
    if isinstance(value, list):
        if depth > MAX_DEPTH:
            raise _TooDeep
        depth += 1
        return [plain(v, odd, depth) if isinstance(v, (dict, list)) else v for v in value]
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
            if v in ("NaN", "Infinity", "-Infinity"):
                return v
            try:
                f = float(v)
            except ValueError:
                return v
            if odd is not None and not math.isfinite(f):
                odd.append(f)
            return f
        if k == "$numberDecimal":
            return v
    if depth > MAX_DEPTH:
        raise _TooDeep
    depth += 1
    # most values are scalars: no call for them (this runs for every field of every line)
    return {k: plain(v, odd, depth) if isinstance(v, (dict, list)) else v for k, v in value.items()}


class _TooDeep(Exception):
    """A line nested deeper than MAX_DEPTH levels (its containers below that level not visited)."""


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
