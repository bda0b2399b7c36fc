"""Lines: JSONL read at Arrow's speed, where one bad line costs that line and nothing else.

The stream is cut into blocks of whole lines (`BLOCK_BYTES`; a longer line is read whole, up
to `source.max_record_bytes`, and beyond that streamed past and quarantined with its size).
Each block takes the fast path when it can: checked to be UTF-8 without NUL bytes and without
a line nested deep enough to overflow Arrow's recursive parser (`OPENERS_PER_LINE`), then
parsed by Arrow in one call. A block that fails has its bad lines found (`Block.recover`):
bytes that are not UTF-8 by a decode that names the byte, NUL bytes by a search, then Arrow
parses the good lines in pieces and its own errors name the row that is bad; each is cut out
and the rest parsed, so a block with a few bad lines costs about one more parse. Past
RECOVERIES bad lines in a block, or when a file's first rows disagree on a field's type, the
block is read line by line (orjson, which checks UTF-8 and stops at 1,024 levels; a field's
type is then the block's majority). Either way a line that does not decode, is not JSON, is
not an object, or whose fields have another JSON type than the other rows' becomes a
`BadRow`. A file with one bad line among millions is one slower block, not a slow file.

Records are numbered as Arrow numbers rows: non-blank lines from 0, bad ones included, so a
good row's `source_row` does not move when a line before it is fixed. Physical line numbers
(from 1, blank lines included) are what a person opens the file at: quarantine rows give both.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterator
from typing import BinaryIO

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

from core.errors import NotJsonl
from tasks.quarantine import PREVIEW_CHARS, BadRow, Reason

BLOCK_BYTES = 8 << 20
#: a line with this many `[`/`{` is checked by orjson before Arrow sees it: Arrow's parser
#: recurses per level and overflowed the C stack between 5,000 and 20,000 levels here
OPENERS_PER_LINE = 4096
#: the first block of a file with this many bad lines and no good one is not JSONL at all
NOT_JSONL_AFTER = 10
RECORD_COLUMN = "__record__"  # nested sources: the JSON text of one record
ROW_COLUMN = "__memos_etl_row__"  # flat sources: a row's record number, when lines before it were dropped


TOO_DEEP = Reason("nested too deep", "nested deeper than 1,024 levels: not read")
NUL_BYTES = Reason("NUL bytes", "holds NUL bytes: not a JSON line")


class LineBlocks:
    """Blocks of whole lines of a stream; over-long lines are reported in `bad` and skipped
    without being held. `line` and `record` are where the next block starts: the caller
    advances `record` by the records it found in each block (`done`)."""

    def __init__(self, fh: BinaryIO, bad: list[BadRow], max_record_bytes: int, block_bytes: int = BLOCK_BYTES):
        self.fh, self.bad = fh, bad
        self.max_record = max_record_bytes
        self.block_bytes = min(block_bytes, max_record_bytes)
        self.line, self.record = 1, 0

    def __iter__(self) -> Iterator[bytes]:
        pending: list[bytes] = []  # pieces of a line not yet ended
        held = 0
        skipped = -1  # bytes of an oversized line streamed past so far; -1 when not skipping
        head = b""
        while True:
            chunk = self._read()
            if not chunk:
                break
            if skipped >= 0:
                nl = chunk.find(b"\n")
                if nl < 0:
                    skipped += len(chunk)
                    continue
                self._oversized(head, skipped + nl)
                skipped, chunk = -1, chunk[nl + 1 :]
                if not chunk:
                    continue
            cut = chunk.rfind(b"\n")
            if cut < 0:
                pending.append(chunk)
                held += len(chunk)
                if held > self.max_record:
                    head = b"".join(pending)[:PREVIEW_CHARS]
                    skipped, pending, held = held, [], 0
                continue
            data = b"".join((*pending, chunk[: cut + 1])) if pending else chunk[: cut + 1]
            rest = chunk[cut + 1 :]
            pending, held = ([rest], len(rest)) if rest else ([], 0)
            first = data.find(b"\n")
            if first > self.max_record:  # the line that was pending ended over the limit
                self._oversized(data[:PREVIEW_CHARS], first)
                data = data[first + 1 :]
                if not data:
                    continue
            yield data
        if skipped >= 0:
            self._oversized(head, skipped)
        elif pending:
            data = b"".join(pending)
            if data.strip():
                yield data

    def _read(self) -> bytes:
        """A whole block (or the rest): streams may return less than asked, and the first
        block's size decides the types a file is read with."""
        chunk = self.fh.read(self.block_bytes)
        if not chunk or len(chunk) >= self.block_bytes:
            return chunk
        parts, size = [chunk], len(chunk)
        while size < self.block_bytes:
            more = self.fh.read(self.block_bytes - size)
            if not more:
                break
            parts.append(more)
            size += len(more)
        return b"".join(parts)

    def _oversized(self, head: bytes, size: int) -> None:
        self.bad.append(
            BadRow(
                self.record,
                f"line {self.line}",
                Reason(
                    "too long",
                    f"{size:,} bytes, more than "
                    f"source.max_record_bytes={self.max_record:,}: not read (raise the limit to load it)",
                ),
                head.decode("utf-8", "replace"),
            )
        )
        self.line += 1
        self.record += 1

    def done(self, data: bytes, records: int) -> None:
        """The block `data` held `records` records: move the counters past it."""
        self.line += data.count(b"\n") + (0 if data.endswith(b"\n") else 1)
        self.record += records


