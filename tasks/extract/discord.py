"""DiscordChatExporter's JSON (`source.app: discord`), read its way: a channel exported with
`--markdown false` keeps Discord's raw markup in `content`; it is rendered here as a reader of
the channel sees it, before the record is written as text (tasks/nest/ walks it as usual):

- `<@id>` and `<@!id>`: `@` and the person's name from the message's own `mentions` (their
  `nickname`, which the exporter fills with the server nickname or else the name; else `name`);
- `<@&id>`: `@` and the role's name, from the roles the export lists on its people (each
  author's and each mentioned person's `roles`, anywhere in the same file);
- `<#id>`: `#` and the channel's name, from the `channel` object at the head of every file of
  the same export (the folder the file is in, or the .zip), read once per export;
- `<:name:id>` and `<a:name:id>` (custom emoji, animated or not): `:name:`;
- `<t:unix>` and `<t:unix:style>`: the instant in UTC, in a fixed English form per style (t
  `16:20 UTC`, T `16:20:30 UTC`, d `2021-04-20`, D `20 April 2021`, f and no style `20 April
  2021 16:20 UTC`, F `Tuesday, 20 April 2021 16:20 UTC`, R (relative: meaningless once
  exported) as f).

A token whose id the export does not name (someone not in `mentions`, a role nobody in the
file holds, a channel not exported), a time that is no number or out of range, and a style
Discord does not have stay as written. A message without `<` is not touched; the files of an
export exported with markdown on (the default) have none of these tokens.

Sources (Tyrrrz/DiscordChatExporter): DiscordChatExporter.Core/Exporting/JsonMessageWriter.cs
(the `guild`, `channel`, `mentions`, `roles` and `nickname` keys; content written raw when
markdown is off); .../Markdown/Parsing/MarkdownParser.cs (the token shapes and timestamp
styles); .../Exporting/PlainTextMarkdownVisitor.cs (how the exporter itself renders them).
"""

from __future__ import annotations

import io
import posixpath
import re
import threading
import zipfile
from datetime import UTC, datetime

import ijson
import pyarrow as pa
import pyarrow.fs as pafs

HEAD_BYTES = 64 << 10  # where a file's `channel` object is (the exporter writes it first)
_TOKEN = re.compile(r"<(@!?|@&|#)(\d+)>|<a?:([A-Za-z0-9_~-]+):\d+>|<t:(-?\d+)(?::([A-Za-z]))?>")
_MONTHS = "January February March April May June July August September October November December".split()
_DAYS = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()

_cache: dict[tuple, dict[str, str]] = {}
_lock = threading.Lock()


def markup(fs: pafs.FileSystem, path: str, member: str | None):
    """The function that renders one channel record's messages in place (the module)."""
    channels: dict[str, str] | None = None

    def render(rec: dict) -> None:
        nonlocal channels
        msgs = rec.get("messages")
        if not isinstance(msgs, list):
            return  # nest says what is wrong with the record
        raw = [m for m in msgs if isinstance(m, dict) and isinstance(m.get("content"), str) and "<" in m["content"]]
        if not raw:
            return
        if channels is None:
            channels = dict(export_channels(fs, path, member))
        own = rec.get("channel")
        if isinstance(own, dict) and own.get("id") and own.get("name"):
            channels[str(own["id"])] = str(own["name"])
        roles = _roles(msgs)
        for m in raw:
            people = {
                str(p["id"]): str(p.get("nickname") or p.get("name") or "")
                for p in _list(m.get("mentions"))
                if isinstance(p, dict) and p.get("id") is not None
            }
            m["content"] = render_text(m["content"], people, roles, channels)

    return render


def render_text(text: str, people: dict[str, str], roles: dict[str, str], channels: dict[str, str]) -> str:
    """Discord's raw tokens in `text` as a reader sees them (the module); unknown ones as written."""

    def token(m: re.Match) -> str:
        kind, ident, emoji, unix, style = m.groups()
        if emoji is not None:
            return f":{emoji}:"
        if unix is not None:
            return _when(unix, style) or m.group(0)
        name = (roles if kind == "@&" else channels if kind == "#" else people).get(ident)
        if not name:
            return m.group(0)
        return ("#" if kind == "#" else "@") + name

    return _TOKEN.sub(token, text)


