"""A source that changes after delivery: edits, soft deletes and rewritten files are noticed,
counted apart from `already delivered` and listed per conversation; nothing is resent. Over
real HTTP to the dev-server, with a real PostgreSQL ledger."""

from __future__ import annotations

import json

import pytest
import yaml

from core.config import load_mapping
from core.errors import TargetIdentityError
from flows.runner import run
from tests.helpers import chat_rows, sample_mapping_at, stats, stored_messages, write_jsonl


@pytest.fixture
def pg_config(run_config, pg_ledger_url):
    run_config.state.ledger_url = pg_ledger_url
    return run_config


def test_edit_and_removal_after_delivery_are_reported_not_resent(dev_server, pg_config, tmp_path):
    data = tmp_path / "data"
    rows = chat_rows(3, 4)
    write_jsonl(data / "chats.jsonl", rows)
    mapping = load_mapping(sample_mapping_at(tmp_path, data))
    first = run(mapping, pg_config)
    assert first.status == "completed" and first.counts.delivered == 12
    held = stored_messages(dev_server.url)
    sent = stats(dev_server.url)["add_requests"]

    edited = [dict(r) for r in rows if r["message_id"] != "c1-3"]  # c1-3 removed from the file
    for r in edited:
        if r["message_id"] == "c0-2":
            r["text"] = "an edited message"  # same message id, new text
    write_jsonl(data / "chats.jsonl", edited)
    again = run(mapping, pg_config)
    c = again.counts
    assert again.status == "completed"
    assert c.changed_after_delivery == 1 and c.already_delivered == 10
    assert c.gone_from_source == 1 and c.deleted_in_source == 0
    assert c.requests == 0 and c.delivered == 0 and c.accounted
    assert c.changes == {
        "u0/c0": {"user_id": "u0", "conversation_id": "c0", "changed": 1},
        "u1/c1": {"user_id": "u1", "conversation_id": "c1", "gone": 1},
    }
    text = dict(again.rows())
    assert text["changed after delivery"].startswith("1 ")
    assert text["deleted in source"] == "1 (0 marked deleted, 1 gone from re-read files)"
    md = again.markdown()
    assert "## Changed or deleted after delivery" in md and "| u0/c0 | 1 | 0 | 0 |" in md
    # policy report: MemOS keeps what it had, nothing was sent
    assert stats(dev_server.url)["add_requests"] == sent
    assert stored_messages(dev_server.url) == held

    # the same edit read once more is reported again (it is still not applied), never sent
    (data / "chats.jsonl").touch()
    third = run(mapping, pg_config)
    assert third.counts.requests == 0 and third.counts.changed_after_delivery == 1


def test_soft_deleted_rows_are_counted_and_never_sent(dev_server, run_config, tmp_path):
    data = tmp_path / "data"
    rows = chat_rows(2, 4)
    for r in rows:
        r["deleted_at"] = None
    write_jsonl(data / "chats.jsonl", rows)
    path = sample_mapping_at(tmp_path, data)
    body = yaml.safe_load(path.read_text())
    body["fields"]["deleted"] = "deleted_at"
    path.write_text(yaml.safe_dump(body))
    mapping = load_mapping(path)
    assert run(mapping, run_config).counts.delivered == 8
    sent = stats(dev_server.url)["add_requests"]

    rows[1]["deleted_at"] = "2024-05-01T00:00:00Z"  # delivered, now deleted in the source
    new = dict(rows[0], message_id="c0-99", turn=99, text="", deleted_at="2024-05-02T00:00:00Z")
    write_jsonl(data / "chats.jsonl", rows + [new])  # deleted before it was ever sent (and empty)
    again = run(mapping, run_config)
    c = again.counts
    assert c.deleted_in_source == 2 and c.quarantined == 0 and c.requests == 0
    assert c.changes == {"u0/c0": {"user_id": "u0", "conversation_id": "c0", "deleted": 1}} and c.accounted
    assert stats(dev_server.url)["add_requests"] == sent


def test_same_target_through_a_second_url_stops_before_sending(dev_server, run_config, tmp_path):
    data = tmp_path / "data"
    write_jsonl(data / "chats.jsonl", chat_rows(2, 3))
    mapping = load_mapping(sample_mapping_at(tmp_path, data))
    assert run(mapping, run_config).counts.delivered == 6
    sent = stats(dev_server.url)["add_requests"]
    first_name = run_config.target.ledger_name

    run_config.target.base_url = dev_server.url + "/"  # the same URL spelled another way: same name
    (data / "chats.jsonl").touch()
    same = run(mapping, run_config)
    assert same.status == "completed" and same.counts.already_delivered == 6 and same.counts.requests == 0
    run_config.target.base_url = dev_server.url.replace("127.0.0.1", "localhost")  # another route, same server
    with pytest.raises(TargetIdentityError) as err:
        run(mapping, run_config)
    assert first_name in str(err.value) and "--new-target" in str(err.value) and "target.name" in str(err.value)
    assert err.value.report.counts.requests == 0
    assert stats(dev_server.url)["add_requests"] == sent

    (data / "chats.jsonl").touch()  # read again, so the ledger is asked about every message
    run_config.target.name = first_name  # pinned: it is the same MemOS
    pinned = run(mapping, run_config)
    assert pinned.status == "completed" and pinned.counts.requests == 0
    assert stats(dev_server.url)["add_requests"] == sent
    assert sum(len(v) for v in stored_messages(dev_server.url).values()) == 6


