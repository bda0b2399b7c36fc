"""JSONL as blocks of whole lines: read in full reads of about 8 MiB, a line longer than
source.max_record_bytes streamed past without being held (a BadRow), and the checks a block
passes before Arrow parses it in one call (UTF-8, no NUL, no line nested past Arrow's depth)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

import numpy as np
import orjson

from tasks.quarantine import PREVIEW_CHARS, BadRow, Reason

BLOCK_BYTES = 8 << 20


#: a line with this many `[`/`{` is checked by orjson before Arrow sees it: Arrow's parser
#: recurses per level and overflowed the C stack between 5,000 and 20,000 levels here
OPENERS_PER_LINE = 4096


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
    return not maybe_deep(data)


def maybe_deep(data: bytes) -> bool:
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


def preview(raw: bytes) -> str:
    return raw[:PREVIEW_CHARS].decode("utf-8", "replace")
