"""Records of nested sources, streamed: what tasks/nest/ explodes into messages.

A nested source holds one record per conversation (OpenAI chat JSONL, a ChatGPT export's
`conversations.json`, ShareGPT). Its records are read here as a stream, never a whole file:

- JSONL: blocks of whole lines (tasks/extract/lines.py `record_batches`; a line that does not decode
  is quarantined there, one that is not JSON by tasks/nest/ with the record's shape);
- JSON: a top-level array is parsed item by item (ijson's C backend), `ITEMS` records at a
  time; a top-level object is one record. That parser stops at an integer beyond 64 bits
  (`integer overflow`): that record and the rest are then quarantined as the document's
  break, never loaded with a wrong value.

Each yields record batches of one column, RECORD_COLUMN, the record's JSON text: one shape
for the walk and the columnar explode alike (tasks/nest/), and for quarantine rows. Memory
is one block (or one record, when a record is larger) plus what the explode makes of it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

import pyarrow as pa

from core.errors import NotJson
from tasks.extract.blocks import RECORD_COLUMN
from tasks.extract.depth import MARK_TEXT, MAX_DEPTH, DepthGuard
from tasks.extract.streams import Prefixed
from tasks.quarantine import PREVIEW_CHARS, BadRow, Reason

BLOCK_BYTES = 8 << 20
ITEMS = 2048


def json_items(
    fh: BinaryIO,
    bad: list[BadRow] | None = None,
    max_record_bytes: int = 64 << 20,
    items: int = ITEMS,
    block_bytes: int = BLOCK_BYTES,
    records: str | None = None,
) -> Iterator[tuple[int, pa.RecordBatch]]:
    """(record number, batch) of a JSON document's records: the items of a top-level array, or
    the document itself when it is an object (or the items of the array at `records` in it);
    a batch holds up to `items` records or about `block_bytes` of their text, whichever comes
    first (a ChatGPT conversation can be MBs).
    Where the document stops being JSON, the records before are kept and the break is one
    BadRow in `bad` (nothing after it can be found again in a JSON document); without `bad`,
    NotJson is raised. A record too deep to write again, or longer than max_record_bytes, is
    a BadRow of its own."""
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
    # `records`: the array inside a top-level object whose items are the records
    prefix = "item" if first == b"[" else f"{records}.item" if records else ""
    batch: list[str] = []
    size = 0
    n = start = 0
    try:
        for rec in ijson.items(stream, prefix, use_float=True):
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
