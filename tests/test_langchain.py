"""LangChain's chat-history stores as the real libraries write them (SQLChatMessageHistory on a
SQLite file and on PostgreSQL, PostgresChatMessageHistory on PostgreSQL), synced through the
CLI into the dev-server and compared message for message with what the test put in."""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections import defaultdict

import pytest
import requests
import sqlalchemy as sa

from tests.conftest import new_pg_database
from tests.test_exports import sync_sql

for _var in ("LANGCHAIN_TRACING_V2", "LANGSMITH_TRACING", "LANGCHAIN_API_KEY", "LANGSMITH_API_KEY"):
    os.environ.pop(_var, None)  # tracing stays off: no test talks to LangSmith


def messages_of(url: str) -> dict:
    """(user, conversation) -> [(role, content)] as the dev-server holds them, in order."""
    convs: dict = defaultdict(list)
    for m in requests.get(url + "/_dev/messages", timeout=30).json():
        convs[(m["user_id"], m["conversation_id"])].append((m["role"], m["content"]))
    return dict(convs)


def times_of(url: str) -> list:
    return [m["chat_time"] for m in requests.get(url + "/_dev/messages", timeout=30).json()]


def write_chats(history) -> None:
    """Two sessions through the real message classes: text, content blocks, a tool call and
    its result, a system prompt."""
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage

    a, b = history("alice:travel"), history("bob:cooking")
    a.add_message(SystemMessage("You plan trips."))
    a.add_message(HumanMessage("I want to visit Lisbon in May."))
    b.add_message(HumanMessage("How long do I boil an egg?"))
    a.add_message(
        AIMessage(content=[{"type": "text", "text": "Lisbon in May is warm."}, {"type": "text", "text": "Book early."}])
    )
    a.add_message(AIMessage(content="", tool_calls=[{"name": "weather", "args": {"city": "Lisbon"}, "id": "call-1"}]))
    a.add_message(ToolMessage(content="22C and sunny", tool_call_id="call-1"))
    b.add_message(AIMessage("Seven minutes for a soft yolk."))
    a.add_message(AIMessage("It will be 22C and sunny."))


ALICE = [
    ("system", "You plan trips."),
    ("user", "I want to visit Lisbon in May."),
    ("assistant", "Lisbon in May is warm.\nBook early."),
    ("assistant", "It will be 22C and sunny."),
]
BOB = [("user", "How long do I boil an egg?"), ("assistant", "Seven minutes for a soft yolk.")]


def sql_history(url: str):
    from langchain_community.chat_message_histories import SQLChatMessageHistory

    engine = sa.create_engine(url)
    return lambda session: SQLChatMessageHistory(session_id=session, connection=engine)


def test_sql_history_on_sqlite_loads_each_session_in_id_order(tmp_path, dev_server):
    db = f"sqlite:///{tmp_path / 'chat.db'}"
    write_chats(sql_history(db))
    report = sync_sql(tmp_path, dev_server.url, "langchain-sql", db)
    assert messages_of(dev_server.url) == {
        ("alice:travel", "alice:travel"): ALICE,
        ("bob:cooking", "bob:cooking"): BOB,
    }
    assert report["counts"]["delivered"] == 6 and report["counts"]["quarantined"] == 0
    assert sum(report["counts"]["skipped"].values()) == 2, report["counts"]["skipped"]
    # no times in message_store: none sent (MemOS stamps them when added)
    assert times_of(dev_server.url) == [None] * 6

    # the session grows: a nightly run sends the new message only
    from langchain_core.messages import HumanMessage

    sql_history(db)("bob:cooking").add_message(HumanMessage("And a hard one?"))
    again = sync_sql(tmp_path, dev_server.url, "langchain-sql", db)
    assert again["counts"]["delivered"] == 1 and again["counts"]["requests"] == 1
    assert messages_of(dev_server.url)[("bob:cooking", "bob:cooking")] == [*BOB, ("user", "And a hard one?")]


