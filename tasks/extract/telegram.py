"""Telegram Desktop's JSON export (`source.app: telegram`), read its way.

Both shapes the export takes are read with the same mapping: a full export (`result.json` with
every chat under `chats.list`, the preset's `source.records`) and a one-chat export (the chat
itself is the document: `{name, type, id, messages}`). A document that holds no `chats` key is
read again as that one chat; a full export with no chats is nothing.

Each chat is completed in place before it is written as the record's text (tasks/nest/ then
walks it like any other record); two keys are added to every message:

- `as_text`: what a message that is not text shows, as text: a poll (its question, each
  option with its votes, the total), a shared contact (name and phone), a location (latitude,
  longitude), a venue (place name, address), a game (its title), a die (its emoji and value,
  where a tool wrote one: Telegram Desktop itself leaves dice out). Absent for other messages.
- `conversation`: the chat's id, or in a forum `<chat id>-<topic id>` for a message in a topic
  other than General. The export writes no topic on a message: a message posted in a topic
  replies (`reply_to_message_id`) to the topic's `topic_created` service message, and a reply
  inside a topic to a message of it; so the topic is the `topic_created` message the reply
  chain leads to. A chain that ends elsewhere (General, or a message outside the export) is
  the chat's own conversation.

Where these facts come from (Telegram Desktop, Telegram/SourceFiles/export/): the keys of
poll, contact_information, location_information, place_name, address, game_title and the
topic_created action in output/export_output_json.cpp; `// #TODO dice` and the reply header
(only reply_to_msg_id exported) in data/export_data_types.cpp.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import BinaryIO

import orjson
import pyarrow as pa

from tasks.extract.blocks import RECORD_COLUMN
from tasks.extract.records import json_items
from tasks.quarantine import BadRow

MAX_CHAIN = 10_000  # reply links followed at most (a cycle or a runaway chain ends as General)


def telegram_items(
    open_stream: Callable[[], AbstractContextManager[BinaryIO]],
    bad: list[BadRow],
    max_record_bytes: int,
    records: str | None,
) -> Iterator[tuple[int, pa.RecordBatch]]:
    """(record number, batch) of the chats of a Telegram export, either shape (the module)."""
    mine: list[BadRow] = []
    found = False
    with open_stream() as fh:
        for start, rb in json_items(fh, mine, max_record_bytes, records=records, each=complete):
            found = True
            bad.extend(mine)
            mine.clear()
            yield start, rb
    if found or not records or [getattr(b.reason, "kind", None) for b in mine] != ["no records"]:
        bad.extend(mine)
        return
    # no chat at `records`, the document an object: a one-chat export is the chat itself
    mine.clear()
    root = records.split(".", 1)[0]
    with open_stream() as fh:
        for start, rb in json_items(fh, mine, max_record_bytes, records=None, each=complete):
            texts = rb.column(RECORD_COLUMN).to_pylist()
            if len(texts) == 1 and _holds(texts[0], root):
                continue  # a full export whose chat list is empty: nothing to read
            yield start, rb
    bad.extend(mine)


def _holds(text: str, key: str) -> bool:
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError:
        return False
    return isinstance(doc, dict) and key in doc


def complete(chat: dict) -> None:
    """Add `as_text` and `conversation` to each message of one chat (the module)."""
    msgs = chat.get("messages")
    if not isinstance(msgs, list):
        return  # nest says what is wrong with the record
    cid = chat.get("id")
    own = str(cid) if isinstance(cid, (int, str)) and not isinstance(cid, bool) else None
    topics = {
        m.get("id")
        for m in msgs
        if isinstance(m, dict) and m.get("type") == "service" and m.get("action") == "topic_created"
    }
    replies = {m.get("id"): m.get("reply_to_message_id") for m in msgs if isinstance(m, dict)} if topics else {}
    seen: dict = {}
    for m in msgs:
        if not isinstance(m, dict):
            continue
        shown = as_text(m)
        if shown:
            m["as_text"] = shown
        topic = _topic(m.get("id"), replies, topics, seen) if topics else None
        if own is not None:
            m["conversation"] = own if topic is None or m.get("id") == topic else f"{own}-{topic}"


def _topic(mid, replies: dict, topics: set, seen: dict):
    """The topic_created message the reply chain from `mid` leads to (None: General)."""
    path = []
    at = mid
    for _ in range(MAX_CHAIN):
        if at in seen:
            found = seen[at]
            break
        if at in topics:
            found = at
            break
        path.append(at)
        nxt = replies.get(at)
        if nxt is None or nxt == at or not isinstance(nxt, (int, str)):
            found = None
            break
        at = nxt
    else:
        found = None
    for p in path:
        if isinstance(p, (int, str)):
            seen[p] = found
    return found


def _runs(value) -> str:
    """Telegram's text: a string, or runs of strings and {type, text} objects."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        value = [value]
    if isinstance(value, list):
        return "".join(
            r if isinstance(r, str) else str(r.get("text") or "") if isinstance(r, dict) else "" for r in value
        )
    return ""


def _list(v) -> list:
    return v if isinstance(v, list) else []


def _count(n, one: str) -> str:
    try:
        k = int(n)
    except (TypeError, ValueError):
        return ""
    return f"{k} {one}{'' if k == 1 else 's'}"


def as_text(m: dict) -> str | None:
    """What a poll, contact, location, venue, game or die shows, as text (None: none of them)."""
    lines: list[str] = []
    poll = m.get("poll")
    if isinstance(poll, dict):
        question = _runs(poll.get("question")).strip() or "?"
        total = _count(poll.get("total_voters"), "vote")
        kind = "closed poll" if poll.get("closed") is True else "poll"
        lines.append(f"[{kind}: {question}{f' ({total})' if total else ''}]")
        for a in _list(poll.get("answers")):
            if isinstance(a, dict):
                votes = _count(a.get("voters"), "vote")
                lines.append(f"- {_runs(a.get('text')).strip()}{f' ({votes})' if votes else ''}")
    contact = m.get("contact_information")
    if isinstance(contact, dict):
        name = " ".join(str(contact.get(k) or "").strip() for k in ("first_name", "last_name")).strip()
        phone = str(contact.get("phone_number") or "").strip()
        lines.append(f"[contact: {', '.join(p for p in (name, phone) if p) or '?'}]")
    place = m.get("place_name")
    where = m.get("location_information")
    point = ""
    if isinstance(where, dict) and where.get("latitude") is not None and where.get("longitude") is not None:
        point = f"{where.get('latitude')}, {where.get('longitude')}"
    if isinstance(place, str) and place.strip():
        address = m["address"] if isinstance(m.get("address"), str) else ""
        parts = [place.strip(), address.strip(), f"({point})" if point else ""]
        lines.append(f"[venue: {', '.join(p for p in parts[:2] if p)}{' ' + parts[2] if parts[2] else ''}]")
    elif point:
        live = " (live)" if m.get("live_location_period_seconds") else ""
        lines.append(f"[location{live}: {point}]")
    game = m.get("game_title")
    if isinstance(game, str) and game.strip():
        lines.append(f"[game: {game.strip()}]")
    dice = m.get("dice")
    if isinstance(dice, dict):
        emoji = dice.get("emoji") or dice.get("emoticon") or "🎲"
        lines.append(f"[dice {emoji} {dice.get('value', '?')}]")
    return "\n".join(lines) if lines else None
