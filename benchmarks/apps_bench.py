"""The AI-app presets (tasks/extract/apps/, schemas/presets/) beside a flat SQL table of the same
messages, each dry-run through the SQL source: speed as a share of the flat path's, and the
slowest preset's peak RSS at two sizes.

Each store is written on SQLite with sqlite3 directly (executemany), in the shapes the presets
read, from the apps' own schemas (the DDL of tests/test_open_webui.py, test_langchain.py,
test_langgraph.py and test_app_stores.py): conversations of THREAD messages, alternating user
and assistant, the same texts in every store and in the flat table. LangGraph's checkpoints are
the serde's own bytes (JsonPlusSerializer.dumps_typed of LangChain messages), two a thread (the
newest, which the preset reads, and its parent without the last turn). langchain-postgres is
left out: its query is PostgreSQL's (`::text`), and its rows take langchain-sql's decoder.

    uv run python -m benchmarks.apps_bench 100000            # every preset at 100k
    uv run python -m benchmarks.apps_bench 1000000 dify      # one preset, with peak RSS
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import yaml

from benchmarks.pipeline_bench import planned_rate

THREAD = 20  # messages a conversation
USERS = 50
#: every preset the benchmark writes a store for (langchain-postgres: see above)
PRESETS = ("langgraph-checkpoint", "langchain-sql", "open-webui", "dify", "vercel-ai-chatbot", "chainlit")
#: the slowest at 100k (measured 2026-12-07), run at the full size with its peak RSS
SLOWEST = "dify"
T0 = 1_717_200_000  # 2024-06-01, seconds
GENERATION = "2"  # bump when a store's shape changes: written stores are reused


def _text(t: int, i: int) -> str:
    return f"message {i} of thread {t}: " + "plan the week, book the train, call the garden shop " * (1 + i % 3)


def _threads(n: int) -> Iterator[tuple[int, list[tuple[str, str]]]]:
    """(thread, [(role, text)]) covering n messages."""
    for t in range(-(-n // THREAD)):
        k = min(THREAD, n - t * THREAD)
        yield t, [("user" if i % 2 == 0 else "assistant", _text(t, i)) for i in range(k)]


def _uid(kind: int, n: int) -> str:
    return f"00000000-0000-4{kind:03d}-8000-{n:012d}"


def _iso(s: int) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(s))


def _chunks(n: int, per: int = 2000) -> Iterator[list[tuple[int, list[tuple[str, str]]]]]:
    buf: list = []
    for th in _threads(n):
        buf.append(th)
        if len(buf) >= per:
            yield buf
            buf = []
    if buf:
        yield buf


# -- the stores ------------------------------------------------------------------------------


def _flat(db: sqlite3.Connection, n: int) -> dict:
    db.execute("CREATE TABLE messages (id INTEGER PRIMARY KEY, thread_id TEXT, role TEXT, content TEXT, key TEXT)")
    row = 0
    for chunk in _chunks(n):
        rows = []
        for t, msgs in chunk:
            for i, (role, text) in enumerate(msgs):
                row += 1
                rows.append((row, f"user{t % USERS}:t{t}", role, text, f"t{t}:{i}"))
        db.executemany("INSERT INTO messages VALUES (?, ?, ?, ?, ?)", rows)
    return {
        "source": {
            "name": "flat",
            "type": "sql",
            "sql": {"table": "messages", "cursor_column": "id", "key_column": "id"},
        },
        "fields": {
            "user_id": "thread_id",
            "conversation_id": "thread_id",
            "role": "role",
            "content": "content",
            "seq": "id",
            "source_key": "key",
        },
    }


def _langgraph(db: sqlite3.Connection, n: int) -> dict:
    from langchain_core.messages import AIMessage, HumanMessage
    from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

    serde = JsonPlusSerializer()
    db.executescript(  # SqliteSaver.setup()'s table (langgraph-checkpoint-sqlite)
        """CREATE TABLE checkpoints (thread_id TEXT NOT NULL, checkpoint_ns TEXT NOT NULL DEFAULT '',
        checkpoint_id TEXT NOT NULL, parent_checkpoint_id TEXT, type TEXT, checkpoint BLOB, metadata BLOB,
        PRIMARY KEY (thread_id, checkpoint_ns, checkpoint_id))"""
    )
    for chunk in _chunks(n, 500):
        rows = []
        for t, msgs in chunk:
            objs = [
                (HumanMessage if role == "user" else AIMessage)(content=text, id=f"m{t}-{i}")
                for i, (role, text) in enumerate(msgs)
            ]
            parent = None
            for step, upto in ((0, max(1, len(objs) - 2)), (1, len(objs))):
                cid = f"1f0{t:07x}-{step:04x}-6000-8000-000000000000"
                checkpoint = {"v": 4, "id": cid, "ts": _iso(T0 + t), "versions_seen": {},
                              "channel_values": {"messages": objs[:upto]},
                              "channel_versions": {"messages": step + 1}}  # fmt: skip
                kind, blob = serde.dumps_typed(checkpoint)
                meta = serde.dumps_typed({"source": "loop", "step": step})[1]
                rows.append((f"user{t % USERS}:t{t}", cid, parent, kind, blob, meta))
                parent = cid
        db.executemany(
            "INSERT INTO checkpoints (thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, type, "
            "checkpoint, metadata) VALUES (?, '', ?, ?, ?, ?, ?)",
            rows,
        )
    return {"preset": "langgraph-checkpoint", "source": {"name": "lg"}}


def _lc_dump(role: str, text: str) -> str:
    """langchain_core's message_to_dict: {"type", "data": message.model_dump()}."""
    kind = "human" if role == "user" else "ai"
    data: dict = {"content": text, "additional_kwargs": {}, "response_metadata": {}, "type": kind,
                  "name": None, "id": None}  # fmt: skip
    if kind == "ai":
        data.update(tool_calls=[], invalid_tool_calls=[], usage_metadata=None)
    else:
        data["example"] = False
    return json.dumps({"type": kind, "data": data})


