"""Operations from the command line, as an operator runs them: one config file with sources
and env overrides, plan (dry run), replay, rollback, reset. Real dev-server over HTTP."""

from __future__ import annotations

import json
import re
from pathlib import Path

import requests
import yaml
from typer.testing import CliRunner

from memos_etl.cli import app
from tests.conftest import ROOT, SAMPLE_MAPPING
from tests.helpers import expected_messages, stats, stored_messages

runner = CliRunner()
DATA = sorted((ROOT / "data" / "sample").glob("*.jsonl"))


def _config(tmp_path: Path, url: str) -> Path:
    cfg = {
        "sources": {"chats": str(SAMPLE_MAPPING)},
        "target": {"base_url": url, "name": "ops-test", "backoff_base_s": 0.01, "backoff_cap_s": 0.05},
        "state": {"work_dir": str(tmp_path / "state")},
    }
    p = tmp_path / "memos-etl.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def _json(res) -> dict:
    assert res.exit_code == 0, res.output
    return json.loads(res.output[res.output.index("{") :])


def test_plan_replay_rollback_reset(dev_server, tmp_path):
    cfg = str(_config(tmp_path, dev_server.url))
    want, _ = expected_messages(DATA)
    n_want = sum(len(v) for v in want.values())

    # plan: the requests a sync would send, in a file; nothing reaches the server
    box = tmp_path / "outbox.jsonl"
    plan = _json(runner.invoke(app, ["plan", "chats", "-c", cfg, "--outbox", str(box), "--json"]))
    assert plan["status"] == "planned" and plan["counts"]["planned"] == n_want
    lines = [json.loads(x) for x in box.read_text().splitlines()]
    assert sum(len(x["body"]["messages"]) for x in lines) == n_want
    assert {x["route"] for x in lines} == {"/add/message"}
    assert stats(dev_server.url)["add_requests"] == 0

    first = _json(runner.invoke(app, ["sync", "chats", "-c", cfg, "--no-prefect", "--json"]))
    assert first["counts"]["delivered"] == n_want
    assert len(lines) == first["counts"]["requests"]  # the plan was what the sync then sent
    assert stored_messages(dev_server.url) == want
    again = _json(runner.invoke(app, ["plan", "chats", "-c", cfg, "--outbox", str(box), "--json"]))
    assert again["counts"]["planned"] == 0 and box.read_text() == ""

    # replay one user after MemOS lost them: exactly their messages again, in order
    user = "ana-00"
    requests.post(dev_server.url + "/delete/memory", json={"user_id": user}, timeout=10).raise_for_status()
    assert not any(u == user for u, _ in stored_messages(dev_server.url))
    rep = runner.invoke(app, ["replay", "chats", "--user", user, "-c", cfg, "--yes", "--json"])
    replayed = _json(rep)
    assert replayed["counts"]["delivered"] == sum(len(v) for (u, _), v in want.items() if u == user)
    assert stored_messages(dev_server.url) == want

    # rollback of the first sync: its memories go, the replayed user's stay (another run's)
    res = runner.invoke(app, ["rollback", first["run_id"], "-c", cfg, "--yes"])
    assert res.exit_code == 0, res.output
    left = stored_messages(dev_server.url)
    assert set(u for u, _ in left) == {user}
    # ... and a later sync loads the rolled-back data again, once
    after = _json(runner.invoke(app, ["sync", "chats", "-c", cfg, "--no-prefect", "--json"]))
    assert (
        after["counts"]["units_skipped"] == 0
        and after["counts"]["already_delivered"] == replayed["counts"]["delivered"]
    )
    got = stored_messages(dev_server.url)
    assert sum(len(v) for v in got.values()) == n_want
    assert {k: v for k, v in got.items() if k[0] != user} == {k: v for k, v in want.items() if k[0] != user}
    res = runner.invoke(app, ["rollback", first["run_id"], "-c", cfg, "--yes"])
    assert res.exit_code == 1 and "already rolled back" in res.output

    # reset asks first; with --yes the next sync reads every file again and sends nothing
    res = runner.invoke(app, ["reset", "chats", "-c", cfg], input="n\n")
    assert res.exit_code == 1 and "2 files recorded as done" in res.output
    assert runner.invoke(app, ["reset", "chats", "-c", cfg, "--yes"]).exit_code == 0
    final = _json(runner.invoke(app, ["sync", "chats", "-c", cfg, "--no-prefect", "--json"]))
    assert final["counts"]["units_skipped"] == 0 and final["counts"]["requests"] == 0
    status = runner.invoke(app, ["status", "-c", cfg])
    assert re.search(rf"delivered +{n_want} messages", status.output), status.output


