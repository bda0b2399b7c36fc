"""Redis as a source: LangChain's RedisChatMessageHistory as the real library writes it (into a
real redis-server), synced through the CLI into the dev-server and compared message for
message with what the test put in; growth, deletions, nothing changed, bad values."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from memos_etl.cli import app
from tasks.extract.redis import shard_of
from tests.conftest import ROOT
from tests.helpers import redaction_holds, stats, store_cli, store_config, store_sync, two_syncs_at_once
from tests.test_langchain import ALICE, BOB, messages_of, times_of, write_chats

runner = CliRunner()

for _var in ("LANGCHAIN_TRACING_V2", "LANGSMITH_TRACING", "LANGCHAIN_API_KEY", "LANGSMITH_API_KEY"):
    os.environ.pop(_var, None)  # tracing stays off: no test talks to LangSmith

SHARDS = 64


@pytest.fixture
def rdb(redis_url):
    """The session's server, emptied for this test."""
    import redis

    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.close()


def history(url: str):
    from langchain_community.chat_message_histories import RedisChatMessageHistory

    return lambda session: RedisChatMessageHistory(session_id=session, url=url)


def config(tmp_path: Path, server: str, url: str, extra: dict | None = None, load: dict | None = None) -> Path:
    return store_config(tmp_path, server, "langchain-redis", "redis", {"url": url}, extra, load)


cli, sync = store_cli, store_sync


def test_sessions_load_oldest_first_grow_vanish_and_rest(tmp_path, dev_server, rdb, redis_url):
    from langchain_core.messages import AIMessage, HumanMessage

    write_chats(history(redis_url))
    # the library keeps the newest at the head (LPUSH): what the test relies on
    assert json.loads(rdb.lindex("message_store:bob:cooking", 0))["data"]["content"] == BOB[-1][1]
    carol = history(redis_url)("carol")
    carol.add_message(HumanMessage("Is it going to rain?"))
    rdb.lpush("message_store:carol", "not a message")  # written by hand, not by LangChain
    carol.add_message(AIMessage("No rain today."))
    assert shard_of(b"message_store:carol", SHARDS) != shard_of(b"message_store:alice:travel", SHARDS)
    before = {k: rdb.lrange(k, 0, -1) for k in rdb.keys("*")}

    cfg = config(tmp_path, dev_server.url, redis_url, load={"max_failed_share": 0.5})
    report = sync(cfg)
    c = report["counts"]
    assert messages_of(dev_server.url) == {
        ("alice:travel", "alice:travel"): ALICE,
        ("bob:cooking", "bob:cooking"): BOB,
        ("carol", "carol"): [("user", "Is it going to rain?"), ("assistant", "No rain today.")],
    }
    assert c["delivered"] == 8 and c["quarantined"] == 1 and c["units_skipped"] == 0, c
    assert c["skipped"] == {"langchain: tool_call": 1, "langchain: tool_result": 1}, c["skipped"]
    assert times_of(dev_server.url) == [None] * 8  # no times in the lists: MemOS stamps them
    from tasks.quarantine import read_quarantine

    (row,) = read_quarantine(tmp_path / "state").to_pylist()
    assert row["reasons"] == ["key message_store:carol index 1: not JSON"], row
    assert {k: rdb.lrange(k, 0, -1) for k in rdb.keys("*")} == before  # the run wrote nothing

    # nothing changed: every shard skipped, nothing read
    rest = sync(cfg)["counts"]
    assert rest["units_skipped"] == SHARDS and rest["read"] == 0 and rest["delivered"] == 0, rest

    # a session grows at the head: only its new message is sent, after the old ones
    history(redis_url)("bob:cooking").add_message(HumanMessage("And a hard one?"))
    grew = sync(cfg)["counts"]
    assert grew["delivered"] == 1 and grew["requests"] == 1 and grew["units_skipped"] == SHARDS - 1, grew
    assert grew["already_delivered"] == 2, grew
    assert messages_of(dev_server.url)[("bob:cooking", "bob:cooking")] == [*BOB, ("user", "And a hard one?")]

    # a session cleared (the library deletes its key): the next sync reads its shard again and
    # finds its messages gone; reconcile (every key, whatever the manifest) says the same
    history(redis_url)("alice:travel").clear()
    rec = cli(cfg, "reconcile")
    assert rec["deleted_in_source"] == 4 and rec["delivered"] == 9, rec
    assert rec["conversations"] == {
        "alice:travel/alice:travel": {"user_id": "alice:travel", "conversation_id": "alice:travel", "deleted": 4}
    }
    gone = sync(cfg)["counts"]
    assert gone["gone_from_source"] == 4 and gone["delivered"] == 0 and gone["units_skipped"] == SHARDS - 1, gone


