"""DynamoDB as a source: LangChain's DynamoDBChatMessageHistory as the real library writes it
(into moto's DynamoDB server on loopback), synced through the CLI into the dev-server and
compared message for message with what the test put in; growth, deleted items, nothing sent
twice, bad items, a cursor attribute, a query by key, a missing table."""

from __future__ import annotations

import json
import os
import uuid
from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from memos_etl.cli import app
from tests.helpers import store_cli, store_config, store_sync
from tests.test_langchain import ALICE, BOB, messages_of, times_of, write_chats

runner = CliRunner()

for _var in ("LANGCHAIN_TRACING_V2", "LANGSMITH_TRACING", "LANGCHAIN_API_KEY", "LANGSMITH_API_KEY"):
    os.environ.pop(_var, None)  # tracing stays off: no test talks to LangSmith


@pytest.fixture
def table(s3_endpoint):
    """A new table named for this test, as LangChain's docs create it (SessionId, on demand)."""
    import boto3

    name = f"SessionTable-{uuid.uuid4().hex[:8]}"
    db = boto3.client("dynamodb", endpoint_url=s3_endpoint, region_name="us-east-1")
    db.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "SessionId", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "SessionId", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    yield name
    db.delete_table(TableName=name)


def history(endpoint: str, table: str, **kw):
    from langchain_community.chat_message_histories import DynamoDBChatMessageHistory

    return lambda session: DynamoDBChatMessageHistory(table_name=table, session_id=session, endpoint_url=endpoint, **kw)


def config(tmp_path: Path, server: str, endpoint: str, table: str, extra: dict | None = None, load=None) -> Path:
    return store_config(
        tmp_path, server, "langchain-dynamodb", "dynamodb", {"table": table, "endpoint_url": endpoint}, extra, load
    )


cli, sync = store_cli, store_sync


def test_sessions_load_grow_vanish_and_rest(tmp_path, dev_server, s3_endpoint, table):
    import boto3
    from langchain_core.messages import AIMessage, HumanMessage

    write_chats(history(s3_endpoint, table))
    carol = history(s3_endpoint, table, coerce_float_to_decimal=True)("carol")
    carol.add_message(HumanMessage("Is it going to rain?", additional_kwargs={"p": 0.25}))
    carol.add_message(AIMessage("No rain today."))
    db = boto3.resource("dynamodb", endpoint_url=s3_endpoint, region_name="us-east-1").Table(table)
    # the float went in as DynamoDB's number (a Decimal when read back): read right, not quarantined
    item = db.get_item(Key={"SessionId": "carol"})["Item"]
    assert item["History"][0]["data"]["additional_kwargs"]["p"] == Decimal("0.25")
    db.put_item(Item={"SessionId": "stray", "History": "not a list"})  # written by hand, not by LangChain
    db.put_item(Item={"SessionId": "odd", "History": ["not a message", {"type": "human", "data": {"content": "Hi"}}]})
    before = sorted(json.dumps(i, default=str, sort_keys=True) for i in db.scan()["Items"])

    cfg = config(tmp_path, dev_server.url, s3_endpoint, table, load={"max_failed_share": 0.5})
    c = sync(cfg)["counts"]
    assert messages_of(dev_server.url) == {
        ("alice:travel", "alice:travel"): ALICE,
        ("bob:cooking", "bob:cooking"): BOB,
        ("carol", "carol"): [("user", "Is it going to rain?"), ("assistant", "No rain today.")],
        ("odd", "odd"): [("user", "Hi")],
    }
    assert c["delivered"] == 9 and c["quarantined"] == 2, c
    assert c["skipped"] == {"langchain: tool_call": 1, "langchain: tool_result": 1}, c["skipped"]
    assert c["accounted"] and c["read"] == 11, c  # read = outcomes; the skipped tool traffic is counted apart
    assert times_of(dev_server.url) == [None] * 9  # no times in the items: MemOS stamps them
    from tasks.quarantine import read_quarantine

    reasons = sorted(r for row in read_quarantine(tmp_path / "state").to_pylist() for r in row["reasons"])
    assert reasons == [
        'key odd index 0: not {"type", "data": {...}} as message_to_dict writes it',
        "key stray: History: a str, not a list",
    ], reasons
    assert sorted(json.dumps(i, default=str, sort_keys=True) for i in db.scan()["Items"]) == before  # wrote nothing

    # nothing changed: the table is read again and nothing is sent
    rest = sync(cfg)["counts"]
    assert rest["delivered"] == 0 and rest["requests"] == 0 and rest["already_delivered"] == 9, rest

    # a session grows (the library writes its whole list back): only its new message is sent
    history(s3_endpoint, table)("bob:cooking").add_message(HumanMessage("And a hard one?"))
    grew = sync(cfg)["counts"]
    assert grew["delivered"] == 1 and grew["requests"] == 1, grew
    assert messages_of(dev_server.url)[("bob:cooking", "bob:cooking")] == [*BOB, ("user", "And a hard one?")]

    # a session cleared (the library deletes its item) and the hand-written items removed (a
    # segment holding a record it cannot read is not judged): reconcile and the next sync find
    # the delivered messages of alice and odd gone
    history(s3_endpoint, table)("alice:travel").clear()
    db.delete_item(Key={"SessionId": "stray"})
    db.delete_item(Key={"SessionId": "odd"})
    rec = cli(cfg, "reconcile")
    assert rec["deleted_in_source"] == 5 and rec["units_not_judged"] == 0, rec
    assert set(rec["conversations"]) == {"alice:travel/alice:travel", "odd/odd"}, rec
    gone = sync(cfg)["counts"]
    assert gone["gone_from_source"] == 5 and gone["delivered"] == 0, gone


