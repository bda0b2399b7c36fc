"""Attachments: a message's images and files, noted in its text or sent as MemOS content parts.

The mapping's `attachments.columns` name where an export keeps them (Telegram's `photo` path,
DiscordChatExporter's `attachments[]`, WhatsApp's attached file). Three steps, one per place
of the data path:

- map (`collect`): each attachment's note for the text ("[image: a.jpg]"), and in parts mode
  the message's attachments as a JSON list `[{kind, name, ref}]` in the `attachments` column;
- stage (`locate`, parts mode): each ref found where it points: a URL is sent as it is; a path
  is looked up next to the file that named it (in its folder, or in its .zip), and gets its
  location under the source (`at`), size and version; one that is missing, larger than
  `load.max_attachment_bytes_per_request` or of a type MemOS does not read stays a note only,
  counted by why. Sizes come from the listing; no file is read here;
- batch/send (`part_json`, `inline`): the message's content becomes `[text part, parts...]`,
  a file inside the export written as a placeholder that names it; the sender reads the file
  and puts its base64 data in place of the placeholder just before the request goes out, so a
  staged bucket holds names, not bytes, and a request's bytes are in memory only while it is
  sent.

Per row Python runs only over the rows that have an attachment (a minority of any chat); the
rest of the path stays columnar.
"""

from __future__ import annotations

import base64
import json
import os
import posixpath
import re
import zipfile
from collections import Counter
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs

from core.config import AttachmentColumn, LoadConfig, Mapping
from tasks.extract.streams import MEMBER_SEP

#: what MemOS reads: images by URL or data URL, files (file_data: URL or base64) of these types
IMAGE_TYPES = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".gif": "image/gif",
    ".webp": "image/webp",
}
FILE_TYPES = {
    ".txt": "text/plain",
    ".pdf": "application/pdf",
    ".doc": "application/msword",
    ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ".json": "application/json",
    ".md": "text/markdown",
    ".xml": "application/xml",
}
#: the placeholder a part's data is written as until it is sent: `memos-etl-attachment:<at>`
PLACEHOLDER = "memos-etl-attachment:"
_URL = re.compile(r"^https?://", re.IGNORECASE)
_PATHLIKE = re.compile(r"^[^\n\r()<>|\"*?]+\.[A-Za-z0-9]{1,8}$")


def _items(value: str) -> list:
    """A column value as a list of attachment entries: JSON (a list or one object) or a path."""
    text = value.strip()
    if text[:1] in "[{":
        try:
            parsed = json.loads(text)
        except ValueError:
            return [value]
        return parsed if isinstance(parsed, list) else [parsed]
    return [value]


def _kind(cfg: AttachmentColumn, name: str) -> str:
    if cfg.kind != "auto":
        return cfg.kind
    return "image" if os.path.splitext(name.lower())[1] in IMAGE_TYPES else "file"


def _entry(cfg: AttachmentColumn, item, name_value) -> dict | None:
    if isinstance(item, dict):
        ref = item.get(cfg.ref) if cfg.ref else (item.get("url") or item.get("path"))
        name = item.get(cfg.name) if cfg.name else None
    elif isinstance(item, str):
        ref, name = item, name_value
    else:
        return None
    ref = ref.strip() if isinstance(ref, str) else None
    if cfg.require_name and not name:
        return None
    if not name:
        name = posixpath.basename(ref.split("?", 1)[0]) if ref else None
    if not name and not ref:
        return None
    name = str(name or "?")
    reachable = ref if ref and (_URL.match(ref) or _PATHLIKE.match(ref)) else None
    return {"kind": _kind(cfg, name), "name": name, "ref": reachable}


def collect(mapping: Mapping, rb: pa.RecordBatch) -> tuple[pa.Array | None, pa.Array | None]:
    """(each row's notes, to append to its text, or null; each row's attachments as JSON in
    parts mode, else null). (None, None) when the mapping has no attachments or skips them."""
    cfg = mapping.attachments
    if not cfg.columns or cfg.mode == "skip":
        return None, None
    n = rb.num_rows
    notes: list[list[str]] = [[] for _ in range(n)]
    found: list[list[dict]] = [[] for _ in range(n)]
    any_found = False
    for col in cfg.columns:
        if col.column not in rb.schema.names:
            continue
        arr = rb.column(col.column)
        if pa.types.is_null(arr.type):
            continue
        text = pc.cast(arr, pa.string(), safe=False) if not pa.types.is_string(arr.type) else arr
        rows = np.flatnonzero(pc.fill_null(pc.greater(pc.utf8_length(text), 0), False).to_numpy(zero_copy_only=False))
        if not len(rows):
            continue
        take = pa.array(rows)
        values = text.take(take).to_pylist()
        names = None
        if col.name and col.name in rb.schema.names:  # a text value's name from its own column
            names = pc.cast(rb.column(col.name), pa.string(), safe=False).take(take).to_pylist()
        for j, (i, value) in enumerate(zip(rows.tolist(), values)):
            for item in _items(value):
                e = _entry(col, item, names[j] if names else None)
                if e is None:
                    continue
                if col.note:
                    notes[i].append(col.note.format(name=e["name"], kind=e["kind"]))
                found[i].append(e)
                any_found = True
    note_arr = pa.array(["\n".join(x) if x else None for x in notes], pa.string())
    if cfg.mode != "parts" or not any_found:
        return note_arr, None
    return note_arr, pa.array(
        [json.dumps(x, ensure_ascii=False, sort_keys=True) if x else None for x in found], pa.string()
    )