def test_sql_history_user_before_a_separator_and_tools_kept(tmp_path, dev_server):
    db = f"sqlite:///{tmp_path / 'chat.db'}"
    write_chats(sql_history(db))
    sync_sql(tmp_path, dev_server.url, "langchain-sql", db, {"constants": {"user_separator": ":"}, "skip": []})
    alice = [*ALICE[:3], ("tool", 'weather({"city": "Lisbon"})'), ("tool", "22C and sunny"), ALICE[3]]
    assert messages_of(dev_server.url) == {("alice", "alice:travel"): alice, ("bob", "bob:cooking"): BOB}


def test_sql_history_user_from_a_join_and_a_bad_row_quarantined(tmp_path, dev_server):
    path = tmp_path / "chat.db"
    db = f"sqlite:///{path}"
    write_chats(sql_history(db))
    with sqlite3.connect(path) as c:
        c.execute("CREATE TABLE sessions (session_id TEXT, owner TEXT)")
        c.executemany("INSERT INTO sessions VALUES (?, ?)", [("alice:travel", "u-17"), ("bob:cooking", "u-42")])
        c.execute("INSERT INTO message_store (session_id, message) VALUES ('bob:cooking', '{\"type\": \"human\"')")
    query = "SELECT m.id, m.session_id, m.message, s.owner FROM message_store m JOIN sessions s USING (session_id)"
    report = sync_sql(
        tmp_path,
        dev_server.url,
        "langchain-sql",
        db,
        {"sql": {"query": query}, "fields": {"user_id": "owner"}},
        load={"max_failed_share": 0.5},
    )
    assert messages_of(dev_server.url) == {("u-17", "alice:travel"): ALICE, ("u-42", "bob:cooking"): BOB}
    assert report["counts"]["quarantined"] == 1, report
    from tasks.quarantine import read_quarantine

    (row,) = read_quarantine(tmp_path / "state").to_pylist()
    assert row["reasons"] == ["id 9: not JSON"], row


@pytest.fixture
def pg_db(postgres_url):
    return new_pg_database(postgres_url, "lc")


def test_sql_history_on_postgres(tmp_path, dev_server, pg_db):
    write_chats(sql_history(pg_db))
    sync_sql(tmp_path, dev_server.url, "langchain-sql", pg_db)
    assert messages_of(dev_server.url) == {
        ("alice:travel", "alice:travel"): ALICE,
        ("bob:cooking", "bob:cooking"): BOB,
    }


def test_postgres_chat_message_history(tmp_path, dev_server, pg_db):
    import psycopg
    from langchain_core.messages import AIMessage, HumanMessage
    from langchain_postgres import PostgresChatMessageHistory

    conn = psycopg.connect(pg_db.replace("postgresql+psycopg://", "postgresql://"))
    PostgresChatMessageHistory.create_tables(conn, "chat_history")
    s1, s2 = str(uuid.uuid4()), str(uuid.uuid4())
    h1 = PostgresChatMessageHistory("chat_history", s1, sync_connection=conn)
    h2 = PostgresChatMessageHistory("chat_history", s2, sync_connection=conn)
    h1.add_messages([HumanMessage("Remind me: the dentist is on Friday."), AIMessage("Noted: dentist, Friday.")])
    h2.add_messages([HumanMessage(content=[{"type": "text", "text": "Translate 'thanks'"}]), AIMessage("Obrigado.")])
    h1.add_messages([HumanMessage("And the car service on Monday.")])
    with conn.cursor() as cur:
        cur.execute("SELECT id, created_at FROM chat_history ORDER BY id")
        created = [t.astimezone().isoformat() for _, t in cur.fetchall()]
    conn.close()
    report = sync_sql(tmp_path, dev_server.url, "langchain-postgres", pg_db)
    assert report["counts"]["delivered"] == 5
    assert messages_of(dev_server.url) == {
        (s1, s1): [
            ("user", "Remind me: the dentist is on Friday."),
            ("assistant", "Noted: dentist, Friday."),
            ("user", "And the car service on Monday."),
        ],
        (s2, s2): [("user", "Translate 'thanks'"), ("assistant", "Obrigado.")],
    }
    assert len([t for t in times_of(dev_server.url) if t]) == 5 and len(created) == 5