def test_user_before_a_separator_tools_kept_and_another_prefix(tmp_path, dev_server, rdb, redis_url):
    from langchain_community.chat_message_histories import RedisChatMessageHistory

    write_chats(lambda s: RedisChatMessageHistory(session_id=s, url=redis_url, key_prefix="app1:chat:"))
    write_chats(history(redis_url))  # the default prefix: not this mapping's keys
    cfg = config(
        tmp_path,
        dev_server.url,
        redis_url,
        {"redis": {"pattern": "app1:chat:*", "shards": 3}, "constants": {"user_separator": ":"}, "skip": []},
    )
    report = sync(cfg)
    alice = [*ALICE[:3], ("tool", 'weather({"city": "Lisbon"})'), ("tool", "22C and sunny"), ALICE[3]]
    assert messages_of(dev_server.url) == {("alice", "alice:travel"): alice, ("bob", "bob:cooking"): BOB}
    assert report["counts"]["delivered"] == 8 and report["counts"]["units_skipped"] == 0


def test_a_key_of_another_kind_is_one_quarantined_row(tmp_path, dev_server, rdb, redis_url):
    from langchain_core.messages import HumanMessage

    history(redis_url)("dave").add_message(HumanMessage("Hello"))
    rdb.set("message_store:stray", "a string, not a list")
    cfg = config(tmp_path, dev_server.url, redis_url, load={"max_failed_share": 0.6})
    c = sync(cfg)["counts"]
    assert messages_of(dev_server.url) == {("dave", "dave"): [("user", "Hello")]}
    assert c["delivered"] == 1 and c["quarantined"] == 1, c
    from tasks.quarantine import read_quarantine

    (row,) = read_quarantine(tmp_path / "state").to_pylist()
    assert len(row["reasons"]) == 1 and row["reasons"][0].startswith("key message_store:stray: not a list: WRONGTYPE")


def test_a_value_over_the_record_limit_is_one_quarantined_row(tmp_path, dev_server, rdb, redis_url):
    """A 2 MB element with source.max_record_bytes at 1 MB: quarantined with its size; the rest
    of the session loads."""
    from langchain_core.messages import HumanMessage, message_to_dict

    hist = history(redis_url)("erin")
    hist.add_message(HumanMessage("short"))
    hist.add_message(HumanMessage("x" * (2 << 20)))
    cfg = config(tmp_path, dev_server.url, redis_url, load={"max_failed_share": 0.6})
    body = yaml.safe_load((tmp_path / "m.yaml").read_text())
    body["source"]["max_record_bytes"] = 1 << 20
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(body))
    c = sync(cfg)["counts"]
    assert messages_of(dev_server.url) == {("erin", "erin"): [("user", "short")]}
    assert c["delivered"] == 1 and c["quarantined"] == 1, c
    from tasks.quarantine import read_quarantine

    (row,) = read_quarantine(tmp_path / "state").to_pylist()
    size = len(json.dumps(message_to_dict(HumanMessage("x" * (2 << 20)))))
    assert row["reasons"] == [
        f"key message_store:erin index 1: {size:,} bytes, more than source.max_record_bytes=1,048,576"
    ], row


def test_no_server_is_one_clear_line(tmp_path, dev_server):
    from memos_etl.devserver import free_port

    cfg = config(tmp_path, dev_server.url, f"redis://:secret@127.0.0.1:{free_port()}/0")
    res = runner.invoke(app, ["sync", "chats", "-c", str(cfg), "--no-prefect"])
    assert res.exit_code != 0
    assert "Traceback" not in res.output and "secret" not in res.output, res.output
    (line,) = [x for x in res.output.splitlines() if "cannot list keys" in x]
    assert "redis://:***@127.0.0.1" in line and "Connection refused" in line, res.output


