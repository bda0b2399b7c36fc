"""What the dev-server accepted, in SQLite, and the reads both APIs make of it."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid


def content_text(content) -> str:
    """A message's text: the string, or its text parts joined (as MemOS reads the text)."""
    if isinstance(content, list):
        return "".join(str(p.get("text") or "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return content


def media_parts(content) -> str | None:
    """A message's parts other than text, as sent (JSON), kept beside its text; None: none."""
    if not isinstance(content, list):
        return None
    media = [p for p in content if not (isinstance(p, dict) and p.get("type") == "text")]
    return json.dumps(media) if media else None


class Store:
    """SQLite storage of what the server accepted; one connection behind a lock."""

    def __init__(self, path: str = ":memory:"):
        self.db = sqlite3.connect(path, check_same_thread=False)
        self.lock = threading.Lock()
        with self.lock:
            self.db.executescript("""
                PRAGMA journal_mode=WAL;
                CREATE TABLE IF NOT EXISTS messages (
                    id INTEGER PRIMARY KEY AUTOINCREMENT, request_id TEXT, user_id TEXT,
                    conversation_id TEXT, role TEXT, content TEXT, chat_time TEXT, info TEXT,
                    tags TEXT, created_at REAL, parts TEXT);
                CREATE INDEX IF NOT EXISTS ix_conv ON messages(user_id, conversation_id, id);
                CREATE TABLE IF NOT EXISTS hits (route TEXT, status INTEGER, code INTEGER, at REAL);
            """)
            columns = [r[1] for r in self.db.execute("PRAGMA table_info(messages)")]
            if "parts" not in columns:  # a store file written before messages had parts
                self.db.execute("ALTER TABLE messages ADD COLUMN parts TEXT")

    def add(self, body: dict) -> str:
        rid = uuid.uuid4().hex
        now = time.time()
        rows = [
            (
                rid,
                body["user_id"],
                body["conversation_id"],
                m["role"],
                content_text(m["content"]),
                m.get("chat_time"),
                json.dumps(body.get("info") or {}),
                json.dumps(body.get("tags") or []),
                now,
                media_parts(m["content"]),
            )
            for m in body["messages"]
        ]
        with self.lock, self.db:
            self.db.executemany(
                "INSERT INTO messages (request_id, user_id, conversation_id, role, content, "
                "chat_time, info, tags, created_at, parts) VALUES (?,?,?,?,?,?,?,?,?,?)",
                rows,
            )
        return rid

    def hit(self, route: str, status: int, code: int) -> None:
        with self.lock, self.db:
            self.db.execute("INSERT INTO hits VALUES (?,?,?,?)", (route, status, code, time.time()))

    def query(self, sql: str, args=()) -> list[tuple]:
        with self.lock:
            return self.db.execute(sql, args).fetchall()

    def execute(self, sql: str, args=()) -> int:
        with self.lock, self.db:
            return self.db.execute(sql, args).rowcount

    def clear(self) -> None:
        with self.lock, self.db:
            self.db.execute("DELETE FROM messages")
            self.db.execute("DELETE FROM hits")

    def nodes(self, user_id) -> list[dict]:
        """A memory per stored message, as the open-source server lists them: with its session,
        the request's info and the raw message it came from in `sources` (MemOS 2.0.33 writes
        each source as JSON text). Its text names the message's time, as MemOS's memories say
        when a thing was said: two messages alike at two times are two memories, and only a
        message stored twice (the `duplicate` fault) repeats one."""
        rows = self.query(
            "SELECT id, conversation_id, role, content, chat_time, info FROM messages WHERE user_id=? ORDER BY id",
            (user_id,),
        )
        return [
            {
                "id": str(i),
                "memory": f"{r} at {t}: {c}",
                "metadata": {
                    "session_id": conv,
                    "info": json.loads(inf) if inf else {},
                    "is_fast": False,
                    "memory_type": "LongTermMemory",
                    "sources": [json.dumps({"type": "chat", "role": r, "content": c, "chat_time": t})],
                },
            }
            for i, conv, r, c, t, inf in rows
        ]

    def search(self, user_id, query: str, limit: int, conversation_id=None) -> list[dict]:
        """Word-overlap search: a stand-in for MemOS's retrieval that tests can reason about."""
        words = [w for w in str(query).lower().split() if len(w) > 2]
        limit = max(1, min(limit, 50))
        args: list = [user_id]
        sql = "SELECT conversation_id, role, content, chat_time FROM messages WHERE user_id=?"
        if conversation_id:
            sql += " AND conversation_id=?"
            args.append(conversation_id)
        scored = []
        for conv, role, content, chat_time in self.query(sql, args):
            low = content.lower()
            score = sum(w in low for w in words)
            if score:
                scored.append((score, conv, role, content, chat_time))
        scored.sort(key=lambda r: -r[0])
        seen: set[str] = set()  # like MemOS, one memory per fact, however often it was said
        unique = []
        for r in scored:
            if r[3] not in seen:
                seen.add(r[3])
                unique.append(r)
        return [
            {
                "memory_key": f"{role} said",
                "memory_value": content,
                "conversation_id": conv,
                "chat_time": chat_time,
                "relativity": score / max(1, len(words)),
            }
            for score, conv, role, content, chat_time in unique[:limit]
        ]
