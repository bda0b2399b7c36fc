"""Chat logs written as lines: WhatsApp's "Export chat" text, read as a stream of messages.

Every message starts with a header line, the date and time then the sender:

    [31/12/2023, 21:41:05] Ann: text          (iOS: brackets, seconds)
    31/12/2023, 21:41 - Ann: text             (Android: a dash, no seconds)
    12/31/23, 9:41 PM - Ann: text             (12-hour clocks: U+202F or a space before PM)

and a line without a header continues the message before it (multi-line messages keep
their newlines). A header line with no `Name: ` part is a system line (joins, a changed
subject, the encryption notice); so is iOS's encryption notice, which does carry a name.
U+200E/U+200F marks are dropped; `<This message was edited>` is cut from the text it ends.

Rows: `line` (the header's line number, from 1), `time` (ISO local wall time, no zone:
the export has none; the mapping's time.timezone says whose clock it was), `sender` (null
for system lines), `text`, `kind` (message, system, deleted, media), `chat` (from the file's
name: "WhatsApp Chat with Ann.txt", or the archive's around `_chat.txt`).

Day and month order: the locale wrote them; `source.day_first` sets it, or the file decides
(a first field over 12 means day first, a second one month first). A file where every date
fits both ways is read day first, unless its clock is 12-hour (the US writes month first).
That takes a first pass over the dates; the second builds the rows a block at a time.
Lines before the first header and text that is not UTF-8 are BadRows with their line numbers.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import BinaryIO

import pyarrow as pa

from tasks.extract.blocks import ROW_COLUMN
from tasks.quarantine import PREVIEW_CHARS, BadRow, Reason

ROWS = 65_536  # messages a batch
HEADER = re.compile(
    r"^[\u200e\u200f]*\[?(?P<a>\d{1,4})[-/.]\s?(?P<b>\d{1,2})[-/.]\s?(?P<c>\d{1,4})[,.]?\s+\D{0,8}?"
    r"(?P<h>\d{1,2})[.:](?P<m>\d{2})(?:[.:](?P<s>\d{2}))?"
    r"(?:[\s\u202f\u00a0]*(?P<ampm>[aApP]\.?\s?[mM]\.?))?\]?(?:\s-\s|:\s|\s)(?P<rest>.*)$"
)
SENDER = re.compile(r"^(?P<sender>[^:\u200e]{1,100}?): (?P<text>.*)$", re.S)
ENCRYPTION = ("Messages and calls are end-to-end encrypted", "Messages to this group are now secured")
DELETED = ("This message was deleted", "This message was deleted.", "You deleted this message")
EDITED = " <This message was edited>"
MEDIA = re.compile(
    r"^(?:<Media omitted>|(?P<kind>image|video|audio|GIF|sticker|document|Contact card) omitted"
    r"|<\s?attached: (?P<att>[^>]+?)\s?>|(?P<file>\S.*) \(file attached\))$"
)
MARKS = str.maketrans("", "", "\u200e\u200f\u202a\u202c")


def chat_name(rel: str) -> str:
    """The chat's name from where its text sits: `WhatsApp Chat with Ann.txt` -> Ann,
    `WhatsApp Chat - Ann.zip!_chat.txt` (or unzipped, `WhatsApp Chat - Ann/_chat.txt`) -> Ann."""
    parts = [p for p in rel.replace("\\", "/").replace("!", "/").split("/") if p]
    base = parts[-1] if parts else rel
    if base.lower() in ("_chat.txt", "chat.txt") and len(parts) > 1:
        base = parts[-2]  # the archive it came in, or the folder it was unzipped to
    stem = re.sub(r"\.(txt|zip)$", "", base, flags=re.I)
    for prefix in ("WhatsApp Chat with ", "WhatsApp Chat - ", "WhatsApp Chat_with_", "WhatsApp Chat "):
        if stem.startswith(prefix):
            return stem[len(prefix) :].strip() or stem
    return stem


def lines_of(fh: BinaryIO, max_bytes: int = 64 << 20, chunk: int = 1 << 20) -> Iterator[bytes | int]:
    """The stream's lines (without their ends), read a chunk at a time; a line longer than
    `max_bytes` is streamed past and stands as its length (an int), never held whole."""
    pieces: list[bytes] = []  # the line being read, in pieces
    held = 0
    skipping = 0  # bytes of an over-long line passed over so far
    while True:
        data = fh.read(chunk)
        if not data:
            break
        start = 0
        while True:
            end = data.find(b"\n", start)
            if end < 0:
                tail = data[start:]
                if skipping:
                    skipping += len(tail)
                elif tail:
                    pieces.append(tail)
                    held += len(tail)
                    if held > max_bytes:
                        skipping, pieces, held = held, [], 0
                break
            if skipping:
                yield skipping + end - start
                skipping = 0
            else:
                line = b"".join(pieces) + data[start:end] if pieces else data[start:end]
                pieces, held = [], 0
                if len(line) > max_bytes:
                    yield len(line)
                else:
                    yield line
            start = end + 1
    if skipping:
        yield skipping
    elif pieces:
        yield b"".join(pieces)


def day_first(lines: Iterator[bytes | int]) -> bool:
    """Whether the file's dates are day first, from the dates themselves (see the module)."""
    twelve = False
    for raw in lines:
        if isinstance(raw, int):
            continue
        m = HEADER.match(raw[:200].decode("utf-8", "replace"))
        if not m or len(m["a"]) == 4:
            continue
        if int(m["a"]) > 12:
            return True
        if int(m["b"]) > 12:
            return False
        twelve = twelve or bool(m["ampm"])
    return not twelve