# --- every guarantee on Redis (issue 39, item 5) ------------------------------------------


def many_sessions(url: str, sessions: int, turns: int, tag: str = "t", start: int = 0) -> dict:
    """`sessions` sessions of `turns` alternating user/assistant messages each (turns
    `start`..), written by the library one add_message at a time; returns what MemOS must hold
    of them: (user, conversation) -> [(role, content)] in order (the preset's user and
    conversation are the session id)."""
    from langchain_core.messages import AIMessage, HumanMessage

    want: dict = {}
    make = history(url)
    for s in range(sessions):
        session = f"{tag}{s:03d}"
        hist = make(session)
        for t in range(start, start + turns):
            text = f"{session} turn {t}: {'question' if t % 2 == 0 else 'answer'} number {t}"
            hist.add_message(HumanMessage(text) if t % 2 == 0 else AIMessage(text))
            want.setdefault((session, session), []).append(("user" if t % 2 == 0 else "assistant", text))
    return want


def grown(want: dict, more: dict) -> dict:
    out = {k: list(v) for k, v in want.items()}
    for k, v in more.items():
        out.setdefault(k, []).extend(v)
    return out


def test_killed_mid_send_then_rerun_loads_each_message_once(tmp_path, dev_server, rdb, redis_url):
    """kill -9 twice while a first sync sends 480 messages of 24 sessions (120 requests at 60
    a second), then re-runs: every message once, in order; then the sessions grow by 8
    messages each (their shards' versions change) and the nightly sync is killed while it
    sends the new tails: the re-run ends with every message once, in order (nothing lost,
    nothing twice; a shard is not marked read before what it holds is settled)."""
    from tests.test_crash import crash_command, kill_while_sending, rerun_until_exact
    from tests.test_langchain import messages_of

    want = many_sessions(redis_url, sessions=24, turns=20)
    mapping = tmp_path / "m.yaml"
    mapping.write_text(
        yaml.safe_dump({"preset": "langchain-redis", "source": {"name": "chats", "redis": {"url": redis_url}}})
    )
    cmd = crash_command(tmp_path, mapping, dev_server)

    kill_while_sending(cmd, dev_server, times=2)
    assert 0 < stats(dev_server.url)["messages"] < 480, "the kills came before or after the sending"
    rerun_until_exact(cmd, dev_server, want, messages_of)

    want = grown(want, many_sessions(redis_url, sessions=24, turns=8, start=20))
    kill_while_sending(cmd, dev_server, times=1, after_s=0.2)
    assert 480 < stats(dev_server.url)["messages"] < 672, "the kills came before or after the sending"
    rerun_until_exact(cmd, dev_server, want, messages_of)


def test_personal_data_in_redis_messages_is_redacted_before_it_leaves(
    tmp_path, dev_server, rdb, redis_url, monkeypatch
):
    """The mapping's `redact:` on Redis rows (hash, replace, drop_message, content blocks, a
    message appended later): see tests.helpers.redaction_holds."""
    from tests.test_redact import SECRET

    monkeypatch.setenv("MEMOS_ETL_REDACT_SECRET", SECRET)
    redaction_holds(
        history(redis_url), lambda extra: config(tmp_path, dev_server.url, redis_url, extra), dev_server.url
    )


def part_reports(tmp_path: Path) -> dict:
    """part key -> its report's counts, from the ledger's backfill_parts."""
    import sqlite3

    with sqlite3.connect(tmp_path / "ledger.db") as db:
        rows = db.execute("SELECT part_key, status, report FROM backfill_parts").fetchall()
    assert all(status == "done" for _, status, _ in rows), rows
    return {key: json.loads(report) for key, _, report in rows}


