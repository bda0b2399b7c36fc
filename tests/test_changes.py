"""A source that changes after delivery: edits, soft deletes and rewritten files are noticed,
counted apart from `already delivered` and listed per conversation; nothing is resent. Over
real HTTP to the dev-server, with a real PostgreSQL ledger."""

from __future__ import annotations

import json

import pytest
import yaml

from memos_etl.config import load_mapping
from memos_etl.errors import ConfigError, TargetIdentityError
from memos_etl.pipeline import run
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
    assert c.changes == {"u0/c0": {"changed": 1}, "u1/c1": {"gone": 1}}
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
    assert c.changes == {"u0/c0": {"deleted": 1}} and c.accounted
    assert stats(dev_server.url)["add_requests"] == sent


def test_replace_and_delete_policies_are_refused_until_built(tmp_path):
    path = sample_mapping_at(tmp_path, tmp_path, on_change="replace")
    with pytest.raises(ConfigError, match="on_change: 'replace' is not available yet"):
        load_mapping(path)


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


def test_reconcile_finds_a_hard_deleted_sql_row_the_cursor_cannot_see(dev_server, run_config, tmp_path,
                                                                       pg_ledger_url):
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
    cfg.write_text(yaml.safe_dump({"sources": {"chats": str(tmp_path / "m.yaml")}, "target": {"base_url": dev_server.url},
                                   "state": {"work_dir": run_config.state.work_dir, "ledger_url": pg_ledger_url}}))
    res = CliRunner().invoke(app, ["reconcile", "chats", "-c", str(cfg), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["deleted_in_source"] == 1 and out["keys_read"] == 11 and out["delivered"] == 12
    assert out["conversations"] == {"u1/c1": {"deleted": 1}}
    eng.dispose()