def _iso(m: re.Match, first: bool) -> str:
    a, b, c = m["a"], m["b"], m["c"]
    if len(a) == 4:
        y, mo, d = int(a), int(b), int(c)
    else:
        d, mo = (int(a), int(b)) if first else (int(b), int(a))
        y = int(c) + (2000 if len(c) <= 2 else 0)
    h, mi, s = int(m["h"]), int(m["m"]), int(m["s"] or 0)
    if m["ampm"]:
        pm = m["ampm"][0] in "pP"
        h = (h % 12) + (12 if pm else 0)
    return f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}"


def whatsapp_batches(
    open_stream: Callable[[], BinaryIO],
    rel: str,
    bad: list[BadRow],
    replace: bool,
    day_first_setting: bool | None = None,
    max_record_bytes: int = 64 << 20,
) -> Iterator[tuple[int, pa.RecordBatch]]:
    """(record number of the batch's first message, batch) of one chat's text."""
    if day_first_setting is None:
        with open_stream() as fh:
            first = day_first(lines_of(fh, max_record_bytes))
    else:
        first = day_first_setting
    chat = chat_name(rel)
    cols: dict[str, list] = {k: [] for k in ("line", "time", "sender", "text", "kind", "file", ROW_COLUMN)}
    record = start = 0
    current: dict | None = None

    def flush() -> None:
        nonlocal current, record
        if current is None:
            return
        text = "\n".join(current["lines"]).rstrip("\n")  # blank lines before the next header are not its text
        size = len(text.encode())
        if size > max_record_bytes:
            bad.append(
                BadRow(
                    record,
                    f"line {current['line']}",
                    Reason("too long", f"{size:,} bytes, more than source.max_record_bytes={max_record_bytes:,}"),
                    text[:PREVIEW_CHARS],
                )
            )
        else:
            kind, sender, name = current["kind"], current["sender"], None
            if text.endswith(EDITED):
                text = text[: -len(EDITED)]
            if kind == "message":
                if text in DELETED:
                    kind = "deleted"
                elif any(text.startswith(e) for e in ENCRYPTION):
                    kind = "system"
                else:
                    media = MEDIA.match(text)
                    if media:
                        kind = "media"
                        name = media["att"] or media["file"]
                        text = f"[file: {name}]" if name else f"[{(media['kind'] or 'media').lower()} omitted]"
            cols["line"].append(current["line"])
            cols["time"].append(current["time"])
            cols["sender"].append(sender)
            cols["text"].append(text)
            cols["kind"].append(kind)
            cols["file"].append(name)  # an attached file's name (next to the chat's text in its export)
            cols[ROW_COLUMN].append(record)
        record += 1
        current = None

    def batch() -> pa.RecordBatch:
        rb = pa.record_batch(
            {
                "line": pa.array(cols["line"], pa.int64()),
                "time": pa.array(cols["time"], pa.string()),
                "sender": pa.array(cols["sender"], pa.string()),
                "text": pa.array(cols["text"], pa.string()),
                "kind": pa.array(cols["kind"], pa.string()),
                "file": pa.array(cols["file"], pa.string()),
                "chat": pa.array([chat] * len(cols["line"]), pa.string()),
                ROW_COLUMN: pa.array(cols[ROW_COLUMN], pa.int64()),
            }
        )
        for v in cols.values():
            v.clear()
        return rb

    with open_stream() as fh:
        for number, raw in enumerate(lines_of(fh, max_record_bytes), 1):
            if isinstance(raw, int):  # a line longer than the record limit: passed over
                flush()
                bad.append(
                    BadRow(
                        record,
                        f"line {number}",
                        Reason("too long", f"{raw:,} bytes, more than source.max_record_bytes={max_record_bytes:,}"),
                    )
                )
                record += 1
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                if not replace:
                    flush()
                    bad.append(
                        BadRow(
                            record,
                            f"line {number}",
                            Reason("not UTF-8", f"not valid UTF-8 (byte 0x{raw[exc.start]:02x})"),
                            raw[:PREVIEW_CHARS].decode("utf-8", "replace"),
                        )
                    )
                    record += 1
                    continue
                line = raw.decode("utf-8", "replace")
            line = line.rstrip("\r\n")
            m = HEADER.match(line)
            if m:
                flush()
                if len(cols["line"]) >= ROWS:
                    yield start, batch()
                    start = record
                rest = m["rest"].translate(MARKS)
                said = SENDER.match(rest)
                current = {
                    "line": number,
                    "time": _iso(m, first),
                    "sender": said["sender"].strip() if said else None,
                    "kind": "message" if said else "system",
                    "lines": [(said["text"] if said else rest).translate(MARKS)],
                }
            elif current is not None:
                current["lines"].append(line.translate(MARKS))
            elif line.strip():  # text before the first message: not this format, or a cut file
                bad.append(
                    BadRow(record, f"line {number}", Reason("no header", "no date and time starts it"), line[:200])
                )
                record += 1
    flush()
    if cols["line"]:
        yield start, batch()
