"""Backfills: killed and resumed, and racing a nightly sync over the same data. Real
processes, a real dev-server over HTTP, ledgers on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time

import sqlalchemy as sa
import yaml

from core.config import load_mapping
from flows.runner import run
from tests.conftest import ROOT
from tests.helpers import (
    chat_rows,
    expected_from_rows,
    sample_mapping_at,
    set_faults,
    stats,
    stored_messages,
    write_jsonl,
)


def _files(tmp_path, n_files=4, conversations=12, turns=16):
    rows_all = []
    for i in range(n_files):
        rows = chat_rows(conversations, turns, prefix=f"f{i}c", user=f"u{i}-")
        write_jsonl(tmp_path / "data" / f"part-{i}.jsonl", rows)
        rows_all += rows
    return rows_all


def test_backfill_killed_then_resumed_exactly(dev_server, tmp_path):
    rows = _files(tmp_path)
    want, _ = expected_from_rows(rows)
    mapping = sample_mapping_at(tmp_path, tmp_path / "data")
    set_faults(dev_server.url, latency_ms=40)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "sources": {"chats": str(mapping)},
                "target": {"base_url": dev_server.url, "name": "bf"},
                "load": {"max_messages_per_request": 4, "concurrency": 2},
                "state": {"work_dir": str(tmp_path / "state")},
            }
        )
    )
    cmd = [
        sys.executable,
        "-m",
        "memos_etl.cli",
        "backfill",
        "chats",
        "-c",
        str(cfg),
        "--by",
        "file",
        "--parallel",
        "1",
        "--no-prefect",
        "--json",
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ledger = sa.create_engine(f"sqlite:///{tmp_path / 'state' / 'ledger.db'}")
    deadline = time.monotonic() + 180
    done = 0
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with ledger.connect() as c:
                done = c.execute(sa.text("SELECT count(*) FROM backfill_parts WHERE status='done'")).scalar()
        except sa.exc.OperationalError:
            done = 0
        if done >= 1 and stats(dev_server.url)["messages"] > done * 12 * 16:  # into the next part
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the backfill finished before it could be interrupted: " + proc.communicate()[1][-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 0 < stats(dev_server.url)["messages"] < len(rows)

    set_faults(dev_server.url, latency_ms=0)
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    out = json.loads(res.stdout[res.stdout.index("{") :])
    assert out["status"] == "completed" and out["done"] == 4
    assert out["ran"] < 4  # parts done before the kill were not run again
    assert stored_messages(dev_server.url) == want  # every message once, in order
    ledger.dispose()


def test_nightly_and_backfill_at_once_on_postgres(dev_server, tmp_path, run_config, pg_ledger_url):
    from flows.backfill import backfill

    rows = _files(tmp_path, n_files=3, conversations=10, turns=12)
    want, _ = expected_from_rows(rows)
    mapping = load_mapping(sample_mapping_at(tmp_path, tmp_path / "data"))
    run_config.state.ledger_url = pg_ledger_url
    run_config.load.max_messages_per_request = 3
    set_faults(dev_server.url, latency_ms=15)
    results: dict = {}

    def nightly():
        results["nightly"] = run(mapping, run_config)

    def bf():
        results["backfill"] = backfill(
            mapping, run_config, source="chats", by="hash", buckets=4, parallel=2, in_flow=False
        )

    threads = [threading.Thread(target=nightly), threading.Thread(target=bf)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    n = results["nightly"].counts
    b = results["backfill"]["counts"]
    # what one run sent the other skipped or left pending behind a lease: never both
    assert n.delivered + b["delivered"] <= len(rows), (n, b)
    set_faults(dev_server.url, latency_ms=0)
    final = run(mapping, run_config)  # whatever was left pending behind a lease
    assert final.status == "completed"
    # the backfill's totals count what each of its attempts delivered (a part retried after it
    # found conversations leased by the nightly run delivered some messages in each attempt)
    assert n.delivered + b["delivered"] + final.counts.delivered == len(rows), (n, b, final.counts)
    assert stored_messages(dev_server.url) == want  # once each, in order


def test_part_totals_add_up_over_attempts(tmp_path):
    """A part retried after an incomplete attempt reports what both attempts delivered, once."""
    from core.ledger import Ledger
    from flows.runner.backfill import with_earlier_attempts

    led = Ledger(f"sqlite:///{tmp_path / 'l.db'}")
    led.plan_backfill("b1", "src", "tgt", [("hash:0/2", {})])
    first = {"read": 30, "delivered": 20, "pending": 10, "already_delivered": 0, "requests": 4}
    led.mark_part(
        "b1", "hash:0/2", status="incomplete", report=json.dumps(with_earlier_attempts(led, "b1", "hash:0/2", first))
    )
    second = {"read": 30, "delivered": 10, "pending": 0, "already_delivered": 20, "requests": 2}
    total = with_earlier_attempts(led, "b1", "hash:0/2", second)
    assert total["delivered"] == 30 and total["already_delivered"] == 0 and total["requests"] == 6
    assert total["read"] == total["delivered"] + total["already_delivered"] + total["pending"]
    led.close()
