"""`memos-etl detect <database>`: each app store's tables, created on a SQLite file and on the
test PostgreSQL, are named by their preset (the LangChain and LangGraph stores written by the
real libraries, the apps' tables from their own models and migrations); an empty database says
what was looked for; an unreachable one is one line; a printed mapping loads."""

from __future__ import annotations

import datetime
import json
import socket
import sqlite3
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml
from typer.testing import CliRunner

from core.config import PRESETS
from memos_etl.cli import app
from tests.conftest import new_pg_database

runner = CliRunner()
PRESET_NAMES = (
    "open-webui",
    "langchain-sql",
    "langchain-postgres",
    "langgraph-checkpoint",
    "dify",
    "vercel-ai-chatbot",
    "chainlit",
)


def _apps(md: sa.MetaData, preset: str) -> None:
    """The apps' tables as their code declares them (the columns detect and the presets use and
    their neighbours), written as SQLAlchemy tables so one DDL serves SQLite and PostgreSQL."""
    c = sa.Column
    if preset == "open-webui":  # backend/open_webui/models/chats.py, chat_messages.py
        sa.Table(
            "chat",
            md,
            c("id", sa.String, primary_key=True),
            c("user_id", sa.String),
            c("title", sa.Text),
            c("chat", sa.JSON),
            c("created_at", sa.BigInteger),
            c("updated_at", sa.BigInteger),
            c("share_id", sa.Text, unique=True, nullable=True),
            c("archived", sa.Boolean),
            c("pinned", sa.Boolean),
            c("meta", sa.JSON),
            c("folder_id", sa.Text),
        )
        sa.Table(
            "chat_message",
            md,
            c("id", sa.Text, primary_key=True),
            c("chat_id", sa.Text),
            c("user_id", sa.Text),
            c("role", sa.Text),
            c("parent_id", sa.Text),
            c("content", sa.JSON),
            c("created_at", sa.BigInteger),
            c("updated_at", sa.BigInteger),
        )
    elif preset == "dify":  # api/models/model.py: Conversation, Message
        sa.Table(
            "conversations",
            md,
            c("id", sa.String(36), primary_key=True),
            c("app_id", sa.String(36)),
            c("name", sa.String(255)),
            c("from_end_user_id", sa.String(36)),
            c("from_account_id", sa.String(36)),
            c("is_deleted", sa.Boolean),
            c("created_at", sa.DateTime),
            c("updated_at", sa.DateTime),
        )
        sa.Table(
            "messages",
            md,
            c("id", sa.String(36), primary_key=True),
            c("app_id", sa.String(36)),
            c("conversation_id", sa.String(36)),
            c("inputs", sa.JSON),
            c("query", sa.Text),
            c("message", sa.JSON),
            c("answer", sa.Text),
            c("parent_message_id", sa.String(36)),
            c("from_end_user_id", sa.String(36)),
            c("from_account_id", sa.String(36)),
            c("created_at", sa.DateTime),
            c("updated_at", sa.DateTime),
        )
    elif preset == "vercel-ai-chatbot":  # lib/db/schema.ts
        sa.Table(
            "Chat",
            md,
            c("id", sa.String(36), primary_key=True),
            c("createdAt", sa.DateTime),
            c("title", sa.Text),
            c("userId", sa.String(36)),
            c("visibility", sa.String),
        )
        sa.Table(
            "Message_v2",
            md,
            c("id", sa.String(36), primary_key=True),
            c("chatId", sa.String(36)),
            c("role", sa.String),
            c("parts", sa.JSON),
            c("attachments", sa.JSON),
            c("createdAt", sa.DateTime),
        )
    elif preset == "chainlit":  # backend/chainlit/data (the SQLAlchemy data layer's schema)
        sa.Table(
            "threads",
            md,
            c("id", sa.Text, primary_key=True),
            c("createdAt", sa.Text),
            c("name", sa.Text),
            c("userId", sa.Text),
            c("userIdentifier", sa.Text),
            c("metadata", sa.Text),
        )
        sa.Table(
            "steps",
            md,
            c("id", sa.Text, primary_key=True),
            c("name", sa.Text),
            c("type", sa.Text),
            c("threadId", sa.Text),
            c("parentId", sa.Text),
            c("input", sa.Text),
            c("output", sa.Text),
            c("createdAt", sa.Text),
        )


