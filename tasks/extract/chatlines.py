"""Chat logs written as lines: WhatsApp's "Export chat" text, read as a stream of messages.

Every message starts with a header line, the date and time then the sender:

    [31/12/2023, 21:41:05] Ann: text          (iOS: brackets, seconds)
    31/12/2023, 21:41 - Ann: text             (Android: a dash, no seconds)
    12/31/23, 9:41 PM - Ann: text             (12-hour clocks: U+202F or a space before PM)
    31.12.23, 21:41 - Ann: text               (dots, dashes, two- or four-digit years)
    31/12/2023, 9:41 a. m. - Ann: text        (every language's 12-hour markers)

and a line without a header continues the message before it (multi-line messages keep
their newlines). What a message is (text, a notice, a call log, a deleted or media
placeholder, in the chat's language) is tasks/extract/whatsapp_words.py's to say; the
language is detected from the file's first messages (`source.locale` sets it).
U+200E/U+200F and the other direction marks are dropped.

A line shaped like a header inside a message's text (a pasted `[date, time] Name: ...`) is
text when the chat's chronology says so (docs/chat-exports.md, whatsapp-txt):
messages are read two at a time, and a header-shaped line is text when its time runs back
more than an hour (the most a clock change repeats) before the message it would follow, or
when it jumps ahead of the next header by more than that (then it is the line that does not
fit). A pasted line whose time fits between its neighbours cannot be told from a message.

Wall times repeat when clocks go back: a message whose wall time runs back before the one
before it, in the hour the mapping's time zone repeats, is the later of the two instants
(fold=1) and is written with its offset; so are the messages after it in that hour.

Rows: `line` (the header's line number, from 1), `time` (ISO local wall time, no zone:
the export has none; the mapping's time.timezone says whose clock it was; an offset only on
the repeated hour's second pass), `sender` (null for system lines), `text`, `kind` (message,
system, call, deleted, media), `file`, `chat` (from the file's name: "WhatsApp Chat with
Ann.txt", or the archive's around `_chat.txt`).

Day and month order: the locale wrote them; `source.day_first` sets it, or the file decides
(a first field over 12 means day first, a second one month first). A file where every date
fits both ways is read day first, unless it is in English with a 12-hour clock (the US
writes month first). That takes a first pass over the dates; the second builds the rows a
block at a time. Lines before the first header and text that is not UTF-8 are BadRows with
their line numbers.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import date, datetime
from typing import BinaryIO
from zoneinfo import ZoneInfo

import pyarrow as pa

from tasks.extract import whatsapp_words as words
from tasks.extract.blocks import ROW_COLUMN
from tasks.quarantine import PREVIEW_CHARS, BadRow, Reason

ROWS = 65_536  # messages a batch
SURVEY = 2_000  # headers the first pass hands to the language detector
REPEAT_S = 3_600  # the most a clock change repeats: a header running back further is text
_SPACE = r"[\s\u202f\u00a0]"
_DATE_TIME = (
    r"^\[?(?P<a>\d{1,4})\s?[-/.]\s?(?P<b>\d{1,2})\s?[-/.]\s?(?P<c>\d{1,4})\.?[,.\u060c]?\s+\D{0,8}?"
    r"(?P<h>\d{1,2})[.:](?P<m>\d{2})(?:[.:](?P<s>\d{2}))?"
)
_REST = r"\]?(?:\s[-\u2013]\s|:\s|\s)(?P<rest>.*)$"
# a 12-hour marker: a word of letters with dots, one or two parts ("PM", "a. m.", "vorm.", "م")
HEADER = re.compile(
    _DATE_TIME + rf"(?:{_SPACE}*(?P<ampm>[^\W\d_][^\W\d_.\s]{{0,11}}\.?(?:{_SPACE}?[^\W\d_]{{1,4}}\.?)?))?" + _REST
)
PLAIN_HEADER = re.compile(_DATE_TIME + _REST)  # when the word after the time is no 12-hour marker
SENDER = re.compile(r"^(?P<sender>[^:]{1,100}?): (?P<text>.*)$", re.S)
MARKS = str.maketrans("", "", "\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u061c")


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


def header(line: str) -> re.Match | None:
    """The header at the start of a line (marks already dropped), or None."""
    m = HEADER.match(line)
    if m is None or m["ampm"] is None:
        return m
    marker = words.normalise_marker(m["ampm"])
    if marker in words.AM or marker in words.PM:
        return m
    return PLAIN_HEADER.match(line)  # a word after the time that is not a marker: the sender's


def _clean(line: str) -> str:
    return line.translate(MARKS) if ("\u200e" in line or "\u200f" in line or "\u202a" in line) else line


class Survey:
    """What the first pass learns of a file: its day/month order and its language."""

    def __init__(self) -> None:
        self.first: bool | None = None  # day first, when some date says so
        self.twelve = False  # a 12-hour clock seen
        self.bodies: list[tuple[str | None, str]] = []

    def read(self, lines: Iterator[bytes | int]) -> Survey:
        for raw in lines:
            if isinstance(raw, int):
                continue
            m = header(_clean(raw[:2000].decode("utf-8", "replace")))
            if not m:
                continue
            if len(self.bodies) < SURVEY:
                said = SENDER.match(m["rest"])
                self.bodies.append((said["sender"], said["text"]) if said else (None, m["rest"]))
            self.twelve = self.twelve or bool(m["ampm"])
            if self.first is None and len(m["a"]) != 4:
                if int(m["a"]) > 12:
                    self.first = True
                elif int(m["b"]) > 12:
                    self.first = False
            if self.first is not None and len(self.bodies) >= SURVEY:
                break
        return self

    def language(self, setting: str | None) -> str:
        if setting:
            return setting
        return words.detect(self.bodies) or "en"

    def day_first(self, setting: bool | None, language: str) -> bool:
        if setting is not None:
            return setting
        if self.first is not None:
            return self.first
        return not (self.twelve and language == "en")


def locale_of(head: str) -> str | None:
    """The language of a chat from its first lines (`detect`), None when nothing tells."""
    survey = Survey().read(iter(line.encode() for line in head.splitlines()))
    return words.detect(survey.bodies)


def _wall(m: re.Match, first: bool) -> tuple[str, int | None]:
    """(ISO wall time, seconds on a uniform clock or None when the date does not exist)."""
    a, b, c = m["a"], m["b"], m["c"]
    if len(a) == 4:
        y, mo, d = int(a), int(b), int(c)
    else:
        d, mo = (int(a), int(b)) if first else (int(b), int(a))
        y = int(c) + (2000 if len(c) <= 2 else 0)
    h, mi, s = int(m["h"]), int(m["m"]), int(m["s"] or 0)
    if m["ampm"]:
        pm = words.normalise_marker(m["ampm"]) in words.PM
        h = (h % 12) + (12 if pm else 0)
    iso = f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}"
    try:
        return iso, date(y, mo, d).toordinal() * 86_400 + h * 3_600 + mi * 60 + s
    except ValueError:
        return iso, None  # quarantined by validation, quoting the time


class _Folds:
    """The second pass of a repeated hour (module docstring): wall times placed on fold=1."""

    def __init__(self, timezone: str | None) -> None:
        self.zone = ZoneInfo(timezone) if timezone and timezone.upper() != "UTC" else None
        self.last: int | None = None
        self.folding = False

    def place(self, iso: str, wall: int | None) -> str:
        back = wall is not None and self.last is not None and wall < self.last
        if wall is not None:
            self.last = wall
        if wall is None or self.zone is None or not (back or self.folding):
            return iso  # (a date that does not exist is quarantined by validation, quoting it)
        at = datetime.fromisoformat(iso).replace(tzinfo=self.zone)
        later = at.replace(fold=1)
        if at.utcoffset() == later.utcoffset():  # not in a repeated hour
            self.folding = False
            return iso
        self.folding = True
        return later.isoformat()


def whatsapp_batches(
    open_stream: Callable[[], BinaryIO],
    rel: str,
    bad: list[BadRow],
    replace: bool,
    day_first_setting: bool | None = None,
    max_record_bytes: int = 64 << 20,
    locale: str | None = None,
    timezone: str | None = None,
) -> Iterator[tuple[int, pa.RecordBatch]]:
    """(record number of the batch's first message, batch) of one chat's text."""
    with open_stream() as fh:
        survey = Survey().read(lines_of(fh, max_record_bytes))
    language = survey.language(locale)
    lang = words.LANGUAGES.get(language) or words.LANGUAGES["en"]
    first = survey.day_first(day_first_setting, language)
    folds = _Folds(timezone)
    chat = chat_name(rel)
    cols: dict[str, list] = {k: [] for k in ("line", "time", "sender", "text", "kind", "file", ROW_COLUMN)}
    record = start = 0
    # the messages not yet written: at most two, the second on trial (module docstring);
    # each is [line, iso, wall, sender, lines, header line, marked]
    held: list[list] = []

    def write(msg: list) -> None:
        nonlocal record
        text = "\n".join(msg[4]).rstrip("\n")  # blank lines before the next header are not its text
        size = len(text.encode())
        if size > max_record_bytes:
            bad.append(
                BadRow(
                    record,
                    f"line {msg[0]}",
                    Reason("too long", f"{size:,} bytes, more than source.max_record_bytes={max_record_bytes:,}"),
                    text[:PREVIEW_CHARS],
                )
            )
        else:
            kind, text, name = words.classify(text, lang, msg[3], msg[6])
            if kind == "message" and msg[3] is None:  # a header with no `Name: `: a notice
                kind = "system"
            cols["line"].append(msg[0])
            cols["time"].append(folds.place(msg[1], msg[2]))
            cols["sender"].append(msg[3] if kind == "message" or kind == "media" else None)
            cols["text"].append(text)
            cols["kind"].append(kind)
            cols["file"].append(name)  # an attached file's name (next to the chat's text in its export)
            cols[ROW_COLUMN].append(record)
        record += 1

    def write_all() -> None:
        for msg in held:
            write(msg)
        held.clear()

    def arrive(msg: list) -> None:
        """A header-shaped line: a message, or text of the one before (the chronology rule)."""
        wall = msg[2]
        if wall is None or not held or held[-1][2] is None:
            pass
        elif wall < held[-1][2] - REPEAT_S:
            if len(held) == 2 and held[0][2] is not None and wall >= held[0][2] - REPEAT_S:
                # fits the message before the one on trial: that one jumped ahead, it is text
                trial = held.pop()
                held[0][4].extend([trial[5], *trial[4][1:]])
            else:  # runs back before both: this line is text
                held[-1][4].append(msg[5])
                return
        if len(held) == 2:
            write(held.pop(0))
        held.append(msg)

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
                write_all()
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
                    write_all()
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
            marked = ": \u200e" in line or ": \u200f" in line  # the iPhone's mark before a notice
            line = _clean(line)
            m = header(line)
            if m:
                if len(cols["line"]) >= ROWS:
                    yield start, batch()
                    start = record
                said = SENDER.match(m["rest"])
                iso, wall = _wall(m, first)
                sender = said["sender"].strip() if said else None
                arrive([number, iso, wall, sender, [said["text"] if said else m["rest"]], line, marked and said])
            elif held:
                held[-1][4].append(line)
            elif line.strip():  # text before the first message: not this format, or a cut file
                bad.append(
                    BadRow(record, f"line {number}", Reason("no header", "no date and time starts it"), line[:200])
                )
                record += 1
    write_all()
    if cols["line"]:
        yield start, batch()
