"""Open WebUI's own database (preset open-webui): the `chat` table created as Open WebUI's
models define it (backend/open_webui/models/chats.py: `chat` a SQLAlchemy JSON column, times
BigInteger epoch seconds), rows written the way the app writes them, synced through the CLI
into the dev-server and compared message for message with expectations written here by hand.
On SQLite and on the test PostgreSQL (where the JSON column comes back as a dict)."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa
import yaml
from typer.testing import CliRunner

from memos_etl.cli import app
from tests.conftest import new_pg_database

runner = CliRunner()
T0 = 1714000000  # epoch seconds, as Open WebUI writes `timestamp`, created_at, updated_at

meta = sa.MetaData()
# the columns of Open WebUI's Chat model that the preset touches, with the model's types
CHAT = sa.Table(
    "chat",
    meta,
    sa.Column("id", sa.String, primary_key=True),
    sa.Column("user_id", sa.String, index=True),
    sa.Column("title", sa.Text),
    sa.Column("chat", sa.JSON),
    sa.Column("created_at", sa.BigInteger, index=True),
    sa.Column("updated_at", sa.BigInteger, index=True),
    sa.Column("share_id", sa.Text, unique=True, nullable=True),
    sa.Column("archived", sa.Boolean, default=False),
    sa.Column("pinned", sa.Boolean, default=False, nullable=True),
    sa.Column("meta", sa.JSON, server_default="{}"),
    sa.Column("folder_id", sa.Text, nullable=True),
)


def msg(mid: str, parent: str | None, role: str, content: str, t: int) -> dict:
    return {"id": mid, "parentId": parent, "childrenIds": [], "role": role, "content": content, "timestamp": t}


def history(messages: list[dict], current: str | None) -> dict:
    by_id = {m["id"]: dict(m, childrenIds=[]) for m in messages}
    for m in by_id.values():
        if m["parentId"] in by_id:
            by_id[m["parentId"]]["childrenIds"].append(m["id"])
    return {"history": {"messages": by_id, "currentId": current}, "title": "t", "timestamp": T0 * 1000}


def put(engine, cid: str, user: str, chat: dict | str, updated: int, **extra) -> None:
    """A chat row as the app writes it: insert, or the whole JSON rewritten and updated_at moved."""
    row = {"id": cid, "user_id": user, "title": "t", "chat": chat, "created_at": T0, "updated_at": updated}
    row.update({"share_id": None, "archived": False, "pinned": False, "meta": {}, "folder_id": None, **extra})
    with engine.begin() as c:
        if c.execute(sa.select(CHAT.c.id).where(CHAT.c.id == cid)).first():
            c.execute(CHAT.update().where(CHAT.c.id == cid).values(chat=chat, updated_at=updated))
        elif isinstance(chat, str):  # not JSON: only a text column takes it (SQLite)
            c.execute(
                sa.text(
                    "INSERT INTO chat (id, user_id, title, chat, created_at, updated_at, archived, meta) "
                    "VALUES (:id, :user_id, 't', :chat, :t, :t, 0, '{}')"
                ),
                {"id": cid, "user_id": user, "chat": chat, "t": updated},
            )
        else:
            c.execute(CHAT.insert().values(**row))


def held(url: str) -> dict:
    convs: dict = defaultdict(list)
    for m in requests.get(url + "/_dev/messages", timeout=30).json():
        convs[(m["user_id"], m["conversation_id"])].append((m["role"], m["content"], m["chat_time"]))
    return dict(convs)


def sync(tmp_path: Path, url: str, db_url: str, **policies) -> dict:
    mapping = tmp_path / "owui.yaml"
    mapping.write_text(
        yaml.safe_dump({"preset": "open-webui", "source": {"name": "owui", "sql": {"url": db_url}}, **policies})
    )
    cfg = tmp_path / "memos-etl.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "sources": {"owui": str(mapping)},
                "target": {"base_url": url, "backoff_base_s": 0.01, "backoff_cap_s": 0.05},
                "state": {"work_dir": str(tmp_path / "state"), "ledger_url": f"sqlite:///{tmp_path / 'ledger.db'}"},
            }
        )
    )
    res = runner.invoke(app, ["sync", "owui", "-c", str(cfg), "--no-prefect", "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout[res.stdout.index("{") :])


def at(t: int) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def database(kind: str, tmp_path: Path, request) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'webui.db'}"
    return new_pg_database(request.getfixturevalue("postgres_url"))


U1 = msg("u1", None, "user", "Plan a 3-day trip to Lisbon.", T0)
A1 = msg("a1", "u1", "assistant", "Day 1: Alfama. Day 2: Belem. Day 3: Sintra.", T0 + 5)
U2 = msg("u2", "a1", "user", "Swap Sintra for Cascais.", T0 + 100)
A2 = msg("a2", "u2", "assistant", "Day 3: Cascais by train from Cais do Sodre.", T0 + 105)
A2B = msg("a2b", "u2", "assistant", "Day 3: Cascais; take the coast line, 40 minutes.", T0 + 200)  # regenerated
B1 = msg("b1", None, "user", "Translate 'good morning' to Portuguese.", T0 + 10)
B2 = msg("b2", "b1", "assistant", "Bom dia.", T0 + 12)


D1 = msg("d1", None, "user", "Name one book set in Lisbon.", T0 + 20)
D2 = msg("d2", "d1", "assistant", "Night Train to Lisbon.", T0 + 22)
D2B = msg("d2b", "d1", "assistant", "The Book of Disquiet, by Fernando Pessoa.", T0 + 30)  # regenerated


def row(m: dict) -> tuple:
    return (m["role"], m["content"], at(m["timestamp"]))


@pytest.mark.parametrize("policy", ["report", "replace"])
@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_chat_that_grows_sends_only_its_new_messages_and_a_regenerated_answer_is_acted_on(
    kind, policy, tmp_path, dev_server, request
):
    db = database(kind, tmp_path, request)
    engine = sa.create_engine(db)
    meta.create_all(engine)
    put(engine, "c1", "u-ana", history([U1, A1], "a1"), T0 + 5)
    put(engine, "c2", "u-ben", history([B1, B2], "b2"), T0 + 12, archived=True)  # archived: loaded
    put(engine, "s1", "shared-c1", history([U1, A1], "a1"), T0 + 6, share_id=None)  # a share's snapshot
    put(engine, "n1", "u-ana", history([U1], "u1"), T0 + 7, meta={"internal": True})  # not the person's chat
    put(engine, "c3", "u-ben", history([D1, D2, D2B], "d2b"), T0 + 9)  # regenerated before any sync
    first = sync(tmp_path, dev_server.url, db)
    c = first["counts"]
    assert (c["read"], c["delivered"], c["quarantined"]) == (6, 6, 0)
    # d2, off the path shown and never delivered: not a message of the chat, not deleted
    assert c["skipped"] == {"shared snapshot: record": 1, "internal chat: record": 1, "abandoned: branch": 1}
    assert (c["deleted_in_source"], c["changed_after_delivery"], c["changes"]) == (0, 0, {})
    want = {
        ("u-ana", "c1"): [row(U1), row(A1)],
        ("u-ben", "c2"): [row(B1), row(B2)],
        ("u-ben", "c3"): [row(D1), row(D2B)],
    }
    assert held(dev_server.url) == want

    # the next turn: Open WebUI writes the whole JSON again and moves updated_at
    put(engine, "c1", "u-ana", history([U1, A1, U2, A2], "a2"), T0 + 105)
    second = sync(tmp_path, dev_server.url, db)
    c = second["counts"]
    # c1 read again whole, and c2 at the cursor (inclusive): only c1's two new messages go
    assert (c["read"], c["delivered"], c["already_delivered"], c["requests"]) == (6, 2, 4, 1)
    want[("u-ana", "c1")] += [row(U2), row(A2)]
    assert held(dev_server.url) == want

    # a regenerated answer: a sibling of a2 under u2, and currentId moves to it; c3 is written
    # again as it was (its updated_at moved): its never-delivered d2 is read again
    put(engine, "c1", "u-ana", history([U1, A1, U2, A2, A2B], "a2b"), T0 + 200)
    put(engine, "c3", "u-ben", history([D1, D2, D2B], "d2b"), T0 + 150)
    third = sync(tmp_path, dev_server.url, db, on_change=policy, on_delete="delete")
    c = third["counts"]
    # a2, delivered, is off the path shown now: the chat changed after delivery (not deleted:
    # on_delete: delete does nothing here); u1, a1, u2, d1 and d2b were delivered as they are
    assert (c["read"], c["changed_after_delivery"], c["already_delivered"], c["deleted_in_source"]) == (7, 1, 5, 0)
    assert c["changes"] == {"u-ana/c1": {"user_id": "u-ana", "conversation_id": "c1", "changed": 1}}
    assert c["skipped"] == {"abandoned: branch": 1}  # d2 again: still never delivered, still not deleted
    if policy == "report":  # the old answer stays on the target, the new one is added
        assert (c["delivered"], c["requests"]) == (1, 1)
        want[("u-ana", "c1")].append(row(A2B))
    else:  # the chat rewritten as the app shows it now; a2b goes with the rewrite
        assert (c["delivered"], c["held_for_rewrite"]) == (0, 1)
        assert third["rewrite"]["status"] == "completed"
        want[("u-ana", "c1")] = [row(U1), row(A1), row(U2), row(A2B)]
    assert held(dev_server.url) == want

    # the key scan agrees: a2 is still in the chat, off the path shown; nothing is deleted
    res = runner.invoke(app, ["reconcile", "owui", "-c", str(tmp_path / "memos-etl.yaml"), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout[res.stdout.index("{") :])["deleted_in_source"] == 0

    quiet = sync(tmp_path, dev_server.url, db, on_change=policy, on_delete="delete")
    c = quiet["counts"]  # c1 read again at the cursor
    assert (c["requests"], c["delivered"], c["deleted_in_source"]) == (0, 0, 0)
    if policy == "report":  # MemOS still holds a2: reported again, as any change not applied
        assert c["changed_after_delivery"] == 1 and c["skipped"] == {}
    else:  # the rewrite forgot a2: off the path and not delivered any more, so skipped
        assert c["changed_after_delivery"] == 0 and c["changes"] == {}
        assert c["skipped"] == {"abandoned: branch": 1}
    assert held(dev_server.url) == want


def test_ugly_chats_cost_one_quarantined_row_each_and_the_others_load(tmp_path, dev_server):
    db = f"sqlite:///{tmp_path / 'webui.db'}"
    engine = sa.create_engine(db)
    meta.create_all(engine)
    for i in range(30):  # the chats that load (and keep the bad share under load.max_failed_share)
        put(engine, f"good{i:02d}", f"u-{i % 3}", history([B1, B2], "b2"), T0 + 1)
    put(engine, "broken", "u-ana", '{"history": {"messages": {"x": ', T0 + 2)  # written half
    cyc = history([U1, A1], "a1")
    cyc["history"]["messages"]["u1"]["parentId"] = "a1"
    put(engine, "cycle", "u-ana", cyc, T0 + 3)
    put(engine, "orphan", "u-ana", history([A1], "a1"), T0 + 4)  # a1's parent u1 is not there
    put(engine, "nowhere", "u-ana", history([U1, A1], "zz"), T0 + 5)
    put(engine, "empty", "u-ana", history([], None), T0 + 6)  # a chat opened, nothing written: no rows
    out = sync(tmp_path, dev_server.url, db)
    c = out["counts"]
    assert (c["delivered"], c["quarantined"]) == (60, 4)
    # the report groups reasons by their head; the quarantine keeps each row's whole reason
    assert c["reasons"] == {
        "nest: missing node in chat.history.messages": 2,  # a1's parent u1 absent; currentId 'zz'
        "nest: chat is text but not JSON": 1,
        "nest: cycle in chat.history.messages": 1,
    }
    assert held(dev_server.url) == {
        (f"u-{i % 3}", f"good{i:02d}"): [
            ("user", B1["content"], at(T0 + 10)),
            ("assistant", B2["content"], at(T0 + 12)),
        ]
        for i in range(30)
    }
