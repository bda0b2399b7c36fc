"""Slack workspace exports: a folder per conversation of one JSON array per day
(`general/2024-01-02.json`), beside the workspace's directory (`users.json`, `channels.json`,
`groups.json`, `mpims.json`, `dms.json`), zipped as downloaded or unzipped.

Each day file is a unit; its messages become flat rows, with what the day file alone does not
say taken from the directory (read once per export, from the same archive or folder):

- `channel` (the folder: a channel's name, or a DM's id) and `channel_id`;
- `user` (the author's id; a bot's `bot_id`) and `name` (their display name, real name or
  handle, in that order, from users.json; a member from another organisation, whom
  users.json does not list (Slack Connect), from the `user_profile` their messages carry;
  an integration's `bot_message` by its `username`, the name it posted under);
- `text` with Slack's markup made plain: `<@U123>` and `<@U123|x>` become `@Name` (an
  external member's name found in any message of theirs in the export: read once per
  export, and only when a mention names someone users.json does not),
  `<#C123|general>` `#general`, `<!here>` `@here`, `<https://a.b|label>` `label (https://a.b)`,
  and `&lt; &gt; &amp;` their characters (in that order, so an escaped `&lt;@U1&gt;` stays
  text); files are noted after it (`[file: plan.pdf]`);
- `time` (UTC, from `ts`: seconds.microseconds), `ts`, `thread` (the thread's `ts`, or the
  message's own), `kind` (`subtype`, or `message`), `edited` (true when edited: its text is
  the final one);
- `conversation`: the channel id, or with `source.slack_threads: own` a thread's parent and
  replies as a conversation of their own (`<channel id>/<thread ts>`);
- with `source.slack_each_member`, one copy of every message per human member of its
  channel (`member`): the channel loaded into each member's memory.

A day file that is not a JSON array of objects is one BadRow; a message that is not an
object is one BadRow (its place in the day's array); the rest of the day loads.
"""

from __future__ import annotations

import html
import posixpath
import re
import threading
import zipfile
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson
import pyarrow as pa
import pyarrow.fs as pafs

from tasks.extract.blocks import ROW_COLUMN
from tasks.quarantine import PREVIEW_CHARS, BadRow, Reason

DIRECTORY = ("users.json", "org_users.json", "channels.json", "groups.json", "mpims.json", "dms.json")
DAY = re.compile(r"^\d{4}-\d{2}-\d{2}\.json$")
_TOKEN = re.compile(r"<([^<>]+)>")


@dataclass
class Directory:
    """The workspace's people and conversations, as its export lists them."""

    names: dict[str, str] = field(default_factory=dict)  # user id -> display name
    bots: set[str] = field(default_factory=set)  # user ids that are bots
    channels: dict[str, dict] = field(default_factory=dict)  # folder -> {id, name, members}
    by_id: dict[str, str] = field(default_factory=dict)  # channel id -> name
    # user id -> name from the `user_profile` of their messages (members from another
    # organisation); None until a mention needs it (then every day file is read once)
    guests: dict[str, str] | None = None
    root: str = ""  # the export: its folder, or the .zip
    where: str | None = None  # in a .zip: the folder of the export inside it ("" at the top); None: a folder


_cache: dict[tuple, Directory] = {}
_lock = threading.Lock()


def _read_json(fs: pafs.FileSystem, path: str, member: str | None):
    try:
        if member is not None:
            with fs.open_input_file(path) as fh, zipfile.ZipFile(fh) as z:
                return orjson.loads(z.read(member))
        with fs.open_input_file(path) as fh:
            return orjson.loads(fh.read())
    except (KeyError, FileNotFoundError, orjson.JSONDecodeError, OSError):
        return None