def _langchain(db: sqlite3.Connection, n: int) -> dict:
    # SQLChatMessageHistory's default table (langchain_community/chat_message_histories/sql.py)
    db.execute("CREATE TABLE message_store (id INTEGER PRIMARY KEY AUTOINCREMENT, session_id TEXT, message TEXT)")
    for chunk in _chunks(n):
        # sessions interleave as a live app's would: one turn of every session in the chunk, in turn
        rows = [
            (f"user{t % USERS}:t{t}", _lc_dump(*msgs[i])) for i in range(THREAD) for t, msgs in chunk if i < len(msgs)
        ]
        db.executemany("INSERT INTO message_store (session_id, message) VALUES (?, ?)", rows)
    return {"preset": "langchain-sql", "source": {"name": "lc"}}


def _open_webui(db: sqlite3.Connection, n: int) -> dict:
    # open_webui/models/chats.py's Chat (tests/test_open_webui.py's table)
    db.executescript(
        """CREATE TABLE chat (id VARCHAR NOT NULL PRIMARY KEY, user_id VARCHAR, title TEXT, chat JSON,
        created_at BIGINT, updated_at BIGINT, share_id TEXT UNIQUE, archived BOOLEAN, pinned BOOLEAN,
        meta JSON DEFAULT '{}', folder_id TEXT);
        CREATE INDEX ix_chat_user_id ON chat (user_id);
        CREATE INDEX ix_chat_created_at ON chat (created_at);
        CREATE INDEX ix_chat_updated_at ON chat (updated_at)"""
    )
    for chunk in _chunks(n, 1000):
        rows = []
        for t, msgs in chunk:
            listed, by_id, prev = [], {}, None
            for i, (role, text) in enumerate(msgs):
                mid = _uid(1, t * THREAD + i)
                m = {"id": mid, "parentId": prev, "childrenIds": [], "role": role, "content": text,
                     "timestamp": T0 + t * 60 + i}  # fmt: skip
                if role == "assistant":
                    m.update(model="llama3.1:8b", modelName="llama3.1:8b", done=True)
                else:
                    m["models"] = ["llama3.1:8b"]
                if prev:
                    by_id[prev]["childrenIds"].append(mid)
                by_id[mid] = m
                listed.append(m)
                prev = mid
            chat = {"id": "", "title": f"chat {t}", "models": ["llama3.1:8b"], "params": {},
                    "history": {"messages": by_id, "currentId": prev}, "messages": listed, "tags": [],
                    "timestamp": (T0 + t * 60) * 1000, "files": []}  # fmt: skip
            at = T0 + t * 60
            rows.append((f"c-{t:08d}", f"u-{t % USERS}", f"chat {t}", json.dumps(chat), at, at + len(msgs)))
        db.executemany(
            "INSERT INTO chat (id, user_id, title, chat, created_at, updated_at, archived, pinned, meta) "
            "VALUES (?, ?, ?, ?, ?, ?, 0, 0, '{}')",
            rows,
        )
    return {"preset": "open-webui", "source": {"name": "owui"}}


