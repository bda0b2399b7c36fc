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

The blocks (blocks.py) and the recovery of a bad block (recover.py) are their own modules.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.errors import NotJsonl
from tasks.extract.blocks import BLOCK_BYTES, RECORD_COLUMN, ROW_COLUMN, LineBlocks, check_line, fast_ok, preview
from tasks.extract.depth import MAX_DEPTH
from tasks.extract.recover import Block, as_schema, read_lines, records_in, slow_block
from tasks.quarantine import BadRow, Reason

#: a nested record deeper than this is one bad line, as a JSON document's record is (depth.py): the
#: explode recurses per level (Arrow's types, a message's parts) and Python's stack ends near 500
TOO_DEEP = Reason("nested too deep", f"nested deeper than {MAX_DEPTH} levels: not read")

#: the first block of a file with this many bad lines and no good one is not JSONL at all
NOT_JSONL_AFTER = 10


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
                table = read_lines([data], schema)
                records = table.num_rows
                if not records_in(data, records):  # two objects on one line, say: find the line
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


def record_batches(
    fh: BinaryIO, bad: list[BadRow], max_record_bytes: int, replace: bool, block_bytes: int = BLOCK_BYTES
) -> Iterator[tuple[int, pa.RecordBatch]]:
    """(record number, batch of RECORD_COLUMN: one non-blank line's JSON text a row) of a
    nested JSONL stream. A line that does not decode or is nested too deep is a BadRow; a
    line that is not JSON is left to tasks/nest/, which quarantines it with the record's
    shape problems. Batches are runs of consecutive records, so row numbers stay `offset + i`.
    A line nested deeper than MAX_DEPTH levels is a BadRow too (found by the line's count of
    `[` and `{` first: a block with no line over MAX_DEPTH of them takes the fast path)."""
    blocks = LineBlocks(fh, bad, max_record_bytes, block_bytes)
    for data in blocks:
        rec0, line0 = blocks.record, blocks.line
        if fast_ok(data) and not _openers_over(data, MAX_DEPTH):
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
            text, value, reason = check_line(raw, replace)
            if reason is None and raw.count(b"[") + raw.count(b"{") > MAX_DEPTH and _deeper(value, MAX_DEPTH):
                reason = TOO_DEEP
            if reason is not None and reason.kind != "not JSON":
                if run:
                    yield start, pa.record_batch({RECORD_COLUMN: pa.array(run, pa.string())})
                bad.append(BadRow(rec, f"line {line0 + i}", reason, preview(text)))
                run, start = [], rec + 1
            else:
                run.append(text.decode("utf-8", "replace"))
            rec += 1
        blocks.done(data, rec - rec0)
        if run:
            yield start, pa.record_batch({RECORD_COLUMN: pa.array(run, pa.string())})


def _openers_over(data: bytes, limit: int) -> bool:
    """Whether a line of `data` holds more than `limit` of `[` and `{` (in strings or not): only
    such a line can nest deeper than `limit`. About 3 ms for 8 MiB."""
    a = np.frombuffer(data, np.uint8)
    opens = np.flatnonzero((a | 32) == 123)  # `[` (0x5b) and `{` (0x7b), and no other byte
    if len(opens) <= limit:
        return False
    ends = np.searchsorted(opens, np.flatnonzero(a == 10))  # openers before each line's end
    return bool(np.diff(ends, prepend=0, append=len(opens)).max() > limit)


def _deeper(value: object, limit: int) -> bool:
    """Whether a parsed JSON value nests deeper than `limit` levels (itself the first); without
    recursion, so any depth orjson reads is measured."""
    todo = [(value, 1)] if isinstance(value, (dict, list)) else []
    while todo:
        v, level = todo.pop()
        if level > limit:
            return True
        for x in v.values() if isinstance(v, dict) else v:
            if isinstance(x, (dict, list)):
                todo.append((x, level + 1))
    return False