def directory(fs: pafs.FileSystem, path: str, member: str | None) -> Directory:
    """The directory of the export a day file belongs to (cached per export)."""
    if member is not None:
        root, where = path, posixpath.dirname(posixpath.dirname(member))
    else:
        root, where = posixpath.dirname(posixpath.dirname(path.replace("\\", "/"))), ""
    # cached per export and its version: a re-downloaded export at the same path is read anew
    probe = [root] if member is not None else [posixpath.join(root, n) for n in ("users.json", "channels.json")]
    try:
        infos = fs.get_file_info(probe)
        version = tuple((i.size, i.mtime_ns) for i in infos)
    except (OSError, pa.ArrowException):
        version = ()
    key = (root, where, version)
    with _lock:
        if key in _cache:
            return _cache[key]

    def load(name: str):
        if member is not None:
            return _read_json(fs, root, posixpath.join(where, name) if where else name)
        return _read_json(fs, posixpath.join(root, name), None)

    d = Directory(root=root, where=where if member is not None else None)
    for u in (load("users.json") or []) + (load("org_users.json") or []):
        if not isinstance(u, dict) or not u.get("id"):
            continue
        prof: dict = u["profile"] if isinstance(u.get("profile"), dict) else {}
        d.names[u["id"]] = (
            prof.get("display_name") or prof.get("real_name") or u.get("real_name") or u.get("name") or u["id"]
        )
        if u.get("is_bot") or prof.get("bot_id"):
            d.bots.add(u["id"])
    for name in ("channels.json", "groups.json", "mpims.json", "dms.json"):
        for c in load(name) or []:
            if not isinstance(c, dict) or not c.get("id"):
                continue
            folder = c["id"] if name == "dms.json" else c.get("name") or c["id"]
            members = [m for m in (c.get("members") or []) if isinstance(m, str)]
            d.channels[folder] = {"id": c["id"], "name": c.get("name") or c["id"], "members": members}
            d.by_id[c["id"]] = c.get("name") or c["id"]
    with _lock:
        if len(_cache) >= 16:  # a few exports per process at most
            _cache.pop(next(iter(_cache)))
        _cache[key] = d
    return d


def _profile_name(msg: dict) -> str | None:
    prof = msg.get("user_profile")
    if not isinstance(prof, dict):
        return None
    name = prof.get("display_name") or prof.get("real_name")
    return name if isinstance(name, str) and name else None


def _guests(fs: pafs.FileSystem, d: Directory) -> dict[str, str]:
    """user id -> name from the `user_profile` of every message of the export that has one
    (members from another organisation, whom users.json does not list), read once per export;
    where a profile changed, the last day's name."""
    with _lock:
        if d.guests is not None:
            return d.guests
    found: dict[str, str] = {}
    days: list[tuple[str, bytes]] = []
    try:
        if d.where is not None:
            with fs.open_input_file(d.root) as fh, zipfile.ZipFile(fh) as z:
                names = sorted(
                    n
                    for n in z.namelist()
                    if DAY.match(posixpath.basename(n)) and (not d.where or n.startswith(d.where + "/"))
                )
                days = [(n, z.read(n)) for n in names]
        else:
            infos = fs.get_file_info(pafs.FileSelector(d.root, recursive=True))
            for info in sorted((i for i in infos if DAY.match(i.base_name)), key=lambda i: i.path):
                with fs.open_input_file(info.path) as fh:
                    days.append((info.path, fh.read()))
    except (OSError, KeyError, zipfile.BadZipFile, pa.ArrowException):
        days = []
    for _, raw in sorted(days, key=lambda nd: posixpath.basename(nd[0])):
        try:
            day = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue  # that day file is quarantined by its own read
        for msg in day if isinstance(day, list) else []:
            if isinstance(msg, dict) and isinstance(msg.get("user"), str) and (name := _profile_name(msg)):
                found[msg["user"]] = name
    with _lock:
        d.guests = found
    return found


def plain(text: str, d: Directory) -> str:
    """Slack's markup as plain text (see the module)."""

    def token(m: re.Match) -> str:
        inner = m.group(1)
        target, _, label = inner.partition("|")
        if target.startswith("@"):
            who = target[1:]
            return "@" + (d.names.get(who) or (d.guests or {}).get(who) or label or who)
        if target.startswith("#"):
            return "#" + (label or d.by_id.get(target[1:]) or target[1:])
        if target.startswith("!"):
            word = target[1:].split("^", 1)[0]
            return label if label else f"@{word}"
        return f"{label} ({target})" if label and label != target else target

    return html.unescape(_TOKEN.sub(token, text)) if "<" in text or "&" in text else text


_MENTION = re.compile(r"<@([A-Z0-9]+)")


def _unknown_mention(text: str, d: Directory) -> bool:
    return "<@" in text and any(who not in d.names for who in _MENTION.findall(text))