T0 = 1_732_000_000  # 2024-11-19, epoch seconds
WHEN = datetime.datetime(2024, 11, 19, 7, 0)
_OW = {
    "m1": {"id": "m1", "parentId": None, "childrenIds": ["m2"], "role": "user", "content": "hello", "timestamp": T0},
    "m2": {"id": "m2", "parentId": "m1", "childrenIds": [], "role": "assistant", "content": "hi", "timestamp": T0 + 5},
}
ROWS = {
    "chat": [
        {
            "id": "c1",
            "user_id": "u1",
            "title": "hi",
            "chat": {"title": "hi", "history": {"messages": _OW, "currentId": "m2"}},
            "created_at": T0,
            "updated_at": T0 + 5,
            "archived": False,
            "meta": {},
        },
    ],
    "chat_message": [
        {"id": "c1-m1", "chat_id": "c1", "user_id": "u1", "role": "user", "content": "hello", "created_at": T0}
    ],
    "conversations": [
        {"id": "v1", "app_id": "a1", "name": "first", "from_end_user_id": "e1", "is_deleted": False, "created_at": WHEN}
    ],
    "messages": [
        {
            "id": "m1",
            "app_id": "a1",
            "conversation_id": "v1",
            "query": "hello",
            "answer": "hi there",
            "parent_message_id": None,
            "from_end_user_id": "e1",
            "created_at": WHEN,
            "updated_at": WHEN,
        }
    ],
    "Chat": [{"id": "k1", "createdAt": WHEN, "title": "first", "userId": "u1", "visibility": "private"}],
    "Message_v2": [
        {
            "id": "x1",
            "chatId": "k1",
            "role": "user",
            "parts": [{"type": "text", "text": "hello"}],
            "attachments": [],
            "createdAt": WHEN,
        }
    ],
    "threads": [{"id": "t1", "name": "first", "userId": "u1", "userIdentifier": "ana", "createdAt": WHEN.isoformat()}],
    "steps": [
        {"id": "s1", "type": "user_message", "threadId": "t1", "output": "hello", "createdAt": WHEN.isoformat() + "Z"}
    ],
}


def _langchain_sql(url: str) -> None:
    from langchain_community.chat_message_histories import SQLChatMessageHistory
    from langchain_core.messages import AIMessage, HumanMessage

    h = SQLChatMessageHistory(session_id="ana:fitness", connection=url)
    h.add_messages([HumanMessage("I train before 7am"), AIMessage("Noted.")])


def _langchain_postgres(url: str, sqlite_file: Path | None) -> None:
    if sqlite_file is not None:  # the library is PostgreSQL only: its table's columns, by hand
        with sqlite3.connect(sqlite_file) as db:
            db.execute(
                "CREATE TABLE support_history (id INTEGER PRIMARY KEY, session_id TEXT NOT NULL, "
                "message TEXT NOT NULL, created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP)"
            )
            db.execute(
                "INSERT INTO support_history (session_id, message) VALUES (?, ?)",
                (str(uuid.uuid4()), json.dumps({"type": "human", "data": {"content": "hello"}})),
            )
        return
    import psycopg
    from langchain_core.messages import AIMessage, HumanMessage
    from langchain_postgres import PostgresChatMessageHistory

    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        PostgresChatMessageHistory.create_tables(conn, "support_history")
        h = PostgresChatMessageHistory("support_history", str(uuid.uuid4()), sync_connection=conn)
        h.add_messages([HumanMessage("hello"), AIMessage("hi")])


def _langgraph(url: str, sqlite_file: Path | None) -> None:
    from langgraph.checkpoint.base import empty_checkpoint

    config = {"configurable": {"thread_id": "thread-1", "checkpoint_ns": ""}}
    if sqlite_file is not None:
        from langgraph.checkpoint.sqlite import SqliteSaver

        with SqliteSaver.from_conn_string(str(sqlite_file)) as saver:
            saver.setup()
            saver.put(config, empty_checkpoint(), {"source": "input", "step": -1}, {})
        return
    from langgraph.checkpoint.postgres import PostgresSaver

    with PostgresSaver.from_conn_string(url.replace("postgresql+psycopg://", "postgresql://")) as saver:
        saver.setup()
        saver.put(config, empty_checkpoint(), {"source": "input", "step": -1}, {})


def fill(url: str, preset: str, sqlite_file: Path | None = None) -> None:
    """Write `preset`'s store, a couple of rows in it, into the database at `url`."""
    if preset == "langchain-sql":
        return _langchain_sql(url)
    if preset == "langchain-postgres":
        return _langchain_postgres(url, sqlite_file)
    if preset == "langgraph-checkpoint":
        return _langgraph(url, sqlite_file)
    md = sa.MetaData()
    _apps(md, preset)
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        md.create_all(conn)
        for table in md.sorted_tables:
            conn.execute(table.insert(), ROWS[table.name])
    engine.dispose()


def detected(arg: str) -> tuple[list[str], str]:
    res = runner.invoke(app, ["detect", arg])
    assert res.exit_code == 0, res.output
    assert "Traceback" not in res.output
    return [line.split(":", 1)[0] for line in res.stdout.splitlines() if not line.startswith(" ")], res.stdout


def mappings(stdout: str) -> list[dict]:
    """The mappings to copy that detect printed (their comment lines left out)."""
    out: list[list[str]] = []
    for line in stdout.splitlines():
        if not line.startswith(" "):
            out.append([])
        elif line.startswith("    ") and not line.strip().startswith("#"):
            out[-1].append(line[4:])
    return [yaml.safe_load("\n".join(lines)) for lines in out]