def test_segments_query_by_key_and_tools_kept(tmp_path, dev_server, s3_endpoint, table):
    """Parallel scan segments split the table and lose nothing; a Query reads one session."""
    write_chats(history(s3_endpoint, table))
    cfg = config(
        tmp_path,
        dev_server.url,
        s3_endpoint,
        table,
        {"dynamodb": {"segments": 7}, "constants": {"user_separator": ":"}},
    )
    c = sync(cfg)["counts"]
    assert messages_of(dev_server.url) == {("alice", "alice:travel"): ALICE, ("bob", "bob:cooking"): BOB}
    assert c["delivered"] == 6, c

    other = tmp_path / "q"
    other.mkdir()
    q = config(
        other, dev_server.url, s3_endpoint, table, {"dynamodb": {"key": {"SessionId": "alice:travel"}}, "skip": []}
    )
    c = sync(q)["counts"]
    alice = [*ALICE[:3], ("tool", 'weather({"city": "Lisbon"})'), ("tool", "22C and sunny"), ALICE[3]]
    assert c["read"] == 6 and c["skipped"] == {}, c
    assert messages_of(dev_server.url)[("alice:travel", "alice:travel")] == alice  # bob's session not read


def test_a_cursor_attribute_reads_only_what_moved(tmp_path, dev_server, s3_endpoint, table):
    """Items written with an updated_at: a nightly run reads items at or after the last run's
    highest value; a backfill of a range leaves the cursor alone."""
    import boto3

    db = boto3.resource("dynamodb", endpoint_url=s3_endpoint, region_name="us-east-1").Table(table)

    def put(session: str, texts: list[str], at: int) -> None:
        msgs = [{"type": "human" if i % 2 == 0 else "ai", "data": {"content": t}} for i, t in enumerate(texts)]
        db.put_item(Item={"SessionId": session, "History": msgs, "updated_at": at})

    put("s1", ["a", "b"], 100)
    put("s2", ["c"], 200)
    cfg = config(tmp_path, dev_server.url, s3_endpoint, table, {"dynamodb": {"cursor": "updated_at"}})
    first = sync(cfg)
    assert first["counts"]["delivered"] == 3 and json.loads(first["cursor_after"])["v"] == 200, first
    put("s1", ["a", "b", "d"], 300)
    put("s3", ["e"], 50)  # written with an old value: a cursor misses it (why reconcile exists)
    c = sync(cfg)
    assert c["counts"]["read"] == 4 and c["counts"]["delivered"] == 1 and json.loads(c["cursor_after"])["v"] == 300, c
    assert messages_of(dev_server.url) == {
        ("s1", "s1"): [("user", "a"), ("assistant", "b"), ("user", "d")],
        ("s2", "s2"): [("user", "c")],
    }