def fast_ok(data: bytes) -> bool:
    """The block can go to Arrow whole: UTF-8 (Arrow's JSON reader does not check it), no
    NUL bytes (Arrow stops a document at one), no line deep enough to crash its parser."""
    if b"\x00" in data:
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return not _maybe_deep(data)


def _maybe_deep(data: bytes) -> bool:
    if data.count(b"[") + data.count(b"{") < OPENERS_PER_LINE:
        return False
    a = np.frombuffer(data, np.uint8)
    opens = np.flatnonzero((a == 91) | (a == 123))
    per_line = np.bincount(np.searchsorted(np.flatnonzero(a == 10), opens))
    return bool(per_line.max() >= OPENERS_PER_LINE)


def check_line(raw: bytes, replace: bool) -> tuple[bytes, object | None, Reason | None]:
    """(the line as UTF-8, its parsed value, None) or (line, None, reason in our words)."""
    if b"\x00" in raw:
        return raw, None, NUL_BYTES
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        if not replace:
            return (
                raw,
                None,
                Reason(
                    "not valid UTF-8",
                    f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column "
                    f"{exc.start + 1}); set source.encoding for another encoding, or "
                    "source.encoding_errors: replace",
                ),
            )
        raw = raw.decode("utf-8", "replace").encode("utf-8")
    try:
        return raw, orjson.loads(raw), None
    except orjson.JSONDecodeError as exc:
        msg = str(exc)
        if "recursion" in msg or "depth" in msg:
            return raw, None, TOO_DEEP
        return raw, None, Reason("not JSON", f"not JSON ({msg})")


def _preview(raw: bytes) -> str:
    return raw[:PREVIEW_CHARS].decode("utf-8", "replace")


def _kind(v) -> str:
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, int):
        return "an integer"
    if isinstance(v, float):
        return "a number"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, dict):
        return "an object"
    return "an array"


def _arrow_kind(t: pa.DataType) -> str | None:
    """The JSON kind an Arrow column of this type takes, None when any kind may be converted."""
    if pa.types.is_boolean(t):
        return "a boolean"
    if pa.types.is_integer(t):
        return "an integer"
    if pa.types.is_floating(t):
        return "a number"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_timestamp(t):
        return "a string"
    if pa.types.is_struct(t):
        return "an object"
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return "an array"
    return None


def _fits(kind: str, want: str) -> bool:
    return kind == want or (want == "a number" and kind == "an integer")


def _schema_kinds(rows: list[dict], schema: pa.Schema | None) -> dict[str, str]:
    """The JSON kind each field must have: the schema's, or (first block) the most common one."""
    if schema is not None:
        return {f.name: k for f in schema if (k := _arrow_kind(f.type)) is not None}
    tally: dict[str, dict[str, int]] = {}
    for r in rows:
        for k, v in r.items():
            if v is not None:
                kind = _kind(v)
                kind = "a number" if kind == "an integer" else kind
                counts = tally.setdefault(k, {})
                counts[kind] = counts.get(kind, 0) + 1
    return {k: max(c, key=c.__getitem__) for k, c in tally.items()}