def _when(unix: str, style: str | None) -> str | None:
    if style is not None and style not in "tTdDfFR":
        return None
    try:
        t = datetime.fromtimestamp(int(unix), UTC)
    except (ValueError, OverflowError, OSError):
        return None
    date = f"{t.day} {_MONTHS[t.month - 1]} {t.year}"
    if style == "t":
        return f"{t:%H:%M} UTC"
    if style == "T":
        return f"{t:%H:%M:%S} UTC"
    if style == "d":
        return f"{t.year:04d}-{t.month:02d}-{t.day:02d}"
    if style == "D":
        return date
    if style == "F":
        return f"{_DAYS[t.weekday()]}, {date} {t:%H:%M} UTC"
    return f"{date} {t:%H:%M} UTC"  # f, R and none


def _list(v) -> list:
    return v if isinstance(v, list) else []


def _roles(msgs: list) -> dict[str, str]:
    """role id -> name, from the `roles` of every author and mentioned person of the file."""
    out: dict[str, str] = {}
    for m in msgs:
        if not isinstance(m, dict):
            continue
        people = [m.get("author"), *_list(m.get("mentions"))]
        for p in people:
            for r in _list(p.get("roles")) if isinstance(p, dict) else []:
                if isinstance(r, dict) and r.get("id") is not None and r.get("name"):
                    out[str(r["id"])] = str(r["name"])
    return out


def export_channels(fs: pafs.FileSystem, path: str, member: str | None) -> dict[str, str]:
    """channel id -> name of every file of the export `path` (or its .zip member) belongs to:
    the .json files of its folder, or of the whole .zip; read once per export and version."""
    if member is not None:
        root, files = path, None
    else:
        root = posixpath.dirname(path.replace("\\", "/"))
        try:
            infos = fs.get_file_info(pafs.FileSelector(root, recursive=False))
        except (OSError, pa.ArrowException):
            infos = []
        files = sorted((i.path, i.size, i.mtime_ns) for i in infos if i.base_name.lower().endswith(".json"))
    try:
        version = tuple(files) if files is not None else tuple((i.size, i.mtime_ns) for i in fs.get_file_info([root]))
    except (OSError, pa.ArrowException):
        version = ()
    key = (root, version)
    with _lock:
        if key in _cache:
            return _cache[key]
    found: dict[str, str] = {}
    heads: list[bytes] = []
    try:
        if files is None:
            with fs.open_input_file(root) as fh, zipfile.ZipFile(fh) as z:
                for name in sorted(n for n in z.namelist() if n.lower().endswith(".json")):
                    with z.open(name) as m:
                        heads.append(m.read(HEAD_BYTES))
        else:
            for p, _, _ in files:
                with fs.open_input_file(p) as fh:
                    heads.append(fh.read(HEAD_BYTES))
    except (OSError, KeyError, zipfile.BadZipFile, pa.ArrowException):
        pass  # names what it could read; the files themselves are read (and refused) one by one
    for head in heads:
        channel = _channel(head)
        if channel is not None:
            found[channel[0]] = channel[1]
    with _lock:
        if len(_cache) >= 16:
            _cache.pop(next(iter(_cache)))
        _cache[key] = found
    return found


def _channel(head: bytes) -> tuple[str, str] | None:
    """(id, name) of the `channel` object a file starts with, or None."""
    try:
        for c in ijson.items(io.BytesIO(head), "channel"):
            if isinstance(c, dict) and c.get("id") is not None and isinstance(c.get("name"), str):
                return str(c["id"]), c["name"]
            return None
    except (ijson.JSONError, ijson.IncompleteJSONError, UnicodeDecodeError):
        return None
    return None
