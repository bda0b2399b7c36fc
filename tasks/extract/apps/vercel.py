"""Vercel's AI chatbot (Chat SDK): a message's AI SDK `parts` (JSON text) made its text, a page
at a time on Arrow columns.

The "Message_v2" table keeps one message a row with its `parts` as the AI SDK wrote them:
`{type: text, text}`, `{type: file, filename, url, mediaType}`, reasoning, `tool-<name>` and
`step-start` markers. A message's text is its non-empty text parts joined by newlines, a file
part written as the mapping's `nest.media.file` placeholder (`[file: cat.png]`); the other
parts are left out. The page's `parts` values are parsed as one block of JSON lines (each
wrapped as `{"p": ...}`, Arrow reading only the fields named here), flattened, filtered by
type and joined per row by Arrow: no Python per row. Only when the block does not parse (a
value that is not JSON, or a part Arrow cannot type) is that page parsed row by row, each bad
row quarantined with its reason.

The text comes out as a one-element list per row (`message`: list<struct<text>>) for the
preset's one `nest` level, so that a message with no text left is skipped and counted by
nest.skip_empty like any nested element; a quarantined row's list is empty (no message, and
the rows after it keep their numbers).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

from tasks.quarantine import BadRow, Reason

#: the column the query gives (the parts' JSON text) and the one a decoded page has instead
PARTS, MESSAGE = "parts", "message"
#: the part fields read; everything else in a part (tool input and output, provider
#: metadata, urls) is skipped by the reader, whatever its type
PART = pa.struct([("type", pa.string()), ("text", pa.string()), ("filename", pa.string()), ("name", pa.string())])
SCHEMA = pa.schema([("p", pa.list_(PART))])
MESSAGE_TYPE = pa.list_(pa.struct([("text", pa.string())]))
_KINDS = {dict: "an object", str: "text", bool: "a boolean"}
#: a stand-in for the file's name when formatting the placeholder (split on it afterwards)
_NAME = "\x00"


class VercelRows:
    """The `parts` column of "Message_v2" rows decoded into MESSAGE, a page at a time."""

    def __init__(self, file_placeholder: str = "[file: {name}]"):
        self.file_pieces = file_placeholder.format(name=_NAME).split(_NAME)

    def columns(self, names: list[str]) -> list[str]:
        return [n for n in names if n != PARTS] + [MESSAGE]

    def query(self, dialect: str, table: str | None) -> str | None:
        return None  # the preset's own SELECT (or the user's) as it is

    def decode(self, rb: pa.RecordBatch, offset: int, bad: list[BadRow]) -> pa.RecordBatch:
        names = rb.schema.names
        if PARTS not in names:
            raise ValueError("the query gives no `parts` column (the AI SDK message's parts as JSON text)")
        raw = rb.column(PARTS)
        texts = raw if pa.types.is_large_string(raw.type) else raw.cast(pa.large_string())
        keep = np.ones(len(texts), dtype=bool)
        parsed = _parse(texts)
        if parsed is None:  # the block does not parse: row by row, for this page only
            ids = rb.column("message_id").to_pylist() if "message_id" in names else None
            text = self._rows(texts.to_pylist(), keep, offset, ids, bad)
        else:
            text = self._text(parsed)
        offsets = np.zeros(len(keep) + 1, dtype=np.int32)  # the kept rows' text: one element each
        np.cumsum(keep, out=offsets[1:])
        message = pa.ListArray.from_arrays(
            pa.array(offsets), pa.StructArray.from_arrays([text.cast(pa.string())], names=["text"]), type=MESSAGE_TYPE
        )
        i = names.index(PARTS)
        return rb.remove_column(i).append_column(MESSAGE, message)

    def _text(self, lists: pa.Array) -> pa.Array:
        """Each row's text from its parts (a list array of PART): text parts that are not
        empty and file placeholders, in order, joined by newlines; "" for a row with none."""
        parts = pc.list_flatten(lists)
        parents = pc.list_parent_indices(lists)
        kind, text = pc.struct_field(parts, "type"), pc.struct_field(parts, "text")  # a null part: nulls
        name = pc.coalesce(
            _nonempty(pc.struct_field(parts, "filename")), _nonempty(pc.struct_field(parts, "name")), pa.scalar("?")
        )
        pieces = [pa.scalar(p, pa.string()) for p in self.file_pieces]
        placeholder = pc.binary_join_element_wise(*_between(pieces, name), pa.scalar("", pa.string()))
        piece = pc.if_else(
            pc.equal(kind, "text"), text, pc.if_else(pc.equal(kind, "file"), placeholder, pa.scalar(None, pa.string()))
        )
        wanted = pc.fill_null(pc.greater(pc.utf8_length(piece), 0), False)
        piece, parents = piece.filter(wanted), parents.filter(wanted)
        counts = np.bincount(parents.to_numpy(zero_copy_only=False), minlength=len(lists))
        offsets = np.zeros(len(lists) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        per_row = pa.LargeListArray.from_arrays(pa.array(offsets), piece.cast(pa.large_string()))
        return pc.binary_join(per_row, pa.scalar("\n", pa.large_string()))

    def _rows(self, values: list, keep: np.ndarray, offset: int, ids: list | None, bad: list[BadRow]) -> pa.Array:
        """The text of the kept rows of a page whose block did not parse, row by row: a value
        that is not JSON, or not a list of parts, is appended to `bad` (and `keep` cleared);
        the rest are read again as one block, or, when Arrow still cannot type them, with
        Python."""
        lists: list[Any] = []
        for i, raw in enumerate(values):
            reason = None
            try:
                value = None if raw is None else json.loads(raw)
            except ValueError as exc:
                reason = Reason("not JSON", f"parts is not JSON ({exc})")
            else:
                if value is not None and not isinstance(value, list):
                    kind = _KINDS.get(type(value), "a number")
                    reason = Reason("not a list of parts", f"parts is {kind}, not a list")
            if reason is not None:
                where = f"id {ids[i]}" if ids is not None else f"row {offset + i + 1}"
                bad.append(BadRow(offset + i, where, reason, str(raw)[:2000]))
                keep[i] = False
                continue
            lists.append(value)
        good = pa.array([v for v, k in zip(values, keep) if k], pa.large_string())
        parsed = _parse(good) if len(good) else None
        if parsed is not None:
            return self._text(parsed)
        return pa.array([self._one(v) for v in lists], pa.string())

    def _one(self, parts: list | None) -> str:
        """One row's text with Python, as _text makes it (parts Arrow could not type)."""
        out = []
        for p in parts or ():
            if not isinstance(p, dict):
                continue
            if p.get("type") == "text" and isinstance(p.get("text"), str) and p["text"]:
                out.append(p["text"])
            elif p.get("type") == "file":
                name = next((v for v in (p.get("filename"), p.get("name")) if isinstance(v, str) and v), "?")
                out.append(name.join(self.file_pieces))
        return "\n".join(out)