def _read(lines: list[bytes], schema: pa.Schema | None) -> pa.Table:
    data = b"\n".join(lines)
    parse = (
        pajson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="infer") if schema is not None else None
    )
    opts = pajson.ReadOptions(block_size=len(data) + 64, use_threads=False)  # one block: nothing to share out
    return pajson.read_json(pa.BufferReader(data), read_options=opts, parse_options=parse)


def _isolate(lines: list[bytes], recs: list[int], schema: pa.Schema | None, where, bad: list[BadRow]):
    """Arrow tables of `lines`, halving around what Arrow refuses until the refused lines are
    single (a type conflict inside nested values, a string that is not the timestamp the
    column holds). Rare: lines reach here only after the per-line checks passed them."""
    try:
        return [(_read(lines, schema), recs)]
    except pa.ArrowInvalid as exc:
        if len(lines) == 1:
            bad.append(
                BadRow(
                    recs[0],
                    where(recs[0]),
                    Reason("a value of another type", f"its values do not fit the other rows' types ({exc})"),
                    _preview(lines[0]),
                )
            )
            return []
    mid = len(lines) // 2
    left = _isolate(lines[:mid], recs[:mid], schema, where, bad)
    if schema is None and left:
        schema = as_schema(left[0][0].schema)
    return left + _isolate(lines[mid:], recs[mid:], schema, where, bad)


def as_schema(schema: pa.Schema) -> pa.Schema:
    """The types a file's later blocks are read with: the first block's, null columns as text
    (so a later block with values does not conflict), without our own row column."""
    return pa.schema(
        [f.with_type(pa.string()) if pa.types.is_null(f.type) else f for f in schema if f.name != ROW_COLUMN]
    )


def slow_block(
    data: bytes, line0: int, rec0: int, schema: pa.Schema | None, replace: bool, bad: list[BadRow]
) -> tuple[pa.Table | None, int]:
    """A block Arrow could not take whole, line by line: (its good rows, with their record
    numbers in ROW_COLUMN; records in the block, good and bad)."""
    raws, recs, rows, lines_at = [], [], [], {}
    rec = rec0
    for i, raw in enumerate(data.split(b"\n")):
        raw = raw.rstrip(b"\r")
        if not raw.strip():
            continue
        lines_at[rec] = line0 + i
        text, value, reason = check_line(raw, replace)
        if reason is None and not isinstance(value, dict):
            reason = _not_object("null" if value is None else _kind(value))
        if reason is not None:
            bad.append(BadRow(rec, f"line {line0 + i}", reason, _preview(text)))
        else:
            raws.append(text)
            recs.append(rec)
            rows.append(value)
        rec += 1
    kinds = _schema_kinds(rows, schema)
    keep = []
    for j, r in enumerate(rows):
        wrong = next(
            ((k, _kind(v)) for k, v in r.items() if v is not None and k in kinds and not _fits(_kind(v), kinds[k])),
            None,
        )
        if wrong is None:
            keep.append(j)
        else:
            bad.append(
                BadRow(
                    recs[j],
                    f"line {lines_at[recs[j]]}",
                    _other_type(wrong[0], wrong[1], kinds[wrong[0]]),
                    _preview(raws[j]),
                )
            )
    if len(keep) < len(rows):
        raws, recs = [raws[j] for j in keep], [recs[j] for j in keep]
    records = rec - rec0
    if not raws:
        return None, records
    parts = _isolate(raws, recs, schema, lambda r: f"line {lines_at[r]}", bad)
    if not parts:
        return None, records
    tables = [t.append_column(ROW_COLUMN, pa.array(rs, pa.int64())) for t, rs in parts]
    table = pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]
    return table, records