@pytest.fixture
def sqlite_db(tmp_path):
    return tmp_path / "app.db"


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_detect_names_the_preset_of_each_store_on_sqlite(preset, sqlite_db):
    fill(f"sqlite:///{sqlite_db}", preset, sqlite_db)
    for arg in (str(sqlite_db), f"sqlite:///{sqlite_db}"):  # a path ending .db and its URL
        found, out = detected(arg)
        assert found == [preset], out
        (body,) = mappings(out)
        assert body["preset"] == preset and body["source"]["sql"]["url"] == f"sqlite:///{sqlite_db.resolve()}"
        assert body["source"]["sql"].keys() <= {"url", "table", "query"}
    if preset == "langchain-postgres":  # the user names its table: the mapping names it
        assert "support_history" in json.dumps(body["source"]["sql"])


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_detect_names_the_preset_of_each_store_on_postgres(preset, postgres_url):
    url = new_pg_database(postgres_url, "detect")
    fill(url, preset)
    found, out = detected(url)
    assert found == [preset], out
    (body,) = mappings(out)
    assert body["source"]["sql"]["url"] == url  # no password in it: the URL itself
    if preset == "langchain-postgres":
        assert "support_history" in json.dumps(body["source"]["sql"])
    if preset == "langgraph-checkpoint":  # the PostgreSQL saver's four tables
        assert "checkpoint_blobs" in out and "checkpoint_writes" in out and "checkpoint_migrations" in out


def test_a_url_with_a_password_is_never_printed(postgres_url):
    url = new_pg_database(postgres_url, "detect")
    eng = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with eng.connect() as c:
        c.execute(sa.text("CREATE ROLE reader LOGIN PASSWORD 's3cret-pw' SUPERUSER"))
    eng.dispose()
    fill(url, "dify")
    secret = url.replace("postgres@", "reader:s3cret-pw@")
    res = runner.invoke(app, ["detect", secret])
    assert res.exit_code == 0, res.output
    assert "s3cret-pw" not in res.output and "reader:***@" in res.output
    (body,) = mappings(res.stdout)
    assert body["source"]["sql"] == {"url_env": "APP_DATABASE_URL"}


def test_every_store_in_one_database_and_each_mapping_loads(postgres_url, tmp_path):
    """All stores side by side (on PostgreSQL: SQLite's table names ignore case, and the Vercel
    chatbot's "Chat" is Open WebUI's chat there); every printed mapping is read by `memos-etl
    preview` with the preset it names."""
    url = new_pg_database(postgres_url, "detect")
    for preset in PRESET_NAMES:
        fill(url, preset)
    found, out = detected(url)
    assert sorted(found) == sorted(PRESET_NAMES), out
    written = [b for b in mappings(out) if (PRESETS / f"{b['preset']}.yaml").is_file()]
    assert written, "no app preset written yet"
    for body in written:
        path = tmp_path / f"{body['source']['name']}.yaml"
        path.write_text(yaml.safe_dump(body))
        res = runner.invoke(app, ["preview", str(path), "--json"])
        assert res.exit_code == 0, (body, res.output)
        assert json.loads(res.stdout)["summary"]["source"] == body["source"]["name"]


def test_a_message_column_that_holds_no_langchain_message_is_not_a_langchain_store(sqlite_db):
    with sqlite3.connect(sqlite_db) as db:
        db.execute("CREATE TABLE message_store (id INTEGER PRIMARY KEY, session_id TEXT, message TEXT)")
        db.execute("INSERT INTO message_store (session_id, message) VALUES ('s1', 'just text')")
    res = runner.invoke(app, ["detect", str(sqlite_db)])
    assert res.exit_code == 2 and "no preset reads" in res.stderr, res.output


def test_an_empty_database_says_what_it_looked_for(sqlite_db, postgres_url):
    sqlite3.connect(sqlite_db).close()
    for arg in (str(sqlite_db), new_pg_database(postgres_url, "detect")):
        res = runner.invoke(app, ["detect", arg])
        assert res.exit_code == 2, res.output
        assert "no preset reads the tables of" in res.stderr and "Traceback" not in res.output
        for name in ("message_store", "checkpoints", "Message_v2", "steps", "conversations", "chat ("):
            assert name in res.stderr, name


def test_a_database_it_cannot_open_is_one_line(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for arg in (f"postgresql+psycopg://someone:pw-never-shown@127.0.0.1:{port}/app", str(tmp_path / "missing.db")):
        res = runner.invoke(app, ["detect", arg])
        assert res.exit_code == 2, res.output
        assert res.stdout == "" and len(res.stderr.strip().splitlines()) == 1, res.output
        assert res.stderr.startswith("cannot inspect ") and "pw-never-shown" not in res.output
    assert not (tmp_path / "missing.db").exists()  # looking did not create it