def _time(ts: str) -> str:
    sec, _, frac = ts.partition(".")
    t = datetime.fromtimestamp(int(sec), UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S") + (f".{frac[:6].ljust(6, '0')}" if frac else "") + "Z"


def slack_batches(
    fs: pafs.FileSystem,
    path: str,
    member: str | None,
    rel: str,
    bad: list[BadRow],
    threads: str = "channel",
    each_member: bool = False,
    max_record_bytes: int = 64 << 20,
    only: Collection[str] | None = None,
) -> Iterator[tuple[int, pa.RecordBatch]]:
    """(0, the day's rows) of one day file."""
    d = directory(fs, path, member)
    folder = posixpath.basename(posixpath.dirname((member or path).replace("\\", "/")))
    chan = d.channels.get(folder, {"id": folder, "name": folder, "members": []})
    try:
        if member is not None:
            with fs.open_input_file(path) as fh, zipfile.ZipFile(fh) as z:
                raw = z.read(member)
        else:
            with fs.open_input_file(path) as fh:
                raw = fh.read()
    except (KeyError, OSError) as exc:
        bad.append(BadRow(0, "file", Reason("unreadable", f"cannot read: {exc}")))
        return
    if not raw.strip():
        return  # an empty day
    if len(raw) > max_record_bytes:
        bad.append(BadRow(0, "file", Reason("too long", f"{len(raw):,} bytes, more than source.max_record_bytes")))
        return
    try:
        day = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        head = raw[:PREVIEW_CHARS].decode("utf-8", "replace")
        bad.append(BadRow(0, "file", Reason("not JSON", f"not JSON: {exc}"), head))
        return
    if not isinstance(day, list):
        bad.append(BadRow(0, "file", Reason("not a day of messages", "not a JSON array of messages")))
        return
    cols: dict[str, list] = {
        k: []
        for k in (
            "channel",
            "channel_id",
            "conversation",
            "user",
            "name",
            "text",
            "time",
            "ts",
            "thread",
            "kind",
            "edited",
            "member",
            ROW_COLUMN,
        )
    }
    if d.guests is None and any(
        isinstance(m, dict) and isinstance(m.get("text"), str) and _unknown_mention(m["text"], d) for m in day
    ):
        _guests(fs, d)  # someone users.json does not name is mentioned: read their profiles
    humans = [m for m in chan["members"] if m not in d.bots and (only is None or m in only)] if each_member else [None]
    for i, msg in enumerate(day):
        if not isinstance(msg, dict) or not isinstance(msg.get("ts"), str):
            bad.append(BadRow(i, f"message {i}", Reason("not a message", "not a message object with a ts")))
            continue
        user = msg.get("user") or msg.get("bot_id")
        bot_profile = msg["bot_profile"] if isinstance(msg.get("bot_profile"), dict) else {}
        if msg.get("subtype") == "bot_message" and not msg.get("user"):  # an integration: the name it posted as
            name = msg.get("username") or bot_profile.get("name") or (d.names.get(user) if user else None) or user
        else:
            name = (d.names.get(user) if user else None) or _profile_name(msg) or msg.get("username") or user
        text = plain(msg.get("text") or "", d)
        files = [f for f in (msg.get("files") or ([msg["file"]] if isinstance(msg.get("file"), dict) else []))]
        noted = [
            f"[file: {f.get('name') or f.get('title') or f.get('id') or '?'}]"
            for f in files
            if isinstance(f, dict) and f.get("mode") not in ("tombstone", "hidden_by_limit")
        ]
        if noted:
            text = "\n".join([text, *noted]) if text else "\n".join(noted)
        try:
            when = _time(msg["ts"])
        except ValueError:
            when = msg["ts"]  # validation says it is no time
        thread = msg.get("thread_ts") if isinstance(msg.get("thread_ts"), str) else msg["ts"]
        threaded = isinstance(msg.get("thread_ts"), str) and (msg.get("reply_count") or thread != msg["ts"])
        conversation = f"{chan['id']}/{thread}" if threads == "own" and threaded else chan["id"]
        for who in humans:
            cols["channel"].append(folder)
            cols["channel_id"].append(chan["id"])
            cols["conversation"].append(conversation)
            cols["user"].append(user)
            cols["name"].append(name)
            cols["text"].append(text)
            cols["time"].append(when)
            cols["ts"].append(msg["ts"])
            cols["thread"].append(thread)
            cols["kind"].append(msg.get("subtype") or "message")
            cols["edited"].append(bool(msg.get("edited")))
            cols["member"].append(who)
            cols[ROW_COLUMN].append(i)
    if cols["ts"]:
        types = {"edited": pa.bool_(), ROW_COLUMN: pa.int64()}
        yield 0, pa.record_batch({k: pa.array(v, types.get(k, pa.string())) for k, v in cols.items()})