def flat_batches(
    fh: BinaryIO, bad: list[BadRow], max_record_bytes: int, replace: bool, block_bytes: int = BLOCK_BYTES
) -> Iterator[tuple[int, pa.RecordBatch]]:
    """(record number of the batch's first row, batch) of a flat JSONL stream; bad lines in
    `bad`. The first block's types are the file's; a later block is read with them (new
    fields inferred), so a line with a field of another type is that line's problem."""
    blocks = LineBlocks(fh, bad, max_record_bytes, block_bytes)
    schema: pa.Schema | None = None
    for data in blocks:
        line0, rec0 = blocks.line, blocks.record
        table = None
        if fast_ok(data):
            try:
                table = _read([data], schema)
                records = table.num_rows
                if not _records_in(data, records):  # two objects on one line, say: find the line
                    table = None
            except pa.ArrowInvalid:
                table = None
        if table is None:
            before = len(bad)
            found = Block(data, line0, rec0).recover(schema, replace, bad)  # adds to `bad` only when it succeeds
            if found is None:  # too many to cut out one by one, or the first block's types in question
                table, records = slow_block(data, line0, rec0, schema, replace, bad)
            else:
                table, records = found
            if schema is None and table is None and len(bad) - before >= min(NOT_JSONL_AFTER, records):
                first = bad[before]
                raise NotJsonl(f"no line of the first {records} is a JSON object ({first.where}: {first.reason})")
        blocks.done(data, records)
        if table is None or table.num_rows == 0:
            continue
        if schema is None:
            schema = as_schema(table.schema)
        for rb in table.combine_chunks().to_batches():
            yield (rec0 if ROW_COLUMN not in rb.schema.names else int(rb.column(ROW_COLUMN)[0].as_py())), rb


#: at most this many bad lines are cut out of a block by Arrow's own error messages; beyond,
#: the block is read line by line (orjson), which costs the same whatever the number
RECOVERIES = 64
#: a block with bad lines is parsed in pieces of about this many bytes
PIECE_BYTES = 256 << 10
#: in a file's first block, a field's type is the one its first rows agree on when at least this
#: many do before a row differs; fewer, and the block's majority decides (line by line)
FIRST_AGREE = 16
_CHANGED = re.compile(r"Column\(([^)]*)\) changed from (\w+) to (\w+) in row (\d+)")
_IN_ROW = re.compile(r"JSON parse error: (.*?)\.? in row (\d+)$")
_KINDS = {
    "object": "an object",
    "array": "an array",
    "string": "a string",
    "number": "a number",
    "boolean": "a boolean",
    "null": "null",
}


