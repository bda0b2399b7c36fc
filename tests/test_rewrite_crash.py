"""kill -9 in the middle of a conversation rewrite (on_change: replace), then a re-run: the
target ends holding exactly the source as it now is, every message once, in order. Real
processes (the CLI), the dev-server over HTTP, a PostgreSQL ledger."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import sqlalchemy as sa
import yaml

from core.config import load_mapping, load_run_config
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


def _statuses(ledger_url: str) -> dict:
    eng = sa.create_engine(ledger_url)
    try:
        with eng.connect() as c:
            if "rewrites" not in sa.inspect(c).get_table_names():
                return {}
            return dict(c.execute(sa.text("SELECT status, COUNT(*) FROM rewrites GROUP BY status")).all())
    finally:
        eng.dispose()


def _kill_at(cmd, point: str, dev_server, ledger_url: str, conversations: int) -> None:
    """Start a sync and SIGKILL it once the rewrite reached `point`."""
    set_faults(dev_server.url, latency_ms=40)
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    sent = stats(dev_server.url)["add_requests"]
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        st = _statuses(ledger_url)
        if point == "deleting" and st.get("deleted", 0) >= conversations // 4 and st.get("planned"):
            break
        if (
            point == "resending"
            and st.get("deleted", 0) == conversations
            and stats(dev_server.url)["add_requests"] >= sent + conversations
        ):
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before the kill point: " + (proc.stdout.read() if proc.stdout else "")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    set_faults(dev_server.url)


def test_kill_during_a_replace_then_rerun_converges_exactly(dev_server, tmp_path, pg_ledger_url):
    data = tmp_path / "data"
    n = 16
    rows = chat_rows(n, 10)
    write_jsonl(data / "a.jsonl", rows)
    mapping = sample_mapping_at(tmp_path, data, on_change="replace")
    cfg = {
        "target": {
            "base_url": dev_server.url,
            "timeout_s": 5,
            "in_doubt_grace_s": 0.05,
            "backoff_base_s": 0.01,
            "backoff_cap_s": 0.1,
        },
        "load": {"max_messages_per_request": 2, "concurrency": 2},
        "state": {"work_dir": str(tmp_path / "state"), "ledger_url": pg_ledger_url},
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    cmd = [
        sys.executable,
        "-m",
        "memos_etl.cli",
        "sync",
        str(mapping),
        "--config",
        str(tmp_path / "run.yaml"),
        "--no-prefect",
    ]
    # the killed runs are processes of their own; the others run here (a process costs ~18 s
    # here just importing Great Expectations)
    config = load_run_config(tmp_path / "run.yaml")
    source = load_mapping(mapping)
    assert run(source, config).status == "completed"

    # killed while deleting memories (some conversations deleted, some not), then while
    # sending the conversations again (all deleted, some sent again): each time a re-run ends
    # with exactly the source as it now is
    for point, turn in (("deleting", 3), ("resending", 7)):
        for r in rows:  # one edit in every conversation: all of them to rewrite
            if r["turn"] == turn:
                r["text"] = f"edited turn {turn} of {r['conversation_id']}"
        write_jsonl(data / "a.jsonl", rows)
        _kill_at(cmd, point, dev_server, pg_ledger_url, n)
        assert stored_messages(dev_server.url) != expected_from_rows(rows)[0], point  # half-way
        again = run(source, config)
        assert again.status == "completed", again.text()
        assert again.rewrite and again.rewrite["status"] == "completed", point
        assert stored_messages(dev_server.url) == expected_from_rows(rows)[0], point  # exactly the new state
        assert _statuses(pg_ledger_url) == {}, point
    before = stats(dev_server.url)["add_requests"]
    (data / "a.jsonl").touch()
    quiet = run(source, config)
    assert quiet.status == "completed" and quiet.counts.requests == 0 and quiet.rewrite is None
    assert stats(dev_server.url)["add_requests"] == before
