"""Which preset reads this database? `memos-etl detect <SQLAlchemy URL or SQLite file>` looks at
the tables a database shows (names and columns, through SQLAlchemy's inspector) and matches
them against the stores the app presets read (STORES, below). Rows are not read, except a
sample of at most SAMPLE_ROWS values of one column where the columns alone cannot tell (a
`message` column holding LangChain's `{"type", "data"}` objects).

Each store's signature is written from the app's or library's own schema, named in `source`:
the installed libraries for LangChain and LangGraph, the apps' models and migrations for Open
WebUI, Dify, the Vercel chatbot and Chainlit.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from core.config.detect import Match

SAMPLE_ROWS = 3  # values of a deciding column read from a table, at most
SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")
_SYSTEM_SCHEMAS = {"information_schema", "pg_catalog", "pg_toast"}


@dataclass(frozen=True)
class Table:
    """A table a store must have: its name (None: the user names it; any table with these
    columns) and the columns it has at least, none of `without`."""

    columns: frozenset[str]
    name: str | None = None
    without: frozenset[str] = frozenset()
    default: str | None = None  # with name None: the library's default name (not repeated in the mapping)
    sample: str | None = None  # a column whose values decide (SAMPLES), read a few rows of


@dataclass(frozen=True)
class Store:
    preset: str
    what: str
    tables: tuple[Table, ...]  # the first is the one a match names; all must be there
    also: tuple[str, ...] = ()  # tables of the store named when present, not needed
    source: str = ""  # where the signature is from


def _cols(*names: str) -> frozenset[str]:
    return frozenset(names)


STORES: tuple[Store, ...] = (
    Store(
        "open-webui",
        "an Open WebUI database (chat: one row a chat, its messages in the chat JSON)",
        (Table(_cols("id", "user_id", "title", "chat", "created_at", "updated_at", "share_id", "archived"), "chat"),),
        also=("chat_message",),
        source="open-webui backend/open_webui/models/chats.py (class Chat) and chat_messages.py (class ChatMessage)",
    ),
    Store(
        "langchain-sql",
        "LangChain's SQLChatMessageHistory (langchain-community: id, session_id, message JSON)",
        (
            Table(
                _cols("id", "session_id", "message"),
                without=_cols("created_at"),
                default="message_store",
                sample="message",
            ),
        ),
        source="langchain_community/chat_message_histories/sql.py (create_message_model, table_name='message_store')",
    ),
    Store(
        "langchain-postgres",
        "LangChain's PostgresChatMessageHistory (langchain-postgres: id, session_id, message JSONB, created_at)",
        (Table(_cols("id", "session_id", "message", "created_at"), default="chat_history", sample="message"),),
        source="langchain_postgres/chat_message_histories.py (create_table_queries)",
    ),
    Store(
        "langgraph-checkpoint",
        "LangGraph checkpoints (langgraph-checkpoint-sqlite or -postgres)",
        (
            Table(
                _cols("thread_id", "checkpoint_ns", "checkpoint_id", "parent_checkpoint_id", "checkpoint", "metadata"),
                "checkpoints",
            ),
        ),
        also=("writes", "checkpoint_writes", "checkpoint_blobs", "checkpoint_migrations"),
        source="langgraph/checkpoint/sqlite/__init__.py (SqliteSaver.setup: checkpoints, writes) and "
        "langgraph/checkpoint/postgres/base.py (MIGRATIONS: checkpoints, checkpoint_blobs, checkpoint_writes, "
        "checkpoint_migrations)",
    ),
    Store(
        "dify",
        "a Dify database (messages: a user query and its answer a row; conversations)",
        (
            Table(_cols("id", "conversation_id", "query", "answer", "parent_message_id"), "messages"),
            Table(_cols("id", "app_id"), "conversations"),
        ),
        source="dify api/models/model.py (class Message: messages, class Conversation: conversations)",
    ),
    Store(
        "vercel-ai-chatbot",
        'the Vercel AI chatbot ("Message_v2" with parts, "Chat")',
        (Table(_cols("id", "chatId", "role", "parts"), "Message_v2"), Table(_cols("id", "userId"), "Chat")),
        source="vercel/ai-chatbot lib/db/schema.ts (pgTable 'Message_v2', pgTable 'Chat')",
    ),
    Store(
        "chainlit",
        "a Chainlit data layer (steps of a thread, threads)",
        (Table(_cols("id", "threadId", "type", "output"), "steps"), Table(_cols("id", "userId"), "threads")),
        source="Chainlit backend/chainlit/data/sql_alchemy.py (SQLAlchemyDataLayer) and its documented schema",
    ),
)


def _langchain_message(value) -> bool:
    """A LangChain message as message_to_dict writes it: {"type": ..., "data": {...}}."""
    if isinstance(value, (str, bytes)):
        try:
            value = json.loads(value)
        except ValueError:
            return False
    return isinstance(value, dict) and isinstance(value.get("type"), str) and isinstance(value.get("data"), dict)


SAMPLES: dict[str, Callable[[object], bool]] = {"message": _langchain_message}


def looked_for() -> str:
    """What detect looks for in a database, in words (said when nothing matched)."""
    parts = []
    for s in STORES:
        tables = ", ".join(
            f"{t.name or f'any table ({t.default}, ...)'} ({', '.join(sorted(t.columns))})" for t in s.tables
        )
        parts.append(f"{s.preset}: {tables}")
    return "; ".join(parts)


def sqlite_url(arg: str) -> str | None:
    """The SQLAlchemy URL of a SQLite file named by its path (app.db, chats.sqlite3), else None."""
    if "://" in arg or not arg.lower().endswith(SQLITE_SUFFIXES):
        return None
    return f"sqlite:///{Path(arg).expanduser().resolve()}"


def is_database(arg: str) -> bool:
    """Is `detect`'s argument a database (a URL or a SQLite file) rather than a file to sniff?"""
    return bool(re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", arg)) or sqlite_url(arg) is not None


def shown(url: str) -> str:
    """The URL with its password hidden (***), for anything printed."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy parses: show only its scheme
        return url.split("://", 1)[0] + "://..."


class Unreachable(Exception):
    """The database cannot be opened or inspected; the message is one line, no password."""


@dataclass
class Inspected:
    tables: dict[str, set[str]] = field(default_factory=dict)  # name (schema.name off the default) -> columns
    samples: dict[tuple[str, str], list] = field(default_factory=dict)  # (table, column) -> a few values


def _engine(url: str):
    import sqlalchemy as sa

    if url.startswith("sqlite"):
        db = sa.engine.make_url(url).database
        if not db or db == ":memory:" or not Path(db).is_file():
            raise Unreachable(f"{shown(url)}: no SQLite file at {db or '(none)'}")
        # read-only: inspecting never creates or changes the file
        return sa.create_engine(f"sqlite:///file:{Path(db).resolve()}?mode=ro&uri=true")
    return sa.create_engine(url, pool_pre_ping=False, connect_args=_timeout(url))


def _timeout(url: str) -> dict:
    return {"connect_timeout": 10} if url.startswith(("postgresql", "mysql")) else {}


def inspect(url: str, sample: Callable[[str, set[str]], list[str]] | None = None) -> Inspected:
    """The tables of the database at `url` with their columns, and a few values of each column a
    signature samples (SAMPLES). Raises Unreachable with one line when it cannot connect."""
    import sqlalchemy as sa

    found = Inspected()
    try:
        engine = _engine(url)
    except Unreachable:
        raise
    except Exception as exc:  # a URL it cannot parse, a driver not installed
        raise Unreachable(f"{shown(url)}: {_line(exc, url)}") from None
    try:
        with engine.connect() as conn:
            insp = sa.inspect(conn)
            default = insp.default_schema_name
            schemas = [s for s in insp.get_schema_names() if s not in _SYSTEM_SCHEMAS and not s.startswith("pg_temp")]
            for schema in schemas or [default]:
                for (_, name), cols in insp.get_multi_columns(schema=schema).items():
                    key = name if schema == default or schema is None else f"{schema}.{name}"
                    found.tables[key] = {c["name"] for c in cols}
            for key, cols in found.tables.items():
                for column in sample(key, cols) if sample is not None else []:
                    schema, _, name = key.rpartition(".")
                    table = sa.table(name, sa.column(column), schema=schema or None)
                    rows = conn.execute(sa.select(table.c[column]).limit(SAMPLE_ROWS)).scalars().all()
                    found.samples[(key, column)] = list(rows)
    except Exception as exc:
        raise Unreachable(f"{shown(url)}: {_line(exc, url)}") from None
    finally:
        engine.dispose()
    return found


def _line(exc: BaseException, url: str) -> str:
    """One line of an exception's message, the URL's password never in it."""
    from sqlalchemy.engine import make_url

    inner = getattr(exc, "orig", None) or exc
    text = " ".join(str(inner).split()) or type(inner).__name__
    try:
        password = make_url(url).password
    except Exception:
        password = None
    if password:
        text = text.replace(str(password), "***")
    return text[:300]


def _shaped(t: Table, name: str, cols: set[str]) -> bool:
    """The table has the signature's name (if it has one) and columns."""
    if t.name is not None and name.rsplit(".", 1)[-1] != t.name:
        return False
    return t.columns <= cols and not t.without & cols


def _fits(t: Table, name: str, cols: set[str], found: Inspected) -> bool:
    if not _shaped(t, name, cols):
        return False
    if t.sample is not None:
        values = found.samples.get((name, t.sample), [])
        if values and not any(SAMPLES[t.sample](v) for v in values):
            return False  # rows there, none of them the store's (an empty table matches by columns)
    return True


def match(found: Inspected) -> list[Match]:
    """The presets that read the inspected tables, one Match per store found (per table for a
    store whose table the user names), with the table in the settings when it is not the default."""
    out: list[Match] = []
    for store in STORES:
        first, *rest = store.tables
        others: list[str] = []
        for t in rest:
            hit = next((n for n, c in sorted(found.tables.items()) if _fits(t, n, c, found)), None)
            if hit is None:
                break
            others.append(hit)
        else:
            for name, cols in sorted(found.tables.items()):
                if not _fits(first, name, cols, found):
                    continue
                present = [n for n in found.tables if n.rsplit(".", 1)[-1] in store.also]
                m = Match(store.preset, store.what, [name, *others, *sorted(present)])
                if first.name is None and name != first.default:
                    m.settings = {"source": {"sql": _other_table(store.preset, first.default, name)}}
                out.append(m)
    return out


def _other_table(preset: str, default: str | None, name: str) -> dict:
    """What a mapping sets to read the preset's store from table `name`: the preset's own query
    with its table replaced when it has one (FROM <default>), else the table."""
    from core.config.files import read_yaml
    from core.config.loading import PRESETS

    path = PRESETS / f"{preset}.yaml"
    sql = (read_yaml(path).get("source") or {}).get("sql") or {} if path.is_file() else {}
    query = sql.get("query")
    if isinstance(query, str) and default and re.search(rf"\bFROM\s+{re.escape(default)}\b", query):
        quoted = ".".join(
            f'"{part}"' if not re.fullmatch(r"[a-z_][a-z0-9_]*", part) else part for part in name.split(".")
        )
        return {"query": re.sub(rf"\bFROM\s+{re.escape(default)}\b", f"FROM {quoted}", query)}
    return {"table": name}


def detect_database(url: str) -> list[Match]:
    """The presets that read the database at `url` (a SQLAlchemy URL)."""
    sampling = [t for s in STORES for t in s.tables if t.sample]

    def wanted(table: str, cols: set[str]) -> list[str]:  # only where the columns already fit
        return sorted({t.sample for t in sampling if t.sample and _shaped(t, table, cols)})

    return match(inspect(url, wanted))
