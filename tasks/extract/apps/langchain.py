"""LangChain's serialised messages: `{"type": ..., "data": {...}}` as `message_to_dict` writes
them (langchain_core/messages/base.py), read without importing LangChain.

The two chat-history stores keep one such object per row: `SQLChatMessageHistory` (the
`message_store` table of langchain-community: id, session_id, message as JSON text) and
langchain-postgres' `PostgresChatMessageHistory` (id, session_id UUID, message JSONB,
created_at). A row becomes the columns below; the row's own id stays its key.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

from tasks.extract.blocks import ROW_COLUMN
from tasks.quarantine import BadRow, Reason

#: LangChain's message `type` -> our role (ChatMessage, type "chat", carries its own `role`)
ROLES = {
    "human": "user",
    "ai": "assistant",
    "system": "system",
    "developer": "system",
    "tool": "tool",
    "function": "tool",
    "humanmessagechunk": "user",
    "aimessagechunk": "assistant",
    "systemmessagechunk": "system",
    "toolmessagechunk": "tool",
    "functionmessagechunk": "tool",
}
#: block types whose text is the message's text (content as a list of blocks)
TEXT_BLOCKS = frozenset({"text", "text-plain"})

#: what a decoded row holds: role, text, kind (message | tool_call | tool_result), the
#: message's own id, the session's user (the part before constants.user_separator)
COLUMNS = ("lc.role", "lc.content", "lc.kind", "lc.id", "lc.user")


def block_text(content: Any) -> str:
    """A message's text: the string, or its text blocks joined (images, tool_use blocks,
    reasoning and the like are not text)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return str(content)
    parts = []
    for block in content:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, dict) and block.get("type") in TEXT_BLOCKS and isinstance(block.get("text"), str):
            parts.append(block["text"])
    return "\n".join(p for p in parts if p)


def _calls(data: dict, content: Any) -> list[str]:
    """An AI message's tool calls as text: `name(args)` each (tool_calls, or Anthropic-style
    tool_use blocks in its content)."""
    out = []
    for call in data.get("tool_calls") or []:
        if isinstance(call, dict):
            out.append(f"{call.get('name')}({json.dumps(call.get('args'), ensure_ascii=False, sort_keys=True)})")
    if not out and isinstance(content, list):
        for b in content:
            if isinstance(b, dict) and b.get("type") in ("tool_use", "tool_call"):
                out.append(f"{b.get('name')}({json.dumps(b.get('input', b.get('args')), ensure_ascii=False)})")
    return out


def message_row(kind_name: str, data: dict) -> tuple[str, str, str, str | None]:
    """(role, text, kind, id) of one message; `kind_name` is its type ("human", "ai", ...).

    kind: `message` (the text a person or model wrote), `tool_call` (an AI message that only
    calls tools: its text is the calls), `tool_result` (a tool's answer). A ValueError names a
    type that is not a message."""
    low = kind_name.lower()
    role = data.get("role") if low in ("chat", "chatmessagechunk") else ROLES.get(low)
    if not isinstance(role, str) or not role:
        raise ValueError(f"message type {kind_name!r} is not one LangChain writes (human, ai, system, tool)")
    content = data.get("content")
    text = block_text(content)
    ident = data.get("id")
    ident = ident if isinstance(ident, str) and ident else None
    if ROLES.get(low) == "tool":
        return "tool", text, "tool_result", ident
    if role == "assistant" and not text.strip():
        calls = _calls(data, content)
        if calls:
            return "tool", "\n".join(calls), "tool_call", ident
    return role, text, "message", ident


def session_user(session: Any, separator: str) -> str | None:
    if session is None:
        return None
    text = str(session)
    return text.split(separator, 1)[0] if separator else text


class LangChainRows:
    """The `message` column of a chat-history table decoded into COLUMNS, row by row."""

    def __init__(self, separator: str = ""):
        self.separator = separator

    def columns(self, names: list[str]) -> list[str]:
        return [*names, *COLUMNS]

    def query(self, dialect: str, table: str | None) -> str | None:
        return None  # the preset's own SELECT (or the user's) as it is

    def decode(self, rb: pa.RecordBatch, offset: int, bad: list[BadRow]) -> pa.RecordBatch:
        names = rb.schema.names
        if "message" not in names:
            raise ValueError("the query gives no `message` column (LangChain's serialised message)")
        messages = rb.column("message").to_pylist()
        sessions = rb.column("session_id").to_pylist() if "session_id" in names else [None] * len(messages)
        ids = rb.column("id").to_pylist() if "id" in names else None
        out: dict[str, list] = {c: [] for c in COLUMNS}
        keep, rows = [], []
        for i, raw in enumerate(messages):
            try:
                obj = raw if isinstance(raw, dict) else json.loads(raw)
                if not isinstance(obj, dict) or not isinstance(obj.get("data"), dict):
                    raise ValueError('not {"type", "data": {...}} as message_to_dict writes it')
                role, text, kind, ident = message_row(str(obj.get("type") or obj["data"].get("type")), obj["data"])
            except (ValueError, TypeError) as exc:
                reason = "not JSON" if isinstance(exc, json.JSONDecodeError) else str(exc)
                where = f"id {ids[i]}" if ids is not None else f"row {offset + i + 1}"
                bad.append(BadRow(offset + i, where, Reason("not a LangChain message", reason), str(raw)[:2000]))
                continue
            keep.append(i)
            rows.append(offset + i)
            for c, v in zip(COLUMNS, (role, text, kind, ident, session_user(sessions[i], self.separator)), strict=True):
                out[c].append(v)
        base = rb if len(keep) == rb.num_rows else rb.take(pa.array(keep, pa.int64()))
        arrays = [*base.columns, *(pa.array(out[c], pa.string()) for c in COLUMNS)]
        names = [*base.schema.names, *COLUMNS]
        if len(keep) != rb.num_rows:
            arrays.append(pa.array(rows, pa.int64()))
            names.append(ROW_COLUMN)
        return pa.RecordBatch.from_arrays(arrays, names=names)