def test_no_table_is_one_clear_line(tmp_path, dev_server, s3_endpoint):
    cfg = config(tmp_path, dev_server.url, s3_endpoint, "NoSuchTable")
    res = runner.invoke(app, ["sync", "chats", "-c", str(cfg), "--no-prefect"])
    assert res.exit_code != 0
    assert "Traceback" not in res.output, res.output
    (line,) = [x for x in res.output.splitlines() if "cannot read the table" in x]
    assert "dynamodb NoSuchTable" in line and "ResourceNotFoundException" in line, res.output


def many_sessions(endpoint: str, table: str, sessions: int, turns: int) -> dict:
    """`sessions` sessions of `turns` alternating messages, each written by the library in one
    add_messages; what MemOS must hold of them, in order."""
    from langchain_core.messages import AIMessage, HumanMessage

    want: dict = {}
    make = history(endpoint, table)
    for s in range(sessions):
        session = f"t{s:03d}"
        texts = [f"{session} turn {t}: {'question' if t % 2 == 0 else 'answer'} {t}" for t in range(turns)]
        make(session).add_messages([HumanMessage(x) if i % 2 == 0 else AIMessage(x) for i, x in enumerate(texts)])
        want[(session, session)] = [("user" if i % 2 == 0 else "assistant", x) for i, x in enumerate(texts)]
    return want


def test_killed_mid_send_then_rerun_loads_each_message_once(tmp_path, dev_server, s3_endpoint, table):
    """kill -9 twice while a first sync sends 480 messages of 24 sessions, then re-runs: every
    message once, in order."""
    import subprocess

    from tests.helpers import stats
    from tests.test_crash import ROOT, crash_command, kill_while_sending
    from tests.test_langchain import messages_of

    want = many_sessions(s3_endpoint, table, sessions=24, turns=20)
    mapping = tmp_path / "m.yaml"
    src = {"name": "chats", "dynamodb": {"table": table, "endpoint_url": s3_endpoint}}
    mapping.write_text(yaml.safe_dump({"preset": "langchain-dynamodb", "source": src}))
    cmd = crash_command(tmp_path, mapping, dev_server)
    kill_while_sending(cmd, dev_server, times=2)
    assert 0 < stats(dev_server.url)["messages"] < 480, "the kills came before or after the sending"
    for _ in range(3):
        final = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
        if final.returncode == 0:
            break
    assert final.returncode == 0, final.stdout[-3000:] + final.stderr[-3000:]
    assert messages_of(dev_server.url) == want  # 0 missing, 0 twice, in order
    assert stats(dev_server.url)["messages"] == 480


def test_backfill_by_segment_loads_each_message_once_then_nightly_sends_nothing(
    tmp_path, dev_server, s3_endpoint, table
):
    """`memos-etl backfill --by file` over the scan's segments (4 parts, 2 at a time): each
    message once across the parts, then the nightly sync sends 0."""
    from tests.helpers import stats
    from tests.test_langchain import messages_of

    want = many_sessions(s3_endpoint, table, sessions=12, turns=6)
    cfg = config(tmp_path, dev_server.url, s3_endpoint, table, load={"max_messages_per_request": 4})
    out = cli(cfg, "backfill", "--by", "file", "--parallel", "2", "--no-prefect")
    assert out["status"] == "completed" and out["parts"] == out["done"] == 4, out
    assert messages_of(dev_server.url) == want and stats(dev_server.url)["messages"] == 72
    assert out["counts"]["delivered"] == 72 and out["counts"]["already_delivered"] == 0, out["counts"]
    nightly = sync(cfg)["counts"]
    assert nightly["delivered"] == 0 and nightly["requests"] == 0 and nightly["already_delivered"] == 72, nightly