class Block:
    """A block Arrow could not take whole, its bad lines found from Arrow's own errors (which
    name the row) and a UTF-8 check that names the byte: the good lines are parsed by Arrow
    in runs between the bad ones, so a block with a few bad lines costs about two parses."""

    def __init__(self, data: bytes, line0: int, rec0: int):
        self.data, self.line0, self.rec0 = data, line0, rec0
        a = np.frombuffer(data, np.uint8)
        nl = np.flatnonzero(a == 10)
        self.starts = np.r_[0, nl + 1]
        self.ends = np.r_[nl, len(data)]
        if data.endswith(b"\n"):
            self.starts, self.ends = self.starts[:-1], self.ends[:-1]
        # blank lines are not records: a line is blank when empty or all whitespace (only the
        # lines that start with whitespace are looked at one by one: few)
        first = a[np.minimum(self.starts, len(data) - 1)] if len(data) else np.empty(0, np.uint8)
        maybe = np.flatnonzero((self.starts >= self.ends) | (first == 32) | (first == 9) | (first == 13))
        blank = [int(i) for i in maybe if not data[self.starts[i] : self.ends[i]].strip()]
        self.lines = np.delete(np.arange(len(self.starts)), blank)  # record -> line in the block
        self.bad: dict[int, Reason] = {}  # record in the block -> reason

    def _line_of(self, pos: int) -> int:
        return int(np.searchsorted(self.ends, pos))

    def _mark(self, line: int, reason: Reason) -> None:
        r = int(np.searchsorted(self.lines, line))
        if r < len(self.lines) and self.lines[r] == line:
            self.bad.setdefault(r, reason)

    def _raw(self, r: int) -> bytes:
        return self._raw_line(int(self.lines[r]))

    def recover(self, schema: pa.Schema | None, replace: bool, bad: list[BadRow]):
        """(good rows with ROW_COLUMN, records in the block), or None for the line-by-line read."""
        data = self.data
        pos = 0
        view = memoryview(data)
        while pos < len(data):  # each bad byte once: the decode goes on after its line
            try:
                codecs.utf_8_decode(view[pos:], "strict", True)
                break
            except UnicodeDecodeError as exc:
                if replace:
                    return None
                line = self._line_of(pos + exc.start)
                self._mark(
                    line, check_line(self._raw_line(line), False)[2] or Reason("not valid UTF-8", "not valid UTF-8")
                )
                pos = int(self.ends[line]) + 1
        pos = data.find(b"\x00")
        while pos >= 0:
            line = self._line_of(pos)
            self._mark(line, NUL_BYTES)
            pos = data.find(b"\x00", int(self.ends[line]) + 1)
        if _maybe_deep(data):
            for r in range(len(self.lines)):
                raw = self._raw(r)
                if r not in self.bad and raw.count(b"[") + raw.count(b"{") >= OPENERS_PER_LINE:
                    reason = check_line(raw, False)[2]
                    if reason is not None:
                        self.bad[r] = reason
        if len(self.bad) > RECOVERIES:
            return None
        parts: list[tuple[pa.Table, np.ndarray]] = []
        # pieces of about PIECE_BYTES: a bad line Arrow finds costs the parse of its piece up
        # to it, not of the block
        rec_at = self.starts[self.lines]
        todo = []
        for lo, hi in self._runs(0, len(self.lines)):
            cuts = np.searchsorted(rec_at[lo:hi], np.arange(rec_at[lo] + PIECE_BYTES, rec_at[hi - 1], PIECE_BYTES))
            edges = [lo, *(lo + int(c) for c in np.unique(cuts) if 0 < c < hi - lo), hi]
            todo.extend(zip(edges[:-1], edges[1:]))
        while todo:
            lo, hi = todo.pop(0)
            try:
                t = _read([self._span(lo, hi)], schema)
            except pa.ArrowInvalid as exc:
                msg = str(exc)
                changed, in_row = _CHANGED.search(msg), _IN_ROW.search(msg)
                row = int((changed or in_row).group(changed.lastindex if changed else 2)) if changed or in_row else -1
                if row < 0 or lo + row >= hi:  # no row named (a value that does not convert): halve
                    if hi - lo == 1:
                        self.bad[lo] = _conversion_reason(msg, self._raw(lo))
                    else:
                        mid = (lo + hi) // 2
                        todo[:0] = [(lo, mid), (mid, hi)]
                    continue
                if changed and schema is None and changed.group(1).strip("/") and row < FIRST_AGREE:
                    return None  # the file's first rows disagree: which type is the file's is a majority question
                # a syntax error in orjson's words (it names the column); a type change in ours
                self.bad[lo + row] = (None if changed else check_line(self._raw(lo + row), False)[2]) or _arrow_reason(
                    changed, in_row
                )
                if len(self.bad) > RECOVERIES:
                    return None
                todo[:0] = [x for x in ((lo, lo + row), (lo + row + 1, hi)) if x[0] < x[1]]
                continue
            if t.num_rows != hi - lo:  # two objects on one line somewhere in the run
                return None
            parts.append((t, np.arange(self.rec0 + lo, self.rec0 + hi, dtype=np.int64)))
            if schema is None:
                schema = as_schema(t.schema)
        for r in sorted(self.bad):
            bad.append(
                BadRow(self.rec0 + r, f"line {self.line0 + int(self.lines[r])}", self.bad[r], _preview(self._raw(r)))
            )
        records = len(self.lines)
        if not parts:
            return None, records
        tables = [t.append_column(ROW_COLUMN, pa.array(rs)) for t, rs in parts]
        return (pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]), records

    def _raw_line(self, line: int) -> bytes:
        return self.data[self.starts[line] : self.ends[line]].rstrip(b"\r")

    def _runs(self, lo: int, hi: int) -> list[tuple[int, int]]:
        """Runs of records in [lo, hi) between the bad ones."""
        out, start = [], lo
        for r in sorted(b for b in self.bad if lo <= b < hi):
            if start < r:
                out.append((start, r))
            start = r + 1
        if start < hi:
            out.append((start, hi))
        return out

    def _span(self, lo: int, hi: int) -> bytes:
        return self.data[self.starts[self.lines[lo]] : self.ends[self.lines[hi - 1]]]


