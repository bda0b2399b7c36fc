"""Records of nested sources, streamed: what tasks/nest.py explodes into messages.

A nested source holds one record per conversation (OpenAI chat JSONL, a ChatGPT export's
`conversations.json`, ShareGPT). Its records are read here as a stream, never a whole file:

- JSONL: blocks of whole lines (`BLOCK_BYTES`, a line longer than that is read whole);
  blank lines are not records, as in pyarrow's JSON reader, so record numbers agree with it;
- JSON: a top-level array is parsed item by item (ijson's C backend), `ITEMS` records at a
  time; a top-level object is one record. That parser stops at an integer beyond 64 bits
  (`integer overflow`): the document is then reported unreadable, never loaded with a wrong value.

Each yields record batches of one column, RECORD_COLUMN, the record's JSON text: one shape
for the walk and the columnar explode alike (tasks/nest.py), and for quarantine rows. Memory
is one block (or one record, when a record is larger) plus what the explode makes of it.
"""

from __future__ import annotations

from typing import BinaryIO, Iterator

import pyarrow as pa
import pyarrow.compute as pc

RECORD_COLUMN = "__record__"  # JSON text of one record
BLOCK_BYTES = 8 << 20
ITEMS = 2048


class NotJson(ValueError):
    """The document is not JSON (a JSON source); the message says where."""


def jsonl_blocks(fh: BinaryIO, block_bytes: int = BLOCK_BYTES) -> Iterator[pa.RecordBatch]:
    """Record batches of a JSONL stream's non-blank lines, one batch per block of whole lines."""
    rest = b""
    while True:
        chunk = fh.read(block_bytes)
        if not chunk:
            break
        data = rest + chunk if rest else chunk
        cut = data.rfind(b"\n")
        if cut < 0:  # a line longer than a block: keep reading until it ends
            rest = data
            continue
        rest = data[cut + 1:]
        yield from _lines(data[:cut + 1])
    if rest.strip():
        yield from _lines(rest)


def _lines(block: bytes) -> Iterator[pa.RecordBatch]:
    text = pa.array([block.decode("utf-8", "replace")], pa.string())
    lines = pc.list_flatten(pc.split_pattern(text, "\n"))
    lines = pc.utf8_rtrim(lines, "\r")
    lines = lines.filter(pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(lines)), 0))
    if len(lines):
        yield pa.record_batch({RECORD_COLUMN: lines})


class _Prefixed:
    """A stream with its first bytes put back (object-store streams cannot seek)."""

    def __init__(self, head: bytes, fh: BinaryIO):
        self.head, self.fh = head, fh

    def read(self, n: int = -1) -> bytes:
        if self.head:
            out, self.head = (self.head, b"") if n < 0 or n >= len(self.head) else (self.head[:n], self.head[n:])
            return out
        return self.fh.read(n) if n >= 0 else self.fh.read()


def json_items(fh: BinaryIO, items: int = ITEMS, block_bytes: int = BLOCK_BYTES) -> Iterator[pa.RecordBatch]:
    """Record batches of a JSON document's records: the items of a top-level array, or the
    document itself when it is an object; a batch holds up to `items` records or about
    `block_bytes` of their text, whichever comes first (a ChatGPT conversation can be MBs).
    Raises NotJson where the document stops being JSON."""
    import ijson
    import orjson

    head = b""
    while True:
        chunk = fh.read(64 << 10)
        head += chunk
        if not chunk or head.strip():
            break
    first = head.lstrip()[:1]
    stream = _Prefixed(head, fh)
    prefix = "item" if first == b"[" else ""
    batch: list[str] = []
    size = 0
    try:
        for rec in ijson.items(stream, prefix, use_float=True):
            batch.append(orjson.dumps(rec).decode())
            size += len(batch[-1])
            del rec
            if len(batch) >= items or size >= block_bytes:
                yield pa.record_batch({RECORD_COLUMN: pa.array(batch, pa.string())})
                batch, size = [], 0
    except (ijson.JSONError, ijson.IncompleteJSONError, UnicodeDecodeError) as exc:
        raise NotJson(f"not a JSON document: {exc}") from None
    if batch:
        yield pa.record_batch({RECORD_COLUMN: pa.array(batch, pa.string())})
