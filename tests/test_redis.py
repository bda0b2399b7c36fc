"""Redis as a source: LangChain's RedisChatMessageHistory as the real library writes it (into a
real redis-server), synced through the CLI into the dev-server and compared message for
message with what the test put in; growth, deletions, nothing changed, bad values."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import requests
import yaml
from typer.testing import CliRunner

from memos_etl.cli import app
from tasks.extract.redis import shard_of
from tests.conftest import ROOT
from tests.helpers import stats
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
    extra = dict(extra or {})
    src = {"name": "chats", "redis": {"url": url, **extra.pop("redis", {})}}
    (tmp_path / "m.yaml").write_text(yaml.safe_dump({"preset": "langchain-redis", "source": src, **extra}))
    cfg = tmp_path / "memos-etl.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "sources": {"chats": str(tmp_path / "m.yaml")},
                "target": {"base_url": server, "backoff_base_s": 0.01, "backoff_cap_s": 0.05},
                **({"load": load} if load else {}),
                "state": {"work_dir": str(tmp_path / "state"), "ledger_url": f"sqlite:///{tmp_path / 'ledger.db'}"},
            }
        )
    )
    return cfg


def cli(cfg: Path, *args: str) -> dict:
    res = runner.invoke(app, [*args, "chats", "-c", str(cfg), "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout[res.stdout.index("{") :])


def sync(cfg: Path) -> dict:
    return cli(cfg, "sync", "--no-prefect")


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
    """kill -9 twice while a first sync sends 800 messages of 40 sessions (200 requests at 60
    a second), then re-runs: every message once, in order; then the sessions grow by 8
    messages each (their shards' versions change) and the nightly sync is killed while it
    sends the new tails: the re-run ends with every message once, in order (nothing lost,
    nothing twice; a shard is not marked read before what it holds is settled)."""
    from tests.test_crash import crash_command, kill_while_sending
    from tests.test_langchain import messages_of

    want = many_sessions(redis_url, sessions=40, turns=20)
    mapping = tmp_path / "m.yaml"
    mapping.write_text(
        yaml.safe_dump({"preset": "langchain-redis", "source": {"name": "chats", "redis": {"url": redis_url}}})
    )
    cmd = crash_command(tmp_path, mapping, dev_server)

    def rerun_until_exact(want: dict) -> None:
        for _ in range(3):
            final = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
            if final.returncode == 0:
                break
        assert final.returncode == 0, final.stdout[-3000:] + final.stderr[-3000:]
        assert messages_of(dev_server.url) == want  # 0 missing, 0 twice, in order
        assert stats(dev_server.url)["messages"] == sum(len(v) for v in want.values())

    kill_while_sending(cmd, dev_server, times=2)
    assert 0 < stats(dev_server.url)["messages"] < 800, "the kills came before or after the sending"
    rerun_until_exact(want)

    want = grown(want, many_sessions(redis_url, sessions=40, turns=8, start=20))
    kill_while_sending(cmd, dev_server, times=1, after_s=0.2)
    assert 800 < stats(dev_server.url)["messages"] < 1120, "the kills came before or after the sending"
    rerun_until_exact(want)


def test_personal_data_in_redis_messages_is_redacted_before_it_leaves(
    tmp_path, dev_server, rdb, redis_url, monkeypatch
):
    """The mapping's `redact:` on Redis rows: e-mail addresses hashed (the same token in every
    message), a phone number replaced, a message with an IP address dropped (counted, read =
    outcomes); content blocks redacted after they are joined. What the dev-server holds is
    byte for byte the text with each value swapped for its token, and holds no value; a re-run
    sends nothing; a message appended later is redacted too and the redacted old ones are not
    'changed after delivery'."""
    from langchain_core.messages import AIMessage, HumanMessage

    from tests.test_langchain import messages_of
    from tests.test_redact import SECRET, token

    monkeypatch.setenv("MEMOS_ETL_REDACT_SECRET", SECRET)
    mail, other, phone, ip = "ana.lopez@example.com", "bo.chen@example.org", "+1 415-555-0134", "10.20.30.40"
    frank, gina = history(redis_url)("frank"), history(redis_url)("gina")
    frank.add_message(HumanMessage(f"my mail is {mail}, write me"))
    gina.add_message(HumanMessage("who answers the billing questions?"))
    frank.add_message(AIMessage(f"Noted: {mail}. Call {phone} if it bounces."))
    gina.add_message(AIMessage(content=[{"type": "text", "text": f"Write to {other}"}, {"type": "text", "text": "ok"}]))
    frank.add_message(HumanMessage(f"the box at {ip} is down"))
    frank.add_message(AIMessage("Rebooting it now."))
    want = {
        ("frank", "frank"): [
            ("user", f"my mail is {token(mail)}, write me"),
            ("assistant", f"Noted: {token(mail)}. Call <PHONE_NUMBER> if it bounces."),
            ("assistant", "Rebooting it now."),
        ],
        ("gina", "gina"): [
            ("user", "who answers the billing questions?"),
            ("assistant", f"Write to {token(other)}\nok"),
        ],
    }
    redact = {"operators": {"EMAIL_ADDRESS": "hash", "IP_ADDRESS": "drop_message"}}
    cfg = config(tmp_path, dev_server.url, redis_url, {"redact": redact})
    c = sync(cfg)["counts"]
    assert messages_of(dev_server.url) == want
    assert c["read"] == 6 and c["delivered"] == 5 and c["redaction_dropped"] == 1 and c["accounted"], c
    assert c["redaction"]["EMAIL_ADDRESS"]["found"] == 3 and c["redaction"]["IP_ADDRESS"]["messages"] == 1, c
    raw = json.dumps(requests.get(dev_server.url + "/_dev/messages", timeout=30).json())
    assert not any(v in raw for v in (mail, other, phone, ip)), raw  # nowhere: content, info, ids

    again = sync(cfg)["counts"]
    assert again["requests"] == 0 and again["delivered"] == 0 and again["changed_after_delivery"] == 0, again

    frank.add_message(HumanMessage(f"also cc {other} please"))
    grew = sync(cfg)["counts"]
    assert grew["delivered"] == 1 and grew["changed_after_delivery"] == 0, grew
    want[("frank", "frank")].append(("user", f"also cc {token(other)} please"))
    assert messages_of(dev_server.url) == want