def append_notes(content: pa.Array, notes: pa.Array) -> pa.Array:
    """The notes on lines of their own after the text; alone where the message has none."""
    base = pc.fill_null(content, "")
    alone = pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(base)), 0)
    joined = pc.if_else(alone, notes, pc.binary_join_element_wise(base, "\n", notes, ""))
    return pc.if_else(pc.is_valid(notes), joined, content)


OUTSIDE = "outside the export (its path or a link on it leads out of the source): not read"


def _inside(path: str, unit) -> bool:
    """Whether a local file, its links followed, is under the source's folder (the unit's
    path less its location under the source; a source of one file: the file's folder)."""
    where = unit.path[: len(unit.path) - len(unit.rel)] if unit.path.endswith(unit.rel) else ""
    root = os.path.realpath(where or os.path.dirname(unit.path) or ".")
    real = os.path.realpath(path)
    return real == root or real.startswith(root.rstrip(os.sep) + os.sep)


class Located:
    """Where a unit's relative paths lead: its folder, or its .zip archive (the listing is
    read once per archive)."""

    def __init__(self, fs: pafs.FileSystem | None, unit) -> None:
        self.fs, self.unit = fs, unit
        self._zip: dict[str, tuple[int, str]] | None = None

    def find(self, ref: str) -> tuple[str, int, str] | str | None:
        """(location under the source, size, version) of a path next to the unit; None when
        there is none; why not, when the path leads out of the source (OUTSIDE)."""
        u = self.unit
        if self.fs is None:  # SQL: rows, not files
            return None
        if u.member:  # inside an archive: a member of the same archive
            member = posixpath.normpath(posixpath.join(posixpath.dirname(u.member), ref))
            if self._zip is None:
                try:
                    with self.fs.open_input_file(u.path) as fh:
                        self._zip = {
                            i.filename: (i.file_size, f"{i.CRC:08x}")
                            for i in zipfile.ZipFile(fh).infolist()
                            if not i.is_dir()
                        }
                except (zipfile.BadZipFile, OSError, pa.ArrowException):
                    self._zip = {}
            hit = self._zip.get(member)
            archive = u.rel.rsplit(MEMBER_SEP, 1)[0]
            return (f"{archive}{MEMBER_SEP}{member}", hit[0], hit[1]) if hit else None
        rel = posixpath.normpath(posixpath.join(posixpath.dirname(u.rel), ref))
        if rel.startswith("../") or rel.startswith("/"):
            return OUTSIDE  # outside the source: not the export's
        path = posixpath.normpath(posixpath.join(posixpath.dirname(u.path), ref))
        if isinstance(self.fs, pafs.LocalFileSystem) and not _inside(path, u):
            return OUTSIDE  # a link (the file, or a folder on its way) leads out of the export
        try:
            info = self.fs.get_file_info(path)
        except (OSError, pa.ArrowException):
            return None
        if info.type != pafs.FileType.File:
            return None
        return rel, int(info.size or 0), f"{info.size}:{getattr(info, 'mtime_ns', None) or 0}"