_CONVERT = re.compile(r"Failed to convert JSON to (\S+), couldn't parse:(.*)$", re.S)


def _conversion_reason(msg: str, raw: bytes) -> Reason:
    """A value Arrow could not convert to its column's type, with the field that holds it."""
    m = _CONVERT.search(msg)
    if m is None:
        return Reason("a value of another type", f"its values do not fit the other rows' types ({msg.splitlines()[0]})")
    want, value = m.group(1), m.group(2)
    try:
        row = orjson.loads(raw)
    except orjson.JSONDecodeError:
        row = {}
    name = (
        next((k for k, v in row.items() if isinstance(v, (str, int, float)) and str(v) == value), None)
        if isinstance(row, dict)
        else None
    )
    return Reason(
        "a value that does not convert",
        f"field {name!r} holds {value[:100]!r}, not a {want} like the rows before it"
        if name
        else f"the value {value[:100]!r} is not a {want} like its field in the rows before it",
    )


def _arrow_reason(changed, in_row) -> Reason:
    """Arrow's JSON error for one row, in our words."""
    if changed:
        path, was, now = changed.group(1), changed.group(2), changed.group(3)
        if not path.strip("/"):  # the line itself
            return _not_object(_KINDS.get(now, now))
        return _other_type(path.strip("/").replace("/", "."), _KINDS.get(now, now), _KINDS.get(was, was))
    return Reason("not JSON", f"not JSON ({in_row.group(1).lower()})")


def _not_object(kind: str) -> Reason:
    return Reason("not a JSON object", f"{kind}, not a JSON object")


def _other_type(name: str, kind: str, others: str) -> Reason:
    return Reason("a field of another type", f"field {name!r} is {kind} where the other rows have {others}")


def _records_in(data: bytes, rows: int) -> bool:
    """Arrow's `rows` are the block's non-blank lines (not so for two objects on one line)."""
    if rows == data.count(b"\n") + (0 if data.endswith(b"\n") else 1):
        return True
    return rows == sum(1 for line in data.split(b"\n") if line.strip())


def record_batches(
    fh: BinaryIO, bad: list[BadRow], max_record_bytes: int, replace: bool, block_bytes: int = BLOCK_BYTES
) -> Iterator[tuple[int, pa.RecordBatch]]:
    """(record number, batch of RECORD_COLUMN: one non-blank line's JSON text a row) of a
    nested JSONL stream. A line that does not decode or is nested too deep is a BadRow; a
    line that is not JSON is left to tasks/nest.py, which quarantines it with the record's
    shape problems. Batches are runs of consecutive records, so row numbers stay `offset + i`."""
    blocks = LineBlocks(fh, bad, max_record_bytes, block_bytes)
    for data in blocks:
        rec0, line0 = blocks.record, blocks.line
        if fast_ok(data):
            text = pa.array([data.decode("utf-8")], pa.string())
            lines = pc.utf8_rtrim(pc.list_flatten(pc.split_pattern(text, "\n")), "\r")
            lines = lines.filter(pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(lines)), 0))
            blocks.done(data, len(lines))
            if len(lines):
                yield rec0, pa.record_batch({RECORD_COLUMN: lines})
            continue
        run: list[str] = []
        start = rec = rec0
        for i, raw in enumerate(data.split(b"\n")):
            raw = raw.rstrip(b"\r")
            if not raw.strip():
                continue
            text, _, reason = check_line(raw, replace)
            if reason is not None and reason.kind != "not JSON":
                if run:
                    yield start, pa.record_batch({RECORD_COLUMN: pa.array(run, pa.string())})
                bad.append(BadRow(rec, f"line {line0 + i}", reason, _preview(text)))
                run, start = [], rec + 1
            else:
                run.append(text.decode("utf-8", "replace"))
            rec += 1
        blocks.done(data, rec - rec0)
        if run:
            yield start, pa.record_batch({RECORD_COLUMN: pa.array(run, pa.string())})
