"""A block Arrow refused, cut down to its bad lines: Arrow's own errors name the row in
256 KiB pieces, halving finds a value that does not convert, and past RECOVERIES bad lines
(or when the first rows disagree on a type) the block is read line by line (orjson and the
block's majority type per field). Why by hand: Arrow's JSON reader has no invalid-row handler."""

from __future__ import annotations

import codecs
import re
from typing import cast

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.json as pajson

from tasks.extract.blocks import NUL_BYTES, OPENERS_PER_LINE, ROW_COLUMN, check_line, maybe_deep, preview
from tasks.quarantine import BadRow, Reason


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


def read_lines(lines: list[bytes], schema: pa.Schema | None) -> pa.Table:
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
        return [(read_lines(lines, schema), recs)]
    except pa.ArrowInvalid as exc:
        if len(lines) == 1:
            bad.append(
                BadRow(
                    recs[0],
                    where(recs[0]),
                    Reason("a value of another type", f"its values do not fit the other rows' types ({exc})"),
                    preview(lines[0]),
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
    raws: list[bytes] = []
    recs: list[int] = []
    rows: list[dict] = []
    lines_at: dict = {}
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
            bad.append(BadRow(rec, f"line {line0 + i}", reason, preview(text)))
        else:
            raws.append(text)
            recs.append(rec)
            rows.append(cast(dict, value))  # no reason: a JSON object
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
                    preview(raws[j]),
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
        if maybe_deep(data):
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
        todo: list[tuple[int, int]] = []
        for lo, hi in self._runs(0, len(self.lines)):
            cuts = np.searchsorted(rec_at[lo:hi], np.arange(rec_at[lo] + PIECE_BYTES, rec_at[hi - 1], PIECE_BYTES))
            edges = [lo, *(lo + int(c) for c in np.unique(cuts) if 0 < c < hi - lo), hi]
            todo.extend(zip(edges[:-1], edges[1:]))
        while todo:
            lo, hi = todo.pop(0)
            try:
                t = read_lines([self._span(lo, hi)], schema)
            except pa.ArrowInvalid as exc:
                msg = str(exc)
                changed, in_row = _CHANGED.search(msg), _IN_ROW.search(msg)
                if changed is not None:
                    row = int(changed.group(4))
                elif in_row is not None:
                    row = int(in_row.group(2))
                else:
                    row = -1
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
                BadRow(self.rec0 + r, f"line {self.line0 + int(self.lines[r])}", self.bad[r], preview(self._raw(r)))
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


def records_in(data: bytes, rows: int) -> bool:
    """Arrow's `rows` are the block's non-blank lines (not so for two objects on one line)."""
    if rows == data.count(b"\n") + (0 if data.endswith(b"\n") else 1):
        return True
    return rows == sum(1 for line in data.split(b"\n") if line.strip())