def locate(table: pa.Table, found: Located, load: LoadConfig, counts: Counter) -> pa.Table:
    """The staged rows' attachments resolved (parts mode): each sendable one gets `send`
    (url | file) and, for a file, its location, size and version; the others `noted` with
    why, counted in `counts`."""
    if "attachments" not in table.schema.names or table.column("attachments").null_count == table.num_rows:
        return table
    col = table.column("attachments").combine_chunks()
    rows = np.flatnonzero(col.is_valid().to_numpy(zero_copy_only=False))
    fixed = []
    for raw in col.take(pa.array(rows)).to_pylist():
        out = []
        for e in json.loads(raw):
            e = dict(e)
            ext = os.path.splitext(e["name"].lower())[1]
            types = IMAGE_TYPES if e["kind"] == "image" else FILE_TYPES
            ref = e.get("ref")
            if not ref:
                e["noted"] = "not in the export"
            elif _URL.match(ref):
                e["send"] = "url"
            elif ext not in types and os.path.splitext(ref.lower())[1] not in types:
                e["noted"] = "not a type MemOS reads"
            else:
                where = found.find(ref)
                if isinstance(where, str):
                    e["noted"] = where
                elif where is None:
                    e["noted"] = "not in the export"
                elif where[1] > load.max_attachment_bytes_per_request:
                    e["noted"] = "larger than load.max_attachment_bytes_per_request"
                else:
                    e.update(send="file", at=where[0], bytes=where[1], version=where[2])
            if "noted" in e:  # the sent ones are counted when they are sent (tasks/load/send.py)
                counts[f"noted: {e['noted']}"] += 1
            out.append(e)
        fixed.append(json.dumps(out, ensure_ascii=False, sort_keys=True))
    mask = col.is_valid()
    arr = pc.replace_with_mask(col, mask, pa.array(fixed, pa.string()))
    return table.set_column(table.schema.get_field_index("attachments"), "attachments", arr)


def count_parts(messages_json: str) -> int:
    """Parts other than text in a request's messages (a `"type": ...` key outside any string:
    inside one its quotes are escaped)."""
    return messages_json.count('"type": "image_url"') + messages_json.count('"type": "file"')


def parts_of(raw: str | None) -> list[dict]:
    """A row's sendable attachments as MemOS content parts (files as placeholders)."""
    if not raw:
        return []
    out = []
    for e in json.loads(raw):
        send = e.get("send")
        if not send:
            continue
        data = e["ref"] if send == "url" else f"{PLACEHOLDER}{e['at']}"
        if e["kind"] == "image":
            out.append({"type": "image_url", "image_url": {"url": data}})
        else:
            out.append({"type": "file", "file": {"file_data": data, "filename": e["name"]}})
    return out


def part_bytes(raw: str | None) -> tuple[int, int]:
    """(bytes of files, parts) a row's attachments add to its request."""
    if not raw:
        return 0, 0
    sent = [e for e in json.loads(raw) if e.get("send")]
    return sum(int(e.get("bytes") or 0) for e in sent), len(sent)


def message_with_parts(role: str, text: str, chat_time: str | None, raw: str) -> str:
    """A message whose content is parts, as JSON text the way message_json writes messages."""
    sent = parts_of(raw)
    m: dict = {"role": role, "content": ([{"type": "text", "text": text}] if text else []) + sent if sent else text}
    if chat_time is not None:
        m["chat_time"] = chat_time
    return json.dumps(m, ensure_ascii=False, sort_keys=True)


def inline(messages_json: str, read: Callable[[str], bytes] | None) -> tuple[str, list[str]]:
    """The request's messages with each file placeholder replaced by the file's data (a data
    URL for an image, base64 for a file): (JSON text, why each file that could not be read
    now was left out). A part left out keeps its note in the message's text."""
    if PLACEHOLDER not in messages_json:
        return messages_json, []
    missing: list[str] = []
    messages = json.loads(messages_json)
    for m in messages:
        content = m.get("content")
        if not isinstance(content, list):
            continue
        kept = []
        for part in content:
            slot = part.get("image_url") if part.get("type") == "image_url" else part.get("file")
            key = "url" if part.get("type") == "image_url" else "file_data"
            ref = slot.get(key) if isinstance(slot, dict) else None
            if not (isinstance(ref, str) and ref.startswith(PLACEHOLDER)):
                kept.append(part)
                continue
            at = ref[len(PLACEHOLDER) :]
            try:
                if read is None:
                    raise OSError("this source cannot read files")
                data = read(at)
            except OSError as exc:
                missing.append(f"{at}: {exc}")
                continue
            b64 = base64.b64encode(data).decode("ascii")
            ext = os.path.splitext(at.rsplit(MEMBER_SEP, 1)[-1].lower())[1]
            slot[key] = f"data:{IMAGE_TYPES[ext]};base64,{b64}" if key == "url" and ext in IMAGE_TYPES else b64
            kept.append(part)
        if kept and all(p.get("type") == "text" for p in kept):
            m["content"] = "".join(str(p.get("text") or "") for p in kept)  # nothing but its text is left
        elif not kept:
            m["content"] = ""
        else:
            m["content"] = kept
    return json.dumps(messages, ensure_ascii=False, sort_keys=True), missing


def text_of(content) -> str | None:
    """A message's text when its content is parts (the text parts joined): what the hashes
    that compare our messages with the target's copy read."""
    if isinstance(content, list):
        return "".join(str(p.get("text") or "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return content
