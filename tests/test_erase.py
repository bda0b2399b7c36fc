"""Erasure from the command line: `erase` deletes a user's memories on the target, and no
later sync, reset, backfill, replay or re-drive brings them back; the quarantine and dry-run
outboxes lose the user's rows; the erasure log shows ids and time only. Real dev-server over
HTTP, PostgreSQL ledger."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from typer.testing import CliRunner

from memos_etl.cli import app
from tasks.quarantine import read_quarantine
from tests.helpers import chat_rows, sample_mapping_at, stats, stored_messages, write_jsonl

runner = CliRunner()


def _setup(tmp_path: Path, url: str, ledger_url: str):
    data = tmp_path / "data"
    rows = chat_rows(4, 3)  # users u0 (c0, c2) and u1 (c1, c3)
    bad = dict(rows[0], message_id="bad-u0", turn=50, text="")  # quarantined: empty content
    write_jsonl(data / "a.jsonl", rows + [bad])
    mapping = sample_mapping_at(tmp_path, data)
    cfg = {
        "sources": {"chats": str(mapping)},
        "target": {"base_url": url, "backoff_base_s": 0.01, "backoff_cap_s": 0.05},
        "state": {"work_dir": str(tmp_path / "state"), "ledger_url": ledger_url},
    }
    p = tmp_path / "memos-etl.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return str(p), data, rows


def _json(res) -> dict:
    assert res.exit_code in (0, 2), res.output
    return json.loads(res.output[res.output.index("{") :])


def test_erase_a_user_then_nothing_brings_them_back(dev_server, tmp_path, pg_ledger_url):
    cfg, data, rows = _setup(tmp_path, dev_server.url, pg_ledger_url)
    first = _json(runner.invoke(app, ["sync", "chats", "-c", cfg, "--no-prefect", "--json"]))
    assert first["counts"]["delivered"] == 12 and first["counts"]["quarantined"] == 1
    # a dry run with new messages of both users: the outbox holds u0's requests
    write_jsonl(data / "b.jsonl", chat_rows(4, 2, start_turn=10))
    outbox = tmp_path / "state" / "outbox" / "sample-chats.jsonl"
    _json(runner.invoke(app, ["plan", "chats", "-c", cfg, "--json"]))
    assert any(json.loads(x)["body"]["user_id"] == "u0" for x in outbox.read_text().splitlines())

    res = runner.invoke(app, ["erase", "--user", "u0", "-c", cfg], input="n\n")
    assert res.exit_code == 1 and "erase user 'u0' (6 messages in 2 conversations" in res.output
    assert {u for u, _ in stored_messages(dev_server.url)} == {"u0", "u1"}
    res = runner.invoke(app, ["erase", "--user", "u0", "-c", cfg, "--yes"])
    assert res.exit_code == 0, res.output
    assert "6 messages in 2 requests forgotten by the ledger, 1 quarantined rows and 2 dry-run requests" in res.output
    held = stored_messages(dev_server.url)
    assert {u for u, _ in held} == {"u1"} and sum(len(v) for v in held.values()) == 6
    # local copies: the quarantined row and the dry-run requests of u0 are gone, u1's stay
    q = read_quarantine(str(tmp_path / "state"), "chats")
    assert all("bad-u0" not in r for r in q.column("record").to_pylist())
    assert [json.loads(x)["body"]["user_id"] for x in outbox.read_text().splitlines()] == ["u1", "u1"]
    # the erasure log: ids and time, no content
    status = runner.invoke(app, ["status", "-c", cfg])
    assert "erasures (memos-etl erase; ids only)" in status.output and "u0 (whole user)" in status.output
    log = json.loads(runner.invoke(app, ["status", "-c", cfg, "--erasures", "--json"]).output)
    assert [(e["user_id"], e["conversation_id"], e["status"]) for e in log] == [("u0", None, "done")]
    assert "conversation c0 turn" not in json.dumps(log, default=str)

    # every way back is closed: a nightly sync of new messages, a reset + full re-read, a
    # backfill, a replay of the user, a re-drive of the quarantine
    sent = stats(dev_server.url)["add_requests"]
    nightly = _json(runner.invoke(app, ["sync", "chats", "-c", cfg, "--no-prefect", "--json"]))
    assert nightly["counts"]["erased"] == 4 and nightly["counts"]["delivered"] == 4  # u1's new ones only
    assert runner.invoke(app, ["reset", "chats", "-c", cfg, "--yes"]).exit_code == 0
    again = _json(runner.invoke(app, ["sync", "chats", "-c", cfg, "--no-prefect", "--json"]))
    assert again["counts"]["erased"] == 11 and again["counts"]["requests"] == 0  # 6 + 4 + the bad row, u0's too
    back = runner.invoke(app, ["backfill", "chats", "-c", cfg, "--by", "file", "--no-prefect", "--json"])
    assert back.exit_code == 0, back.output
    assert "u0" not in {u for u, _ in stored_messages(dev_server.url)}
    replay = _json(runner.invoke(app, ["replay", "chats", "--user", "u0", "-c", cfg, "--yes", "--json"]))
    assert replay["counts"]["erased"] == 11 and replay["counts"]["requests"] == 0
    redrive = runner.invoke(app, ["quarantine", "redrive", "chats", "-c", cfg])
    assert redrive.exit_code == 0, redrive.output
    held = stored_messages(dev_server.url)
    assert {u for u, _ in held} == {"u1"} and sum(len(v) for v in held.values()) == 10
    assert stats(dev_server.url)["add_requests"] == sent + nightly["counts"]["requests"]


def test_erase_one_conversation_keeps_the_users_others(dev_server, tmp_path, pg_ledger_url):
    cfg, data, rows = _setup(tmp_path, dev_server.url, pg_ledger_url)
    _json(runner.invoke(app, ["sync", "chats", "-c", cfg, "--no-prefect", "--json"]))
    res = runner.invoke(app, ["erase", "--user", "u0", "--conversation", "c2", "-c", cfg, "--yes"])
    assert res.exit_code == 0, res.output
    assert "3 memories deleted" in res.output
    assert set(stored_messages(dev_server.url)) == {("u0", "c0"), ("u1", "c1"), ("u1", "c3")}
    (data / "a.jsonl").touch()
    again = _json(runner.invoke(app, ["sync", "chats", "-c", cfg, "--no-prefect", "--json"]))
    assert again["counts"]["erased"] == 3 and again["counts"]["requests"] == 0
    assert again["counts"]["already_delivered"] == 9


def test_erase_on_a_self_hosted_target_deletes_by_user_and_session(dev_server, tmp_path):
    """The open-source server's /product/delete_memory (user_id / session_id conditions), as
    the dev-server answers it; tests/test_memos_real.py does the same against MemOS itself."""
    cfg, data, rows = _setup(tmp_path, dev_server.url, f"sqlite:///{tmp_path / 'ledger.db'}")
    body = yaml.safe_load(Path(cfg).read_text())
    body["target"]["kind"] = "self-hosted"
    Path(cfg).write_text(yaml.safe_dump(body))
    assert (
        _json(runner.invoke(app, ["sync", "chats", "-c", cfg, "--no-prefect", "--json"]))["counts"]["delivered"] == 12
    )
    res = runner.invoke(app, ["erase", "--user", "u1", "--conversation", "c3", "-c", cfg, "--yes"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["forget", "--user", "u0", "-c", cfg, "--yes"])  # the old name still works
    assert res.exit_code == 0 and "6 memories deleted" in res.stdout, res.output
    assert "`memos-etl forget` is now `memos-etl erase`" in res.stderr
    assert set(stored_messages(dev_server.url)) == {("u1", "c1")}
    (data / "a.jsonl").touch()
    again = _json(runner.invoke(app, ["sync", "chats", "-c", cfg, "--no-prefect", "--json"]))
    assert again["counts"]["erased"] == 10 and again["counts"]["requests"] == 0
    status = runner.invoke(app, ["status", "-c", cfg])
    assert status.output.count(": done (") == 2, status.output