@pytest.mark.parametrize("by", ["file", "hash"])
def test_backfill_parts_load_each_message_once_then_nightly_sends_nothing(tmp_path, dev_server, rdb, redis_url, by):
    """`memos-etl backfill` of a Redis source, by shard (`by: file`, 4 shards: 4 parts) and by
    conversation hash bucket (`by: hash`, 3 buckets), 2 parts at a time: each message once, in
    order, across the parts (their `read` adds up to what Redis holds: no shard or conversation
    read by two parts); the tool messages skipped once each; then the nightly sync sends 0."""
    from tests.test_langchain import messages_of

    write_chats(history(redis_url))  # alice:travel (4 messages, a tool call and its result skipped), bob:cooking (2)
    want = {**many_sessions(redis_url, sessions=10, turns=6), ("alice:travel", "alice:travel"): ALICE}
    want[("bob:cooking", "bob:cooking")] = BOB
    total = sum(len(v) for v in want.values())
    cfg = config(tmp_path, dev_server.url, redis_url, {"redis": {"shards": 4}}, load={"max_messages_per_request": 4})
    extra = ["--buckets", "3"] if by == "hash" else []
    out = cli(cfg, "backfill", "--by", by, *extra, "--parallel", "2", "--no-prefect")
    assert out["status"] == "completed" and out["parts"] == out["done"] == (4 if by == "file" else 3), out
    assert messages_of(dev_server.url) == want  # once each, in order
    assert stats(dev_server.url)["messages"] == total
    c = out["counts"]
    assert c["delivered"] == total and c["already_delivered"] == 0 and c["quarantined"] == 0, c
    assert c["skipped"] == {"langchain: tool_call": 1, "langchain: tool_result": 1}, c["skipped"]
    parts = part_reports(tmp_path)
    assert len(parts) == out["parts"]
    assert sum(p["read"] for p in parts.values()) == total, parts  # (skipped tool messages are not read)
    assert sum(p["delivered"] for p in parts.values()) == total, parts
    assert sum(1 for p in parts.values() if p["delivered"]) >= 2, parts  # the messages spread over parts

    nightly = sync(cfg)["counts"]
    assert nightly["delivered"] == 0 and nightly["requests"] == 0 and nightly["accounted"], nightly
    assert messages_of(dev_server.url) == want
    again = cli(cfg, "backfill", "--by", by, *extra, "--parallel", "2", "--no-prefect")  # done: nothing runs
    assert again["ran"] == 0 and stats(dev_server.url)["messages"] == total, again


def test_two_syncs_at_once_never_both_send_a_message(tmp_path, dev_server, rdb, redis_url):
    """Two `memos-etl sync` processes of the same Redis source at the same moment, one SQLite
    ledger: each session sent by one of them, each message once (tests.helpers.two_syncs_at_once)."""
    cfg = config(
        tmp_path,
        dev_server.url,
        redis_url,
        {"redis": {"shards": 8}},
        load={"max_messages_per_request": 4, "requests_per_second": 30, "concurrency": 2},
    )
    first = many_sessions(redis_url, sessions=2, turns=4, tag="early")
    assert sync(cfg)["counts"]["delivered"] == 8  # the ledger exists (see the next test for a new one)
    two_syncs_at_once(cfg, dev_server.url, {**first, **many_sessions(redis_url, sessions=40, turns=10)}, before=8)


def test_two_runs_opening_a_new_sqlite_ledger_at_once_both_start(tmp_path):
    """Found by the lease test above: two syncs started at once on a new SQLite ledger (a first
    install's two schedules, a sync and a backfill) race to create its tables, and one of them
    ends at once with `opening the ledger failed: table runs already exists`. Here the race is
    run bare, without the CLI's seconds of start-up that blur it: 3 processes, each with the
    ledger module imported, open one new ledger on the same signal (up to 5 times); each must
    open it."""
    code = (
        "import sys; from core.ledger import Ledger; print('ready', flush=True); sys.stdin.readline(); "
        "Ledger(sys.argv[1]).close()"
    )
    for i in range(5):
        url = f"sqlite:///{tmp_path / f'ledger-{i}.db'}"
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", code, url],
                cwd=ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for _ in range(3)
        ]
        for p in procs:
            assert p.stdout.readline().strip() == "ready", p.communicate()[0]
        for p in procs:  # all at once
            p.stdin.write("go\n")
            p.stdin.flush()
        for p in procs:
            out = p.communicate(timeout=120)[0]
            assert p.returncode == 0, out[-2000:]