def test_reconcile_finds_a_hard_deleted_sql_row_the_cursor_cannot_see(dev_server, run_config, tmp_path, pg_ledger_url):
    from typer.testing import CliRunner

    from memos_etl.cli import app
    from tests.test_sources import create_table, insert, mapping_file, sql_rows, sql_source

    eng, t = create_table(pg_ledger_url)
    insert(eng, t, sql_rows(3, 4))
    mapping = mapping_file(tmp_path, sql_source(pg_ledger_url, lag=0))
    run_config.state.ledger_url = pg_ledger_url
    assert run(mapping, run_config).counts.delivered == 12
    with eng.begin() as c:  # hard delete, far below the cursor
        c.execute(t.delete().where(t.c.message_id == "c1-2"))
    nightly = run(mapping, run_config)
    assert nightly.counts.gone_from_source == 0 and nightly.counts.deleted_in_source == 0  # invisible to a cursor

    cfg = tmp_path / "memos-etl.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "sources": {"chats": str(tmp_path / "m.yaml")},
                "target": {"base_url": dev_server.url},
                "state": {"work_dir": run_config.state.work_dir, "ledger_url": pg_ledger_url},
            }
        )
    )
    res = CliRunner().invoke(app, ["reconcile", "chats", "-c", str(cfg), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["deleted_in_source"] == 1 and out["keys_read"] == 11 and out["delivered"] == 12
    assert out["conversations"] == {"u1/c1": {"user_id": "u1", "conversation_id": "c1", "deleted": 1}}
    eng.dispose()


def _policy_mapping(tmp_path, data, **policy):
    path = sample_mapping_at(tmp_path, data, **policy)
    body = yaml.safe_load(path.read_text())
    body["fields"]["deleted"] = "deleted_at"
    path.write_text(yaml.safe_dump(body))
    return load_mapping(path)


def _expected(rows):
    from tests.helpers import expected_from_rows

    return expected_from_rows([r for r in rows if not r.get("deleted_at")])[0]


def test_replace_and_delete_rewrite_the_conversation_as_the_source_now_holds_it(dev_server, pg_config, tmp_path):
    data = tmp_path / "data"
    rows = chat_rows(3, 5)
    for r in rows:
        r["deleted_at"] = None
    write_jsonl(data / "a.jsonl", rows[:10])  # c0, c1
    write_jsonl(data / "b.jsonl", rows[10:])  # c2
    mapping = _policy_mapping(tmp_path, data, on_change="replace", on_delete="delete")
    assert run(mapping, pg_config).counts.delivered == 15
    assert stored_messages(dev_server.url) == _expected(rows)

    rows[2]["text"] = "edited: the third message of c0"  # c0: edited in place
    rows[6]["deleted_at"] = "2024-06-01T00:00:00Z"  # c1: soft-deleted
    grown = dict(
        rows[4], message_id="c0-6", turn=6, text="a new sixth message of c0", sent_at="2024-03-01T06:30:00+00:00"
    )
    write_jsonl(data / "a.jsonl", rows[:10] + [grown])
    kept = [r for r in rows[10:] if r["message_id"] != "c2-4"]  # c2: a message gone from its file
    write_jsonl(data / "b.jsonl", kept)
    again = run(mapping, pg_config)
    now = rows[:10] + [grown] + kept
    assert again.status == "completed", again.text()
    c = again.counts
    assert c.changed_after_delivery == 1 and c.deleted_in_source == 1 and c.gone_from_source == 1
    assert c.held_for_rewrite == 1  # c0's new message waits for c0's rewrite and goes with it
    assert again.rewrite["conversations"] == 3 and again.rewrite["status"] == "completed"
    assert again.rewrite["resent"] == 6 + 4 + 4
    # the server's copy of every conversation is the source as it now is, in order, with the
    # original chat_times; nothing twice
    assert stored_messages(dev_server.url) == _expected(now)

    sent = stats(dev_server.url)["add_requests"]
    for f in ("a.jsonl", "b.jsonl"):
        (data / f).touch()
    quiet = run(mapping, pg_config)
    assert quiet.counts.requests == 0 and quiet.rewrite is None
    assert stats(dev_server.url)["add_requests"] == sent
