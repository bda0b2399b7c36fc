"""Which preset is this input? A file, a folder or a .zip is sniffed by its files' names and
first bytes (never read whole), and matched against what each preset's format looks like.
`memos-etl detect PATH` prints the matches with a mapping to copy; `preset: auto` in a
mapping takes the one match at load time (and the run's report names it).

The signs are the formats' own keys near their start, checked on the first 64 KB of each
candidate file (decompressed; archive members opened in place): Claude's `chat_messages` and
`sender`, ChatGPT's `mapping` tree of nodes, Telegram's `chats` list or a chat's `messages`
with `date_unixtime`, DiscordChatExporter's `guild`, `channel` and `messages`, an OpenAI-chat
line's `messages` with `role`, ShareGPT's `conversations` with `from`/`value`, a dialogue's
`session_1` and `speaker_a`, a CSV with a `messages` column of JSON, WhatsApp's dated lines,
a Slack workspace export's users.json and channels.json.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import re
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

HEAD = 64 << 10  # bytes of each candidate looked at
MAX_FILES = 2000  # candidates looked at under a folder
_TEXT = (".json", ".jsonl", ".ndjson", ".txt", ".csv")
_COMPRESSED: dict[str, Callable] = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}


@dataclass
class Match:
    preset: str | None  # None: a format we recognise without a preset
    what: str  # the format, in words
    files: list[str] = field(default_factory=list)  # the files or members that matched
    settings: dict = field(default_factory=dict)  # what a mapping sets beyond preset and source
    needs: dict = field(default_factory=dict)  # constants the user must fill in -> what they are


def _candidates(path: Path) -> Iterator[tuple[str, Callable[[], bytes]]]:
    """(name, head reader) for each file the input holds: the file itself, the files of a
    folder (and the members of archives in it), the members of a .zip."""

    def from_zip(zpath: Path, shown: str) -> Iterator[tuple[str, Callable[[], bytes]]]:
        try:
            z = zipfile.ZipFile(zpath)
        except (zipfile.BadZipFile, OSError):
            return
        for info in z.infolist()[:MAX_FILES]:
            base = info.filename.rsplit("/", 1)[-1]
            if info.is_dir() or info.filename.startswith("__MACOSX/") or base.startswith(".") or not base:
                continue

            def head(i=info) -> bytes:
                with z.open(i) as fh:
                    return fh.read(HEAD)

            yield f"{shown}!{info.filename}", head

    def from_file(p: Path, shown: str) -> Iterator[tuple[str, Callable[[], bytes]]]:
        suffix = p.suffix.lower()
        if suffix == ".zip":
            yield from from_zip(p, shown)
            return
        opener = _COMPRESSED.get(suffix)

        def head() -> bytes:
            with opener(p, "rb") if opener is not None else open(p, "rb") as fh:
                return fh.read(HEAD)

        yield shown, head

    if path.is_dir():
        files = sorted(
            p for p in path.rglob("*") if p.is_file() and not any(x.startswith(".") for x in p.relative_to(path).parts)
        )
        for p in files[:MAX_FILES]:
            yield from from_file(p, str(p.relative_to(path)))
    elif path.is_file():
        yield from from_file(path, path.name)


def _text(raw: bytes) -> str:
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    elif raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return raw.decode("utf-16", errors="ignore")
    return raw.decode("utf-8", errors="ignore")


def _has(head: str, *keys: str) -> bool:
    return all(f'"{k}"' in head for k in keys)


_WHATSAPP = re.compile(r"^\[?\d{1,4}[./-]\s?\d{1,4}[./-]\s?\d{1,4}[,\u060c]?\s+\d{1,2}[.:]\d{2}", re.M)
_MARKS = str.maketrans("", "", "\u200e\u200f\u202a\u202b\u202c\u061c")  # direction marks (Arabic dates hold them)
_TELEGRAM_ID = re.compile(r'"personal_information"\s*:\s*\{[^}]*?"user_id"\s*:\s*(\d+)')


def _what(name: str, head: str) -> Match | None:
    """The format of one file, from its name and first bytes."""
    base = name.rsplit("!", 1)[-1].rsplit("/", 1)[-1].lower()
    start = head.lstrip()[:1]
    if base.endswith(".txt") and len(_WHATSAPP.findall(head.translate(_MARKS))) >= 2:
        return Match(
            "whatsapp-txt",
            'a WhatsApp chat export ("Export chat" text)',
            needs={"self": "your name as the export writes it"},
        )
    if not base.endswith(_TEXT) and not base.endswith(tuple(s + c for s in _TEXT for c in _COMPRESSED)):
        return None
    if start == "[" and _has(head, "chat_messages", "sender"):
        return Match(
            "claude-export",
            "a Claude.ai export (conversations.json)",
            needs={"owner": "the MemOS user id of the person the export is of"},
        )
    if start == "[" and _has(head, "mapping") and _has(head, "parent", "children"):
        return Match(
            "chatgpt-export",
            "a ChatGPT export (conversations.json)",
            needs={"owner": "the MemOS user id of the person the export is of"},
        )
    if start == "{" and _has(head, "guild", "channel", "messages"):
        return Match(
            "discord-export",
            "a DiscordChatExporter channel (JSON; discord-export-each loads it for every participant)",
            needs={"self": "your Discord user id"},
        )
    if start == "{" and (_has(head, "chats") and _has(head, "about") or _has(head, "personal_information")):
        m = Match(
            "telegram-export",
            "a Telegram Desktop export (result.json; telegram-export-each: for every participant)",
            needs={"self": 'your from_id, "user" and your numeric id'},
        )
        found = _TELEGRAM_ID.search(head)
        if found:
            m.settings["constants"] = {"self": f"user{found.group(1)}"}
            m.needs = {}
        return m
    if start == "{" and _has(head, "messages") and (_has(head, "date_unixtime") or _has(head, "from_id")):
        return Match(
            "telegram-export",
            "a Telegram Desktop single-chat export (result.json)",
            settings={"source": {"records": None}},
            needs={"self": 'your from_id, "user" and your numeric id'},
        )
    if base.endswith(".csv"):
        header = [c.strip().strip('"') for c in head.split("\n", 1)[0].lower().split(",")]
        if "messages" in header and '""role""' in head:
            return Match("table-json-column", "a table with the messages in a JSON column (CSV)")
        return None
    if _has(head, "session_1", "speaker_a"):
        return Match("dialogue-sessions", "a two-speaker dialogue dataset (LoCoMo-style)")
    if _has(head, "conversations", "from", "value"):
        return Match("sharegpt", "ShareGPT conversations")
    if start == "{" and _has(head, "conversationId", "parentMessageId", "isCreatedByUser"):
        return Match("librechat", "a mongoexport of LibreChat's messages collection (JSON lines)")
    if start == "{" and _has(head, "messages", "role", "content"):
        return Match("openai-chat", "OpenAI-chat JSONL (a conversation a line)")
    return None


def detect(path: str | os.PathLike, describe: Callable[[str, str], dict] | None = None) -> list[Match]:
    """The formats the input at `path` holds, one Match per format with the files that have it.
    `describe(preset, head)`: settings a reader can tell from a match's first file (a WhatsApp
    chat's language), merged into the match's settings."""
    p = Path(path)
    names: list[str] = []
    found: dict[tuple, Match] = {}
    for name, head in _candidates(p):
        names.append(name.rsplit("!", 1)[-1].rsplit("/", 1)[-1])
        try:
            text = _text(head())
            m = _what(name, text)
        except (OSError, EOFError, zipfile.BadZipFile, lzma.LZMAError, ValueError):
            continue
        if m is None:
            continue
        key = (m.preset, m.what)
        if key in found:
            found[key].files.append(name)
        else:
            m.files.append(name)
            if describe is not None and m.preset is not None:
                for k, v in describe(m.preset, text).items():
                    m.settings[k] = {**m.settings.get(k, {}), **v} if isinstance(v, dict) else v
            found[key] = m
    if {"users.json", "channels.json"} <= set(names):
        days = [n for n in names if re.match(r"^\d{4}-\d{2}-\d{2}\.json$", n)]
        found = {k: m for k, m in found.items() if m.preset is not None}  # the day files are Slack's
        found[("slack-export", "slack")] = Match(
            "slack-export",
            f"a Slack workspace export ({len(days)} day files; slack-export-each loads it for every member)",
            [str(p)],
            needs={"self": "your Slack user id (U...)"},
        )
    return list(found.values())


LOOKED_FOR = (
    "Claude's conversations.json (chat_messages), ChatGPT's conversations.json (mapping), Telegram's "
    "result.json (chats or messages with date_unixtime), DiscordChatExporter JSON (guild, channel, "
    "messages), OpenAI-chat JSONL (messages with role), ShareGPT (conversations with from/value), "
    "dialogue sessions (session_1, speaker_a), a CSV with a messages column of JSON, "
    "a Slack export (users.json, channels.json), WhatsApp's dated lines (.txt), a mongoexport of "
    "LibreChat's messages (conversationId, parentMessageId, isCreatedByUser)"
)
