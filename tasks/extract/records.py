"""Records of nested sources, streamed: what tasks/nest/ explodes into messages.

A nested source holds one record per conversation (OpenAI chat JSONL, a ChatGPT export's
`conversations.json`, ShareGPT). Its records are read here as a stream, never a whole file:

- JSONL: blocks of whole lines (tasks/extract/lines.py `record_batches`; a line that does not decode
  is quarantined there, one that is not JSON by tasks/nest/ with the record's shape);
- JSON: a top-level array is read item by item by json's C scanner (`array_items`): each
  item's text is sliced from the document, and the parsed item kept for the walk, so a
  record is parsed once; `ITEMS` records at a time. The array inside an object
  (`source.records`, Telegram's `chats.list`) is read by ijson's C backend, which stops at
  an integer beyond 64 bits (`integer overflow`): that record and the rest are then
  quarantined as the document's break, never loaded with a wrong value. A top-level object
  is one record.

Each yields record batches of one column, RECORD_COLUMN, the record's JSON text: one shape
for the walk and the columnar explode alike (tasks/nest/), and for quarantine rows. Memory
is one block (or one record, when a record is larger) plus what the explode makes of it.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterator
from typing import BinaryIO

import pyarrow as pa

from core.errors import NotJson
from tasks.extract.blocks import RECORD_COLUMN
from tasks.extract.depth import MARK_TEXT, MAX_DEPTH, DepthGuard
from tasks.extract.streams import Prefixed
from tasks.quarantine import PREVIEW_CHARS, BadRow, Reason

BLOCK_BYTES = 8 << 20
ITEMS = 2048
_parsed = threading.local()


def parsed_batch(texts: list[str], objs: list) -> pa.RecordBatch:
    """A batch of record texts; the records as the reader parsed them are kept beside it
    (per thread, the last batch only) for the walk to take instead of parsing them again.
    They are found by the batch object itself (a weak reference, never its address: a batch
    freed unwalked leaves its memory to the next one, whose rows are others), and let go
    with it."""
    rb = pa.record_batch({RECORD_COLUMN: pa.array(texts, pa.string())})
    held = [objs]
    _parsed.last = (weakref.ref(rb, lambda _: held.clear()), held)
    return rb


def parsed_records(rb: pa.RecordBatch) -> list | None:
    """The records of `rb` as its reader parsed them, once (None: parse its texts): only for
    the very batch object the reader made, sliced or copied batches are parsed again."""
    last = getattr(_parsed, "last", None)
    if last is None or last[0]() is not rb or not last[1]:
        return None
    _parsed.last = None
    return last[1][0]


READ = 1 << 20  # bytes read from the stream at a time (more while one item is longer)
_WS = " \t\n\r"


def array_items(
    stream: DepthGuard,
    bad: list[BadRow] | None,
    max_record_bytes: int,
    items: int = ITEMS,
    block_bytes: int = BLOCK_BYTES,
) -> Iterator[tuple[int, pa.RecordBatch]]:
    """The items of a top-level JSON array, each as its own text (sliced from the document:
    one parse, by json's C scanner, and nothing written again). An item not complete in
    what was read so far gets more read, twice as much each time, up to max_record_bytes
    past it; where the array stops being JSON, the items before are kept and the break is
    one BadRow (nothing after it can be found again)."""
    import json

    decoder = json.JSONDecoder()
    buf, pos, eof = "", 0, False
    tail = b""  # the start of a character the next read completes
    not_utf8 = ""  # where the bytes stopped being UTF-8: the text before it is read, then the break
    batch: list[str] = []
    objs: list = []
    size = n = start = 0

    def read(at_least: int) -> None:
        nonlocal buf, pos, eof, tail, not_utf8
        got: list[str] = []
        want = max(READ, at_least)
        while want > 0 and not eof:
            chunk = stream.read(READ)
            data, tail = tail + chunk, b""
            try:
                got.append(data.decode("utf-8"))
            except UnicodeDecodeError as exc:
                got.append(data[: exc.start].decode("utf-8"))
                if chunk and exc.reason == "unexpected end of data":
                    tail = data[exc.start :]
                else:  # the items before it are read; the array breaks there
                    not_utf8 = f"not UTF-8 ({exc.reason} at byte {exc.start} of a read)"
                    chunk = b""
            eof = not chunk
            want -= len(chunk)
        buf, pos = buf[pos:] + "".join(got), 0

    def skip_ws() -> None:
        nonlocal pos
        while True:
            while pos < len(buf) and buf[pos] in _WS:
                pos += 1
            if pos < len(buf) or eof:
                return
            read(READ)

    def broke(why: str) -> BadRow:
        return BadRow(
            n,
            f"record {n}",
            Reason("the document breaks off", f"the document stops being JSON here ({why}); nothing after it is read"),
            buf[pos : pos + PREVIEW_CHARS],
        )

    try:
        read(READ)
        skip_ws()
        pos += 1  # the "["
        skip_ws()
        if pos < len(buf) and buf[pos] == "]":
            return
        while True:
            skip_ws()
            try:
                obj, end = decoder.raw_decode(buf, pos)
                if end == len(buf) and not eof:  # a number or literal may go on in the next read
                    raise json.JSONDecodeError("item runs to the end of what was read", buf, end)
            except json.JSONDecodeError as exc:
                if eof or len(buf) - pos > max_record_bytes:
                    if len(buf) - pos > max_record_bytes and not eof:
                        problem: Reason | None = Reason(
                            "too long",
                            f"longer than source.max_record_bytes={max_record_bytes:,} (or not JSON): not read",
                        )
                        raise _Break(problem) from None
                    raise _Break(None, not_utf8 or str(exc)) from None
                read(2 * (len(buf) - pos))
                continue
            text = buf[pos:end]
            pos = end
            problem = (
                Reason("nested too deep", f"nested deeper than {MAX_DEPTH} levels: not read")
                if stream.cuts and MARK_TEXT in text
                else None
                if len(text) <= max_record_bytes
                else Reason("too long", f"{len(text):,} bytes, more than source.max_record_bytes={max_record_bytes:,}")
            )
            if problem is not None:
                if bad is None:
                    raise NotJson(str(problem))
                if batch:
                    yield start, parsed_batch(batch, objs)
                bad.append(BadRow(n, f"record {n}", problem, text[:PREVIEW_CHARS]))
                n += 1
                batch, objs, size, start = [], [], 0, n
            else:
                batch.append(text)
                objs.append(obj)
                size += len(text)
                n += 1
                if len(batch) >= items or size >= block_bytes:
                    yield start, parsed_batch(batch, objs)
                    batch, objs, size, start = [], [], 0, n
            skip_ws()
            if pos < len(buf) and buf[pos] == ",":
                pos += 1
                continue
            if pos < len(buf) and buf[pos] == "]":
                break
            raise _Break(
                None, "expected , or ] after an item" if pos < len(buf) else not_utf8 or "the array is not closed"
            )
    except (_Break, UnicodeDecodeError) as exc:
        if isinstance(exc, UnicodeDecodeError):
            exc = _Break(None, f"not UTF-8: {exc}")
        if bad is None:
            raise NotJson(f"not a JSON document: {exc.detail}") from None
        if batch:
            yield start, parsed_batch(batch, objs)
        bad.append(
            BadRow(n, f"record {n}", exc.problem, buf[pos : pos + PREVIEW_CHARS]) if exc.problem else broke(exc.detail)
        )
        return
    if batch:
        yield start, parsed_batch(batch, objs)


class _Break(Exception):
    """Where a JSON array stops being one: a Reason of its own, or the parser's detail."""

    def __init__(self, problem: Reason | None, detail: str = ""):
        super().__init__(detail)
        self.problem, self.detail = problem, detail or str(problem or "")


def json_items(
    fh: BinaryIO,
    bad: list[BadRow] | None = None,
    max_record_bytes: int = 64 << 20,
    items: int = ITEMS,
    block_bytes: int = BLOCK_BYTES,
    records: str | None = None,
    each: Callable[[dict], object] | None = None,
) -> Iterator[tuple[int, pa.RecordBatch]]:
    """(record number, batch) of a JSON document's records: the items of a top-level array, or
    the document itself when it is an object (or the items of the array at `records` in it);
    a batch holds up to `items` records or about `block_bytes` of their text, whichever comes
    first (a ChatGPT conversation can be MBs).
    Where the document stops being JSON, the records before are kept and the break is one
    BadRow in `bad` (nothing after it can be found again in a JSON document); without `bad`,
    NotJson is raised. A record too deep to write again, or longer than max_record_bytes, is
    a BadRow of its own. `each`: called on every record (an object) before it is written as
    text, to complete it in place (an app's export read its way: tasks/extract/discord.py)."""
    import ijson
    import orjson

    head = b""
    while True:
        chunk = fh.read(64 << 10)
        head += chunk
        if not chunk or head.strip():
            break
    first = head.lstrip()[:1]
    if not first:
        return  # an empty document: no records
    stream = DepthGuard(Prefixed(head, fh))
    if first == b"[" and each is None:  # a top-level array: items found by the C scanner of json, no re-writing
        yield from array_items(stream, bad, max_record_bytes, items, block_bytes)
        return
    # `records`: the array inside a top-level object whose items are the records
    prefix = f"{records}.item" if records else "item" if first == b"[" else ""
    batch: list[str] = []
    size = 0
    n = start = 0
    try:
        for rec in ijson.items(stream, prefix, use_float=True):
            if each is not None and isinstance(rec, dict):
                each(rec)
            try:
                text = orjson.dumps(rec).decode()
                problem = (
                    Reason("nested too deep", f"nested deeper than {MAX_DEPTH} levels: not read")
                    if stream.cuts and MARK_TEXT in text
                    else None
                    if len(text) <= max_record_bytes
                    else Reason(
                        "too long",
                        (f"{len(text):,} bytes, more than source.max_record_bytes={max_record_bytes:,}: not read"),
                    )
                )
            except (orjson.JSONEncodeError, RecursionError):
                text, problem = "", Reason("nested too deep", "nested too deep to be written as JSON again: not read")
            del rec
            if problem is not None and bad is not None:
                if batch:
                    yield start, pa.record_batch({RECORD_COLUMN: pa.array(batch, pa.string())})
                bad.append(BadRow(n, f"record {n}", problem, text[:PREVIEW_CHARS]))
                n += 1
                batch, size, start = [], 0, n
                continue
            batch.append(text)
            size += len(text)
            n += 1
            if len(batch) >= items or size >= block_bytes:
                yield start, pa.record_batch({RECORD_COLUMN: pa.array(batch, pa.string())})
                batch, size, start = [], 0, n
    except (ijson.JSONError, ijson.IncompleteJSONError, UnicodeDecodeError, RecursionError) as exc:
        if bad is None:
            raise NotJson(f"not a JSON document: {exc}") from None
        if batch:
            yield start, pa.record_batch({RECORD_COLUMN: pa.array(batch, pa.string())})
            batch = []
        bad.append(
            BadRow(
                n,
                f"record {n}",
                Reason(
                    "the document breaks off", f"the document stops being JSON here ({exc}); nothing after it is read"
                ),
            )
        )
        return
    if batch:
        yield start, pa.record_batch({RECORD_COLUMN: pa.array(batch, pa.string())})
    if records and first == b"{" and n == 0:
        problem = Reason(
            "no records",
            f"no record at {records} (source.records) in this document: nothing read; if the document "
            "is one record itself (a single-chat export), set source.records: null",
        )
        if bad is None:
            raise NotJson(str(problem))
        bad.append(BadRow(0, "record 0", problem))
