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
from tests.helpers import redaction_holds, set_faults, store_cli, store_config, store_sync, two_syncs_at_once
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


def many_sessions(endpoint: str, table: str, sessions: int, turns: int, tag: str = "t") -> dict:
    """`sessions` sessions of `turns` alternating messages, each written by the library in one
    add_messages; what MemOS must hold of them, in order."""
    from langchain_core.messages import AIMessage, HumanMessage

    want: dict = {}
    make = history(endpoint, table)
    for s in range(sessions):
        session = f"{tag}{s:03d}"
        texts = [f"{session} turn {t}: {'question' if t % 2 == 0 else 'answer'} {t}" for t in range(turns)]
        make(session).add_messages([HumanMessage(x) if i % 2 == 0 else AIMessage(x) for i, x in enumerate(texts)])
        want[(session, session)] = [("user" if i % 2 == 0 else "assistant", x) for i, x in enumerate(texts)]
    return want


def test_killed_mid_send_then_rerun_loads_each_message_once(tmp_path, dev_server, s3_endpoint, table):
    """kill -9 twice while a first sync sends 480 messages of 24 sessions, then re-runs: every
    message once, in order."""

    from tests.helpers import stats
    from tests.test_crash import crash_command, kill_while_sending, rerun_until_exact
    from tests.test_langchain import messages_of

    want = many_sessions(s3_endpoint, table, sessions=24, turns=20)
    mapping = tmp_path / "m.yaml"
    src = {"name": "chats", "dynamodb": {"table": table, "endpoint_url": s3_endpoint}}
    mapping.write_text(yaml.safe_dump({"preset": "langchain-dynamodb", "source": src}))
    cmd = crash_command(tmp_path, mapping, dev_server)
    kill_while_sending(cmd, dev_server, times=2)
    assert 0 < stats(dev_server.url)["messages"] < 480, "the kills came before or after the sending"
    rerun_until_exact(cmd, dev_server, want, messages_of)
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


# --- redaction, leases, bad values (issue 39, item 5) ---------------------------------------


def test_personal_data_in_dynamodb_messages_is_redacted_before_it_leaves(
    tmp_path, dev_server, s3_endpoint, table, monkeypatch
):
    """The mapping's `redact:` on DynamoDB rows (hash, replace, drop_message, content blocks, a
    message appended later, which makes the library write the whole list back: the old ones
    read again are not 'changed after delivery'): see tests.helpers.redaction_holds."""
    from tests.test_redact import SECRET

    monkeypatch.setenv("MEMOS_ETL_REDACT_SECRET", SECRET)
    redaction_holds(
        history(s3_endpoint, table),
        lambda extra: config(tmp_path, dev_server.url, s3_endpoint, table, extra),
        dev_server.url,
    )


def test_two_syncs_at_once_never_both_send_a_message(tmp_path, dev_server, s3_endpoint, table):
    """Two `memos-etl sync` processes of the same table at the same moment, one SQLite ledger:
    both scan every segment, the conversation leases give each session to one of them; each
    message once, in order (tests.helpers.two_syncs_at_once)."""
    load = {"max_messages_per_request": 4, "requests_per_second": 30, "concurrency": 2}
    cfg = config(tmp_path, dev_server.url, s3_endpoint, table, load=load)
    first = many_sessions(s3_endpoint, table, sessions=2, turns=4, tag="early")
    assert sync(cfg)["counts"]["delivered"] == 8  # the ledger exists
    want = {**first, **many_sessions(s3_endpoint, table, sessions=40, turns=10)}
    two_syncs_at_once(cfg, dev_server.url, want, before=8)