def _dify(db: sqlite3.Connection, n: int) -> dict:
    # api/models/model.py's Conversation and Message (tests/test_app_stores.py's DIFY_DDL)
    db.executescript(
        """CREATE TABLE conversations (id CHAR(36) NOT NULL PRIMARY KEY, app_id CHAR(36) NOT NULL,
        mode VARCHAR(255) NOT NULL, name VARCHAR(255) NOT NULL, status VARCHAR(255) NOT NULL,
        from_source VARCHAR(255) NOT NULL, from_end_user_id CHAR(36), from_account_id CHAR(36),
        created_at DATETIME NOT NULL, updated_at DATETIME NOT NULL, is_deleted BOOLEAN NOT NULL DEFAULT false);
        CREATE TABLE messages (id CHAR(36) NOT NULL PRIMARY KEY, app_id CHAR(36) NOT NULL,
        conversation_id CHAR(36) NOT NULL REFERENCES conversations (id), query TEXT NOT NULL, answer TEXT NOT NULL,
        parent_message_id CHAR(36), status VARCHAR(255) NOT NULL DEFAULT 'normal',
        from_source VARCHAR(255) NOT NULL, from_end_user_id CHAR(36), from_account_id CHAR(36),
        created_at DATETIME NOT NULL, updated_at DATETIME NOT NULL);
        CREATE INDEX message_conversation_id_idx ON messages (conversation_id)"""
    )
    app = _uid(9, 0)
    for chunk in _chunks(n, 1000):
        convs, rows = [], []
        for t, msgs in chunk:
            cid, user, at = _uid(2, t), _uid(3, t % USERS), T0 + t * 60
            convs.append((cid, app, "chat", f"chat {t}", "normal", "api", user, _iso(at), _iso(at + len(msgs))))
            prev = None
            for j in range(0, len(msgs), 2):
                mid = _uid(4, t * THREAD + j)
                answer = msgs[j + 1][1] if j + 1 < len(msgs) else ""
                rows.append((mid, app, cid, msgs[j][1], answer, prev, "api", user, _iso(at + j), _iso(at + j)))
                prev = mid
        db.executemany(
            "INSERT INTO conversations (id, app_id, mode, name, status, from_source, from_end_user_id, created_at, "
            "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            convs,
        )
        db.executemany(
            "INSERT INTO messages (id, app_id, conversation_id, query, answer, parent_message_id, from_source, "
            "from_end_user_id, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
    return {"preset": "dify", "source": {"name": "dify"}}


def _vercel(db: sqlite3.Connection, n: int) -> dict:
    # lib/db/schema.ts (tests/test_app_stores.py's VERCEL_DDL)
    db.executescript(
        """CREATE TABLE "User" ("id" CHAR(36) PRIMARY KEY NOT NULL, "email" VARCHAR(64) NOT NULL,
        "password" VARCHAR(64));
        CREATE TABLE "Chat" ("id" CHAR(36) PRIMARY KEY NOT NULL, "createdAt" DATETIME NOT NULL, "title" TEXT NOT NULL,
        "userId" CHAR(36) NOT NULL REFERENCES "User" ("id"), "visibility" VARCHAR NOT NULL DEFAULT 'private');
        CREATE TABLE "Message_v2" ("id" CHAR(36) PRIMARY KEY NOT NULL, "chatId" CHAR(36) NOT NULL
        REFERENCES "Chat" ("id"), "role" VARCHAR NOT NULL, "parts" TEXT NOT NULL,
        "attachments" TEXT NOT NULL, "createdAt" DATETIME NOT NULL)"""
    )
    db.executemany('INSERT INTO "User" VALUES (?, ?, NULL)', [(_uid(5, u), f"u{u}@example.com") for u in range(USERS)])
    for chunk in _chunks(n, 1000):
        chats, rows = [], []
        for t, msgs in chunk:
            cid, at = _uid(6, t), T0 + t * 60
            chats.append((cid, _iso(at), f"chat {t}", _uid(5, t % USERS)))
            for i, (role, text) in enumerate(msgs):
                parts = [{"type": "text", "text": text}]
                if role == "assistant":
                    parts = [{"type": "step-start"}, {**parts[0], "state": "done"}]
                rows.append((_uid(7, t * THREAD + i), cid, role, json.dumps(parts), _iso(at + i)))
        db.executemany("INSERT INTO \"Chat\" VALUES (?, ?, ?, ?, 'private')", chats)
        db.executemany("INSERT INTO \"Message_v2\" VALUES (?, ?, ?, ?, '[]', ?)", rows)
    return {"preset": "vercel-ai-chatbot", "source": {"name": "vercel"}}


def _chainlit(db: sqlite3.Connection, n: int) -> dict:
    # chainlit's SQL data layer DDL (tests/test_app_stores.py's CHAINLIT_DDL); a `run` step a turn
    db.executescript(
        """CREATE TABLE users ("id" CHAR(36) PRIMARY KEY, "identifier" TEXT NOT NULL UNIQUE, "metadata" TEXT NOT NULL,
        "createdAt" TEXT);
        CREATE TABLE threads ("id" CHAR(36) PRIMARY KEY, "createdAt" TEXT, "name" TEXT, "userId" CHAR(36),
        "userIdentifier" TEXT, "tags" TEXT, "metadata" TEXT NOT NULL DEFAULT '{}');
        CREATE TABLE steps ("id" CHAR(36) PRIMARY KEY, "name" TEXT NOT NULL, "type" TEXT NOT NULL,
        "threadId" CHAR(36) NOT NULL, "parentId" CHAR(36), "streaming" BOOLEAN NOT NULL, "waitForAnswer" BOOLEAN,
        "isError" BOOLEAN, "metadata" TEXT, "input" TEXT, "output" TEXT, "createdAt" TEXT, "start" TEXT, "end" TEXT,
        "showInput" TEXT, "language" TEXT)"""
    )
    db.executemany(
        "INSERT INTO users VALUES (?, ?, '{}', NULL)", [(_uid(5, u), f"u{u}@example.com") for u in range(USERS)]
    )

    def ts(s: int, frac: int = 0) -> str:
        return _iso(s).replace(" ", "T") + f".{frac:06d}Z"

    for chunk in _chunks(n, 1000):
        threads, rows = [], []
        for t, msgs in chunk:
            tid, at, u = _uid(6, t), T0 + t * 60, t % USERS
            threads.append((tid, ts(at), f"chat {t}", _uid(5, u), f"u{u}@example.com"))
            run = None
            for i, (role, text) in enumerate(msgs):
                sid = _uid(7, t * THREAD + i)
                if role == "user":
                    rows.append((sid, f"u{u}@example.com", "user_message", tid, None, None, text, ts(at + i)))
                    run = _uid(8, t * THREAD + i)
                    rows.append((run, "on_message", "run", tid, sid, text, "", ts(at + i, 500_000)))
                else:
                    rows.append((sid, "Assistant", "assistant_message", tid, run, None, text, ts(at + i)))
        db.executemany("INSERT INTO threads VALUES (?, ?, ?, ?, ?, NULL, '{}')", threads)
        db.executemany(
            'INSERT INTO steps ("id", "name", "type", "threadId", "parentId", "streaming", "isError", "metadata", '
            '"input", "output", "createdAt") VALUES (?, ?, ?, ?, ?, 0, 0, \'{}\', ?, ?, ?)',
            rows,
        )
    return {"preset": "chainlit", "source": {"name": "chainlit"}}


WRITERS: dict[str, Callable[[sqlite3.Connection, int], dict]] = {
    "flat": _flat,
    "langgraph-checkpoint": _langgraph,
    "langchain-sql": _langchain,
    "open-webui": _open_webui,
    "dify": _dify,
    "vercel-ai-chatbot": _vercel,
    "chainlit": _chainlit,
}


def store(base: Path, name: str, n: int) -> Path:
    """The mapping of `name`'s store of n messages (written once, reused while GENERATION holds)."""
    d = base / f"apps-{name}-{n}"
    mapping, done = d / "mapping.yaml", d / "done"
    if done.exists() and done.read_text() == GENERATION:
        return mapping
    d.mkdir(parents=True, exist_ok=True)
    db_path = d / "app.db"
    for p in d.glob("app.db*"):
        p.unlink()
    db = sqlite3.connect(db_path)
    db.execute("PRAGMA journal_mode=OFF")
    db.execute("PRAGMA synchronous=OFF")
    body = WRITERS[name](db, n)
    db.commit()
    db.close()
    body["source"].setdefault("sql", {})["url"] = f"sqlite:///{db_path}"
    mapping.write_text(yaml.safe_dump(body))
    done.write_text(GENERATION)
    return mapping


def survey(base: Path, n: int, presets: tuple[str, ...] = PRESETS, log=print) -> dict:
    """Every preset's dry run at n messages beside the flat table's (measured first and last:
    the reference is their best)."""
    flat = store(base, "flat", n)
    planned_rate(flat, base / "work-apps-warm")  # imports and caches, not measured
    out: dict = {"messages": n, "flat": planned_rate(flat, base / "work-apps-flat"), "presets": {}}
    for name in presets:
        m = planned_rate(store(base, name, n), base / "work-apps")
        m["ratio"] = m["per_min"] / out["flat"]["per_min"]
        out["presets"][name] = m
        log(f"{name} at {n:,}: {m['per_min'] / 1e6:.2f}M msg/min, {m['ratio']:.2f} of flat")
    again = planned_rate(flat, base / "work-apps-flat")
    if again["per_min"] > out["flat"]["per_min"]:
        out["flat"] = again
        for m in out["presets"].values():
            m["ratio"] = m["per_min"] / again["per_min"]
    return out


def run(base: Path, n: int, peak, preset: str = SLOWEST, survey_n: int | None = None, log=print) -> dict:
    """`preset` at n messages beside flat, its peak RSS at n/5 and n (`peak(mapping, work)`: a
    dry run in its own process, benchmarks.run); with survey_n, every preset at survey_n first
    and the slowest of them run at n."""
    out: dict = {}
    if survey_n:
        out["survey"] = survey(base, survey_n, log=log)
        preset = min(out["survey"]["presets"].items(), key=lambda kv: kv[1]["ratio"])[0]
    big = survey(base, n, (preset,), log=log)
    out.update(preset=preset, messages=n, flat=big["flat"], app=big["presets"][preset])
    out["ratio"] = out["app"]["ratio"]
    small = store(base, preset, max(THREAD, n // 5))
    out["peak_small"] = peak(small, base / "mem-apps-small")["peak_rss_bytes"]
    out["peak"] = peak(store(base, preset, n), base / "mem-apps")["peak_rss_bytes"]
    log(f"{preset} peak RSS {out['peak'] / 2**20:.0f} MiB, {out['peak'] / out['peak_small']:.2f}x that of n/5")
    return out


def rows(m: dict) -> list[tuple[str, str, str, str]]:
    out = []
    if "survey" in m:
        s = m["survey"]
        order = sorted(s["presets"].items(), key=lambda kv: kv[1]["ratio"])
        each = ", ".join(f"{k} {v['ratio']:.2f}" for k, v in order)
        out.append(
            (
                f"AI-app presets dry run (SQLite), {s['messages']:,} messages each",
                f"flat SQL table {s['flat']['per_min'] / 1e6:.2f}M msg/min",
                f"of flat: {each}",
                "the slowest run below",
            )
        )
    a, f = m["app"], m["flat"]
    out.append(
        (
            f"{m['preset']} dry run (SQLite), {m['messages']:,} messages in threads of {THREAD}",
            f"{a['per_min'] / 1e6:.2f}M msg/min, flat SQL table {f['per_min'] / 1e6:.2f}M",
            f"{m['ratio']:.2f} of flat; peak RSS {m['peak'] / 2**20:.0f} MiB, "
            f"{m['peak'] / m['peak_small']:.2f}x that of a fifth of it",
            ">= 0.3 of flat, RSS <= 1.2x",
        )
    )
    return out


if __name__ == "__main__":
    import os
    import sys

    size = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    where = Path(os.environ.get("MEMOS_ETL_BENCH_DIR", "/tmp/memos-etl-bench"))
    if len(sys.argv) > 2:
        from benchmarks.run import log, peak

        result = run(where, size, peak, preset=sys.argv[2], log=log)
        print(json.dumps(result, indent=1))
        for r in rows(result):
            print("  ".join(r))
    else:
        from benchmarks.run import log

        print(json.dumps(survey(where, size, log=log), indent=1))