def _parse(texts: pa.Array) -> pa.Array | None:
    """The values (JSON text, large_string) as one list array of PART, or None when the block
    does not parse or type (a value that is not JSON, not a list, a part Arrow cannot read)."""
    if not len(texts):
        return pa.array([], SCHEMA.field("p").type)
    # one block, so a value may span lines (JSON text as PostgreSQL's json type keeps it)
    big = pa.large_string()
    wrapped = pc.binary_join_element_wise(
        pa.scalar('{"p":', big), pc.fill_null(texts, pa.scalar("null", big)), pa.scalar("}", big), pa.scalar("", big)
    )
    one = pa.LargeListArray.from_arrays(pa.array([0, len(wrapped)], pa.int64()), wrapped)
    joined = pc.binary_join(one, pa.scalar("\n", big))
    buf = joined[0].as_buffer()
    opts = pajson.ReadOptions(use_threads=False, block_size=max(1 << 20, buf.size + 1))
    parse = pajson.ParseOptions(explicit_schema=SCHEMA, unexpected_field_behavior="ignore")
    try:
        table = pajson.read_json(pa.BufferReader(buf), read_options=opts, parse_options=parse)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    if table.num_rows != len(texts):
        return None
    return table.column("p").combine_chunks()


def _nonempty(arr: pa.Array) -> pa.Array:
    return pc.if_else(pc.equal(arr, ""), pa.scalar(None, pa.string()), arr)


def _between(pieces: list[pa.Scalar], name: pa.Array) -> list:
    """The placeholder's fixed pieces with the name between each two."""
    out: list = [pieces[0]]
    for p in pieces[1:]:
        out += [name, p]
    return out
