"""memos-etl's events in a real Prefect server's event feed, with the documented payloads: a
completed sync, a run stopped by the quarantine threshold, requests left in doubt, and an
erasure (ids only)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
import requests
import yaml
from typer.testing import CliRunner

from memos_etl.cli import app
from tests.helpers import SAMPLE_MAPPING

runner = CliRunner()


def feed(prefix: str, match=lambda e: True, want: int = 1, timeout: float = 30.0) -> list[dict]:
    """The server's events under `prefix` since this module started that `match`, newest first
    (the server persists them a moment later; earlier tests' events share the server)."""
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    deadline = time.monotonic() + timeout
    while True:
        body = {
            "filter": {"occurred": {"since": STARTED.isoformat()}, "event": {"prefix": [prefix]}, "order": "DESC"},
            "limit": 50,
        }
        res = requests.post(f"{url}/events/filter", json=body, timeout=30)
        res.raise_for_status()
        events = [e for e in res.json()["events"] if match(e)]
        if len(events) >= want or time.monotonic() > deadline:
            return events
        time.sleep(0.5)


STARTED = datetime.now(UTC) - timedelta(seconds=5)


def test_a_sync_then_a_quarantine_stop_then_an_erasure(prefect_server, dev_server, run_config, tmp_path):
    from flows.sync import run_sync

    cfg = run_config
    report = run_sync(str(SAMPLE_MAPPING), cfg)
    source, target = report["source"], report["target"]
    done = feed("memos-etl.run.completed", lambda e: e["payload"]["run_id"] == report["run_id"])
    assert len(done) == 1, done
    e = done[0]
    assert e["resource"]["prefect.resource.id"] == f"memos-etl.source.{source}"
    assert e["resource"]["memos-etl.target"] == target
    roles = {r["prefect.resource.role"]: r["prefect.resource.id"] for r in e["related"]}
    assert roles["target"] == f"memos-etl.target.{target}"
    assert roles["flow-run"].startswith("prefect.flow-run.") and roles["flow"].startswith("prefect.flow.")
    counts = e["payload"]["counts"]
    assert counts["delivered"] == report["counts"]["delivered"] > 0
    assert counts["quarantined"] == report["counts"]["quarantined"] == 8
    assert e["payload"]["status"] == "completed" and e["payload"]["quarantine_reasons"]

    # the same source with a threshold its 8 bad rows exceed: the run fails, nothing is sent
    cfg.load.max_failed_share = 0.0001
    cfg.state.work_dir = str(tmp_path / "strict")
    before = datetime.now(UTC)
    with pytest.raises(Exception, match="failed validation"):
        run_sync(str(SAMPLE_MAPPING), cfg)
    over = feed("memos-etl.quarantine.over-threshold", lambda e: datetime.fromisoformat(e["occurred"]) >= before)
    assert len(over) == 1, over
    p = over[0]["payload"]
    assert (p["failed"], p["max_failed_share"]) == (8, 0.0001) and p["read"] > 6000
    assert p["see"] == f"memos-etl quarantine list --source {source}"
    failed = feed("memos-etl.run.failed", lambda e: e["payload"]["run_id"] == p["run_id"])
    assert len(failed) == 1, failed
    assert "failed validation" in failed[0]["payload"]["error"]

    # an erasure from the command line: its ids in the feed, no content
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text(
        yaml.safe_dump({"target": {"base_url": dev_server.url}, "state": {"work_dir": str(tmp_path / "state")}})
    )
    user = next(iter({k[0] for k in _users(dev_server.url)}))
    res = runner.invoke(app, ["erase", "--user", user, "-c", str(cfg_file), "--yes"])
    assert res.exit_code == 0, res.output
    erased = feed("memos-etl.erasure.done", lambda e: e["payload"]["user_id"] == user)
    assert len(erased) == 1, erased
    p = erased[0]["payload"]
    assert p["user_id"] == user and p["complete"] is True and p["messages_forgotten"] > 0 and p["erasure_id"]
    assert erased[0]["resource"]["prefect.resource.id"] == f"memos-etl.target.{target}"
    assert "content" not in str(p) and "text" not in p


def _users(url: str) -> set:
    return {(m["user_id"],) for m in requests.get(url + "/_dev/messages", timeout=30).json()}


def test_in_doubt_and_rewrite_events_carry_their_counts(prefect_server):
    """The report of a run that left requests in doubt and rewrote conversations: its events
    (emitted as a flow's publish emits them) in the feed with their payloads."""
    from prefect.events.worker import EventsWorker

    from core.report import RunReport
    from flows.events import run_events

    report = RunReport(run_id="r-doubt-1", source="doubtful", target="t1", status="incomplete")
    report.counts.in_doubt = 3
    report.rewrite = {"conversations": 2, "memories_deleted": 7, "resent": 9, "status": "completed", "run_id": "rw-1"}
    names = run_events(report)
    assert names == ["memos-etl.run.incomplete", "memos-etl.requests.in-doubt", "memos-etl.conversations.rewritten"]
    EventsWorker.drain_all(timeout=10)
    doubt = feed("memos-etl.requests.in-doubt", lambda e: e["payload"]["run_id"] == "r-doubt-1")
    assert doubt and doubt[0]["payload"]["in_doubt"] == 3 and "--resend-in-doubt" in doubt[0]["payload"]["resolve"]
    assert doubt[0]["resource"]["prefect.resource.id"] == "memos-etl.source.doubtful"
    rewritten = feed("memos-etl.conversations.rewritten", lambda e: e["payload"]["run_id"] == "r-doubt-1")
    assert rewritten and rewritten[0]["payload"]["memories_deleted"] == 7, rewritten
    assert rewritten[0]["payload"]["rewrite_run_id"] == "rw-1"
    incomplete = feed("memos-etl.run.incomplete", lambda e: e["payload"]["run_id"] == "r-doubt-1")
    assert incomplete and incomplete[0]["payload"]["counts"]["in_doubt"] == 3, incomplete


def test_a_backfill_emits_its_parts_and_its_whole(prefect_server, dev_server, tmp_path):
    import json as _json

    from tests.helpers import chat_rows, sample_mapping_at, write_jsonl

    write_jsonl(tmp_path / "data" / "a.jsonl", chat_rows(2, 3, prefix="a"))
    write_jsonl(tmp_path / "data" / "b.jsonl", chat_rows(2, 3, prefix="b"))
    mapping = sample_mapping_at(tmp_path, tmp_path / "data")
    args = ["--target-url", dev_server.url, "--work-dir", str(tmp_path / "work"), "--json"]
    res = runner.invoke(app, ["backfill", str(mapping), "--by", "file", *args])
    assert res.exit_code == 0, res.output
    out = _json.loads(res.output[res.output.index("{") :])
    whole = feed("memos-etl.backfill.completed", lambda e: e["payload"]["backfill_id"] == out["backfill_id"])
    assert len(whole) == 1, whole
    p = whole[0]["payload"]
    assert (p["parts"], p["done"], p["counts"]["delivered"]) == (2, 2, 12) and p["config_source"] == str(mapping)