def test_config_env_overrides_and_bad_keys(dev_server, tmp_path, monkeypatch):
    cfg = str(_config(tmp_path, "http://127.0.0.1:9"))  # nothing listens there ...
    monkeypatch.setenv("MEMOS_ETL__TARGET__BASE_URL", dev_server.url)  # ... the environment wins
    res = runner.invoke(app, ["sync", "chats", "-c", cfg, "--no-prefect", "--json"])
    assert _json(res)["status"] == "completed"
    monkeypatch.setenv("MEMOS_ETL__LOAD__CONCURENCY", "3")
    res = runner.invoke(app, ["status", "-c", cfg])
    assert res.exit_code == 1 and "load.concurency" in res.output and "MEMOS_ETL__LOAD__CONCURENCY" in res.output
    monkeypatch.delenv("MEMOS_ETL__LOAD__CONCURENCY")
    res = runner.invoke(app, ["sync", "no-such-source", "-c", cfg, "--no-prefect"])
    assert res.exit_code == 1 and "chats" in res.output and "no-such-source" in res.output


def test_rollback_on_self_hosted_removes_that_runs_memories_only(dev_server, tmp_path):
    """rollback RUN against the open-source server's routes: the run's memories are found by
    their info.run_id in the complete /product/get_memory listing and deleted by id through
    /product/delete_memory; another run's memories stay; a later sync loads the data once."""
    from tests.helpers import chat_rows, sample_mapping_at, write_jsonl

    data = tmp_path / "d"
    write_jsonl(data / "a.jsonl", chat_rows(conversations=6, turns=6, users=3))
    write_jsonl(data / "b.jsonl", chat_rows(conversations=2, turns=4, prefix="x", user="w"))
    mapping = sample_mapping_at(tmp_path, data)
    cfg = {
        "sources": {"chats": str(mapping)},
        "target": {"base_url": dev_server.url, "kind": "self-hosted", "name": "sh-ops"},
        "state": {"work_dir": str(tmp_path / "state")},
    }
    p = tmp_path / "sh.yaml"
    p.write_text(yaml.safe_dump(cfg))
    want, _ = expected_messages([data / "a.jsonl", data / "b.jsonl"])
    first = _json(runner.invoke(app, ["sync", "chats", "-c", str(p), "--no-prefect", "--json"]))
    assert first["counts"]["delivered"] == 44 and stored_messages(dev_server.url) == want
    # another run's memories in the same users' listings: loaded straight through the route
    requests.post(
        dev_server.url + "/product/add",
        json={
            "user_id": "u0",
            "session_id": "other",
            "messages": [{"role": "user", "content": "not from memos-etl"}],
            "info": {"run_id": "someone-else"},
        },
        timeout=10,
    )
    res = runner.invoke(app, ["rollback", first["run_id"], "-c", str(p), "--yes"])
    assert res.exit_code == 0, res.output
    left = stored_messages(dev_server.url)
    assert left == {("u0", "other"): [("user", "not from memos-etl", None)]}
    again = _json(runner.invoke(app, ["sync", "chats", "-c", str(p), "--no-prefect", "--json"]))
    assert again["counts"]["delivered"] == 44
    assert {k: v for k, v in stored_messages(dev_server.url).items() if k[1] != "other"} == want
