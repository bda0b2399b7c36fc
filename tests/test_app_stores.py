"""AI apps' own databases as sources: the dify, vercel-ai-chatbot and chainlit presets.

The apps are too heavy to install, so each test database is built from the app's own schema
(its models or migrations, written below as DDL: the sources are cited in
docs/app-databases.md), on SQLite and on the test PostgreSQL, filled with rows as the app
writes them, synced through the CLI into the dev-server over HTTP and compared message for
message with expectations written by hand."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa

from tests.conftest import new_pg_database
from tests.test_exports import sync_sql


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'app.db'}"
    return new_pg_database(request.getfixturevalue("postgres_url"), "app")


def create(url: str, ddl: str) -> sa.Engine:
    """The DDL, with {uuid} and {ts} as the app's types on PostgreSQL (uuid, timestamp) and as
    SQLAlchemy makes them on SQLite (CHAR(36), DATETIME)."""
    eng = sa.create_engine(url)
    pg = eng.dialect.name == "postgresql"
    types = {"uuid": "uuid" if pg else "CHAR(36)", "ts": "timestamp" if pg else "DATETIME"}
    with eng.begin() as c:
        for stmt in ddl.format(**types).split(";"):
            if stmt.strip():
                c.execute(sa.text(stmt))
    return eng


def insert(eng: sa.Engine, table: str, rows: list[dict]) -> None:
    cols = list(rows[0])
    names = ", ".join(f'"{k}"' for k in cols)
    with eng.begin() as c:
        c.execute(sa.text(f"INSERT INTO {table} ({names}) VALUES ({', '.join(':' + k for k in cols)})"), rows)


def held(url: str) -> dict:
    convs: dict = defaultdict(list)
    for m in requests.get(url + "/_dev/messages", timeout=30).json():
        convs[(m["user_id"], m["conversation_id"])].append((m["role"], m["content"], m["chat_time"]))
    return dict(convs)


def quarantined(tmp_path: Path) -> list[dict]:
    from tasks.quarantine import read_quarantine

    return read_quarantine(str(tmp_path / "state")).to_pylist()


def uid(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012d}"


# -- Dify ------------------------------------------------------------------------------------

# api/models/model.py (Conversation, Message) as its migrations create them: the columns the
# preset reads, with a few of the others the app fills
DIFY_DDL = """
CREATE TABLE conversations (
    id {uuid} NOT NULL PRIMARY KEY,
    app_id {uuid} NOT NULL,
    mode VARCHAR(255) NOT NULL,
    name VARCHAR(255) NOT NULL,
    status VARCHAR(255) NOT NULL,
    from_source VARCHAR(255) NOT NULL,
    from_end_user_id {uuid},
    from_account_id {uuid},
    created_at {ts} NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at {ts} NOT NULL DEFAULT CURRENT_TIMESTAMP,
    is_deleted BOOLEAN NOT NULL DEFAULT false
);
CREATE TABLE messages (
    id {uuid} NOT NULL PRIMARY KEY,
    app_id {uuid} NOT NULL,
    conversation_id {uuid} NOT NULL REFERENCES conversations (id),
    query TEXT NOT NULL,
    answer TEXT NOT NULL,
    parent_message_id {uuid},
    status VARCHAR(255) NOT NULL DEFAULT 'normal',
    from_source VARCHAR(255) NOT NULL,
    from_end_user_id {uuid},
    from_account_id {uuid},
    created_at {ts} NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at {ts} NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE INDEX message_conversation_id_idx ON messages (conversation_id)
"""
NIL = "00000000-0000-0000-0000-000000000000"
APP = uid(999)
END_USER, ACCOUNT = uid(501), uid(502)


def dify_conversation(n: int, *, end_user=None, account=None, deleted=False, at="2024-05-01 09:00:00") -> dict:
    return {
        "id": uid(n),
        "app_id": APP,
        "mode": "chat",
        "name": f"chat {n}",
        "status": "normal",
        "from_source": "api" if end_user else "console",
        "from_end_user_id": end_user,
        "from_account_id": account,
        "created_at": at,
        "updated_at": at,
        "is_deleted": deleted,
    }


def dify_message(n: int, conv: int, query: str, answer: str, parent: str | None, at: str, user=END_USER) -> dict:
    return {
        "id": uid(n),
        "app_id": APP,
        "conversation_id": uid(conv),
        "query": query,
        "answer": answer,
        "parent_message_id": parent,
        "from_source": "api",
        "from_end_user_id": user,
        "from_account_id": None,
        "created_at": at,
        "updated_at": at,
    }


def dify_store(url: str) -> sa.Engine:
    eng = create(url, DIFY_DDL)
    insert(
        eng,
        "conversations",
        [
            dify_conversation(1, end_user=END_USER),  # web app: a regenerated answer
            dify_conversation(2, end_user=END_USER),  # service API: every parent the nil UUID
            dify_conversation(3, account=ACCOUNT),  # the console's debugger
            dify_conversation(4, end_user=END_USER, deleted=True),
        ],
    )
    insert(
        eng,
        "messages",
        [
            dify_message(11, 1, "Plan a trip to Lisbon", "Three days: Alfama first.", None, "2024-05-01 09:00:00"),
            dify_message(12, 1, "And food?", "Try bacalhau.", uid(11), "2024-05-01 09:01:00"),
            # regenerated: a second answer to the same question, same parent, newer: shown
            dify_message(13, 1, "And food?", "Pasteis de nata in Belem.", uid(11), "2024-05-01 09:02:00"),
            dify_message(21, 2, "Hi", "Hello! How can I help?", NIL, "2024-05-02 10:00:00"),
            dify_message(22, 2, "Weather?", "Sunny, 24 degrees.", NIL, "2024-05-02 10:00:30"),
            dify_message(23, 2, "Thanks", "", NIL, "2024-05-02 10:01:00"),  # answer still empty
            {**dify_message(31, 3, "Test prompt", "Test answer", None, "2024-05-03 08:00:00", None)},
            dify_message(41, 4, "Delete me", "Gone soon", None, "2024-05-04 08:00:00"),
        ],
    )
    return eng


DIFY_WANT = {
    (END_USER, uid(1)): [
        ("user", "Plan a trip to Lisbon", "2024-05-01T09:00:00Z"),
        ("assistant", "Three days: Alfama first.", "2024-05-01T09:00:00Z"),
        ("user", "And food?", "2024-05-01T09:02:00Z"),
        ("assistant", "Pasteis de nata in Belem.", "2024-05-01T09:02:00Z"),
    ],
    (END_USER, uid(2)): [
        ("user", "Hi", "2024-05-02T10:00:00Z"),
        ("assistant", "Hello! How can I help?", "2024-05-02T10:00:00Z"),
        ("user", "Weather?", "2024-05-02T10:00:30Z"),
        ("assistant", "Sunny, 24 degrees.", "2024-05-02T10:00:30Z"),
        ("user", "Thanks", "2024-05-02T10:01:00Z"),
    ],
    (ACCOUNT, uid(3)): [
        ("user", "Test prompt", "2024-05-03T08:00:00Z"),
        ("assistant", "Test answer", "2024-05-03T08:00:00Z"),
    ],
}


def test_dify_loads_the_thread_dify_shows_and_nothing_twice(db_url, tmp_path, dev_server):
    dify_store(db_url)
    first = sync_sql(tmp_path, dev_server.url, "dify", db_url)
    c = first["counts"]
    assert c["accounted"] and c["quarantined"] == 0, c
    assert c["delivered"] == 11, c
    assert held(dev_server.url) == DIFY_WANT
    again = sync_sql(tmp_path, dev_server.url, "dify", db_url)
    assert again["counts"]["requests"] == 0 and held(dev_server.url) == DIFY_WANT


def test_dify_a_conversation_deleted_after_delivery_is_deleted_in_source(db_url, tmp_path, dev_server):
    eng = dify_store(db_url)
    first = sync_sql(tmp_path, dev_server.url, "dify", db_url, {"on_delete": "delete"})
    assert first["counts"]["deleted_in_source"] == 2  # conversation 4's turns: never sent
    with eng.begin() as c:  # ConversationService.delete: the flag, and updated_at moves
        c.execute(
            sa.text("UPDATE conversations SET is_deleted = true, updated_at = '2024-05-05 08:00:00' WHERE id = :id"),
            {"id": uid(3)},
        )
    later = sync_sql(tmp_path, dev_server.url, "dify", db_url, {"on_delete": "delete"})
    # read again: conversation 3's turns, and conversation 4's (inside the cursor's window)
    assert later["counts"]["deleted_in_source"] == 4 and later["counts"]["delivered"] == 0, later["counts"]
    assert held(dev_server.url) == {k: v for k, v in DIFY_WANT.items() if k[1] != uid(3)}


# -- Chainlit --------------------------------------------------------------------------------

# the SQL data layer's documented DDL (backend/chainlit/data/sql_alchemy.py writes these tables;
# backend/tests/data/test_sql_alchemy.py creates them so): users, threads, steps
CHAINLIT_DDL = """
CREATE TABLE users (
    "id" {uuid} PRIMARY KEY,
    "identifier" TEXT NOT NULL UNIQUE,
    "metadata" TEXT NOT NULL,
    "createdAt" TEXT
);
CREATE TABLE threads (
    "id" {uuid} PRIMARY KEY,
    "createdAt" TEXT,
    "name" TEXT,
    "userId" {uuid},
    "userIdentifier" TEXT,
    "tags" TEXT,
    "metadata" TEXT NOT NULL DEFAULT '{{}}',
    FOREIGN KEY ("userId") REFERENCES users ("id") ON DELETE CASCADE
);
CREATE TABLE steps (
    "id" {uuid} PRIMARY KEY,
    "name" TEXT NOT NULL,
    "type" TEXT NOT NULL,
    "threadId" {uuid} NOT NULL,
    "parentId" {uuid},
    "streaming" BOOLEAN NOT NULL,
    "waitForAnswer" BOOLEAN,
    "isError" BOOLEAN,
    "metadata" TEXT,
    "input" TEXT,
    "output" TEXT,
    "createdAt" TEXT,
    "start" TEXT,
    "end" TEXT,
    "showInput" TEXT,
    "language" TEXT
)
"""


def chainlit_step(n: int, thread: int, kind: str, name: str, output: str, at: str, parent=None, inp=None) -> dict:
    return {
        "id": uid(n),
        "name": name,
        "type": kind,
        "threadId": uid(thread),
        "parentId": parent,
        "streaming": False,
        "isError": False,
        "metadata": "{}",
        "input": inp,
        "output": output,
        "createdAt": at,
        "start": at,
        "end": at,
    }


def chainlit_store(url: str) -> sa.Engine:
    eng = create(url, CHAINLIT_DDL)
    insert(eng, "users", [{"id": uid(900), "identifier": "ada@example.com", "metadata": "{}", "createdAt": "x"}])
    insert(
        eng,
        "threads",
        [
            {
                "id": uid(1),
                "createdAt": "2024-06-01T10:00:00.000000Z",
                "name": "Lisbon",
                "userId": uid(900),
                "userIdentifier": "ada@example.com",
                "metadata": "{}",
            },
            {
                "id": uid(2),
                "createdAt": "2024-06-02T10:00:00.000000Z",
                "name": "Cake",
                "userId": uid(900),
                "userIdentifier": "ada@example.com",
                "metadata": "{}",
            },
        ],
    )
    insert(
        eng,
        "steps",
        [
            chainlit_step(
                11, 1, "user_message", "ada@example.com", "Plan a trip to Lisbon", "2024-06-01T10:00:01.000000Z"
            ),
            # a run with a tool call inside it: not a message
            chainlit_step(12, 1, "run", "on_message", "", "2024-06-01T10:00:01.500000Z", parent=uid(11)),
            chainlit_step(13, 1, "tool", "search", '{"hits": 3}', "2024-06-01T10:00:02.000000Z", uid(12), "Lisbon"),
            chainlit_step(
                14,
                1,
                "assistant_message",
                "Assistant",
                "Three days: Alfama first.",
                "2024-06-01T10:00:03.250000Z",
                uid(12),
            ),
            chainlit_step(21, 2, "user_message", "ada@example.com", "A cake for 8?", "2024-06-02T10:00:01.000000Z"),
            chainlit_step(22, 2, "assistant_message", "Assistant", "Double the sponge.", "2024-06-02T10:00:04.000000Z"),
        ],
    )
    return eng


CHAINLIT_WANT = {
    ("ada@example.com", uid(1)): [
        ("user", "Plan a trip to Lisbon", "2024-06-01T10:00:01Z"),
        ("assistant", "Three days: Alfama first.", "2024-06-01T10:00:03Z"),  # sent to the second
    ],
    ("ada@example.com", uid(2)): [
        ("user", "A cake for 8?", "2024-06-02T10:00:01Z"),
        ("assistant", "Double the sponge.", "2024-06-02T10:00:04Z"),
    ],
}


def test_chainlit_loads_the_message_steps_of_each_thread_and_nothing_twice(db_url, tmp_path, dev_server):
    eng = chainlit_store(db_url)
    first = sync_sql(tmp_path, dev_server.url, "chainlit", db_url)
    c = first["counts"]
    assert c["accounted"] and c["quarantined"] == 0 and c["delivered"] == 4, c
    assert held(dev_server.url) == CHAINLIT_WANT
    again = sync_sql(tmp_path, dev_server.url, "chainlit", db_url)
    assert again["counts"]["requests"] == 0 and held(dev_server.url) == CHAINLIT_WANT
    insert(
        eng,
        "steps",
        [chainlit_step(23, 2, "user_message", "ada@example.com", "And the icing?", "2024-06-02T10:01:00.000000Z")],
    )
    grown = sync_sql(tmp_path, dev_server.url, "chainlit", db_url)
    assert grown["counts"]["delivered"] == 1, grown["counts"]
    assert held(dev_server.url)[("ada@example.com", uid(2))][-1] == ("user", "And the icing?", "2024-06-02T10:01:00Z")


# -- Vercel AI chatbot -----------------------------------------------------------------------

# lib/db/schema.ts and its Drizzle migrations (0005_wooden_whistler.sql: "Message_v2"): the
# quoted mixed-case tables as they are created on PostgreSQL
VERCEL_DDL = """
CREATE TABLE "User" (
    "id" {uuid} PRIMARY KEY NOT NULL,
    "email" VARCHAR(64) NOT NULL,
    "password" VARCHAR(64)
);
CREATE TABLE "Chat" (
    "id" {uuid} PRIMARY KEY NOT NULL,
    "createdAt" {ts} NOT NULL,
    "title" TEXT NOT NULL,
    "userId" {uuid} NOT NULL REFERENCES "User" ("id"),
    "visibility" VARCHAR NOT NULL DEFAULT 'private'
);
CREATE TABLE "Message_v2" (
    "id" {uuid} PRIMARY KEY NOT NULL,
    "chatId" {uuid} NOT NULL REFERENCES "Chat" ("id"),
    "role" VARCHAR NOT NULL,
    "parts" {json} NOT NULL,
    "attachments" {json} NOT NULL,
    "createdAt" {ts} NOT NULL
)
"""
ALICE, BOB = uid(701), uid(702)


def vercel_message(n: int, chat: int, role: str, parts, at: str) -> dict:
    return {
        "id": uid(n),
        "chatId": uid(chat),
        "role": role,
        "parts": parts if isinstance(parts, str) else json.dumps(parts),
        "attachments": "[]",
        "createdAt": at,
    }


def vercel_store(url: str) -> sa.Engine:
    pg = url.startswith("postgresql")
    eng = create(url, VERCEL_DDL.replace("{json}", "json" if pg else "TEXT"))
    insert(eng, '"User"', [{"id": ALICE, "email": "alice@example.com"}, {"id": BOB, "email": "bob@example.com"}])
    insert(
        eng,
        '"Chat"',
        [
            {
                "id": uid(1),
                "createdAt": "2024-07-01 12:00:00",
                "title": "Weather",
                "userId": ALICE,
                "visibility": "private",
            },
            {"id": uid(2), "createdAt": "2024-07-02 12:00:00", "title": "Photo", "userId": BOB, "visibility": "public"},
        ],
    )
    insert(
        eng,
        '"Message_v2"',
        [
            vercel_message(11, 1, "user", [{"type": "text", "text": "Weather in Paris?"}], "2024-07-01 12:00:00"),
            vercel_message(
                12,
                1,
                "assistant",
                [
                    {"type": "step-start"},
                    {"type": "reasoning", "text": "The user wants the weather.", "state": "done"},
                    {
                        "type": "tool-getWeather",
                        "toolCallId": "call_1",
                        "state": "output-available",
                        "input": {"latitude": 48.85, "longitude": 2.35},
                        "output": {"temperature": 21},
                    },
                    {"type": "step-start"},
                    {"type": "text", "text": "It is 21 degrees in Paris.", "state": "done"},
                ],
                "2024-07-01 12:00:05",
            ),
            vercel_message(
                13,
                1,
                "assistant",  # a tool call alone: no text, skipped and counted
                [
                    {"type": "step-start"},
                    {"type": "tool-getWeather", "toolCallId": "call_2", "state": "input-available"},
                ],
                "2024-07-01 12:00:09",
            ),
            vercel_message(
                21,
                2,
                "user",
                [
                    {"type": "file", "mediaType": "image/png", "filename": "cat.png", "url": "https://blob/cat.png"},
                    {"type": "text", "text": "What breed"},
                    {"type": "text", "text": "is this cat?"},
                ],
                "2024-07-02 12:00:00",
            ),
            vercel_message(22, 2, "assistant", [{"type": "text", "text": "A tabby."}], "2024-07-02 12:00:04"),
        ],
    )
    return eng


VERCEL_WANT = {
    (ALICE, uid(1)): [
        ("user", "Weather in Paris?", "2024-07-01T12:00:00Z"),
        ("assistant", "It is 21 degrees in Paris.", "2024-07-01T12:00:05Z"),
    ],
    (BOB, uid(2)): [
        ("user", "[file: cat.png]\nWhat breed\nis this cat?", "2024-07-02T12:00:00Z"),
        ("assistant", "A tabby.", "2024-07-02T12:00:04Z"),
    ],
}


def test_vercel_chatbot_loads_the_text_parts_of_each_message_and_nothing_twice(db_url, tmp_path, dev_server):
    vercel_store(db_url)
    first = sync_sql(tmp_path, dev_server.url, "vercel-ai-chatbot", db_url)
    c = first["counts"]
    assert c["accounted"] and c["quarantined"] == 0 and c["delivered"] == 4 and c["empty_skipped"] == 1, c
    assert held(dev_server.url) == VERCEL_WANT
    again = sync_sql(tmp_path, dev_server.url, "vercel-ai-chatbot", db_url)
    assert again["counts"]["requests"] == 0 and held(dev_server.url) == VERCEL_WANT


def test_vercel_chatbot_broken_parts_are_one_quarantined_row(tmp_path, dev_server):
    """PostgreSQL's json type refuses text that is not JSON; a copy of the store in SQLite (or
    a text column) does not: that message is one quarantined row with its reason."""
    url = f"sqlite:///{tmp_path / 'app.db'}"
    eng = vercel_store(url)
    insert(
        eng, '"Message_v2"', [vercel_message(23, 2, "user", '[{"type": "text", "text": "cut o', "2024-07-02 12:01:00")]
    )
    # 1 bad row of 5 is more than the default share a run tolerates (10%): raised for a store this small
    report = sync_sql(tmp_path, dev_server.url, "vercel-ai-chatbot", url, load={"max_failed_share": 0.5})
    c = report["counts"]
    assert c["accounted"] and c["quarantined"] == 1 and c["delivered"] == 4, c
    (q,) = quarantined(tmp_path)
    assert "not JSON" in q["reasons"][0], q
    assert held(dev_server.url) == VERCEL_WANT