def test_each_bad_value_is_one_quarantined_row_and_read_adds_up(tmp_path, dev_server, s3_endpoint, table):
    """Items an app wrote by hand next to LangChain's: in one History, a string, a string of
    JSON cut short (DynamoDB holds typed values, so a value that is not JSON cannot reach the
    decoder: text where a map belongs is its form here), a number, binary, a map of a type
    LangChain does not write, a map without `data`; and items whose History is a string, a map,
    or absent. Each is one quarantined row with its key, index and reason; the messages around
    them are delivered in order; a request the target fails for good leaves its conversation
    pending; read = delivered + quarantined + pending; the next run sends the pending ones and
    quarantines the same values again, one row each."""
    import boto3
    from boto3.dynamodb.types import Binary

    from tasks.quarantine import read_quarantine

    write_chats(history(s3_endpoint, table))  # 6 messages, a tool call and its result skipped
    db = boto3.resource("dynamodb", endpoint_url=s3_endpoint, region_name="us-east-1").Table(table)
    mixed = [
        {"type": "human", "data": {"content": "First question"}},
        "not a message",
        '{"type": "human", "data": {"content": "cut sho',
        7,
        Binary(b"\x00\x01"),
        {"type": "banana", "data": {"content": "x"}},
        {"type": "human"},
        {"type": "ai", "data": {"content": "Last answer"}},
    ]
    db.put_item(Item={"SessionId": "mixed", "History": mixed})
    db.put_item(Item={"SessionId": "stray", "History": "not a list"})
    db.put_item(Item={"SessionId": "mapped", "History": {"type": "human", "data": {"content": "Hi"}}})
    db.put_item(Item={"SessionId": "bare", "Note": "no History"})
    shape = 'not {"type", "data": {...}} as message_to_dict writes it'
    want_reasons = sorted(
        [
            *(f"key mixed index {i}: {shape}" for i in (1, 2, 3, 4, 6)),
            "key mixed index 5: message type 'banana' is not one LangChain writes (human, ai, system, tool)",
            "key stray: History: a str, not a list",
            "key mapped: History: a dict, not a list",
            "key bare: History: absent",
        ]
    )
    want = {
        ("alice:travel", "alice:travel"): ALICE,
        ("bob:cooking", "bob:cooking"): BOB,
        ("mixed", "mixed"): [("user", "First question"), ("assistant", "Last answer")],
    }
    good = sum(len(v) for v in want.values())

    # the first request fails for good (5 attempts of 500): its conversation waits for the next run
    load = {"max_failed_share": 0.9, "max_messages_per_request": 2, "concurrency": 1}
    cfg = config(tmp_path, dev_server.url, s3_endpoint, table, load=load)
    set_faults(dev_server.url, script=[{"status": 500}] * 5)
    res = runner.invoke(app, ["sync", "chats", "-c", str(cfg), "--no-prefect", "--json"])
    set_faults(dev_server.url, script=[])
    c = json.loads(res.stdout[res.stdout.index("{") :])["counts"]
    assert res.exit_code == 2, res.output  # incomplete: messages pending
    held = messages_of(dev_server.url)
    (waiting,) = set(want) - set(held)  # the conversation of the failed request: the rest of it waits too
    assert held == {k: v for k, v in want.items() if k != waiting}
    pending = len(want[waiting])
    assert c["quarantined"] == len(want_reasons) and c["pending"] == pending and c["delivered"] == good - pending, c
    assert c["read"] == c["delivered"] + c["quarantined"] + c["pending"] == good + len(want_reasons), c
    assert c["accounted"] and c["skipped"] == {"langchain: tool_call": 1, "langchain: tool_result": 1}, c
    rows = read_quarantine(tmp_path / "state").to_pylist()
    assert all(len(r["reasons"]) == 1 for r in rows), rows  # one row a value, one reason a row
    assert sorted(r["reasons"][0] for r in rows) == want_reasons

    again = sync(cfg)["counts"]
    assert again["delivered"] == pending and again["pending"] == 0 and again["quarantined"] == len(want_reasons), again
    assert again["read"] == again["delivered"] + again["already_delivered"] + again["quarantined"], again
    assert again["accounted"], again
    assert messages_of(dev_server.url) == want  # each once, in order, the bad values left out
    runs = {}
    for r in read_quarantine(tmp_path / "state").to_pylist():
        runs.setdefault(r["run_id"], []).append(r["reasons"][0])
    assert [sorted(v) for v in runs.values()] == [want_reasons, want_reasons], runs
