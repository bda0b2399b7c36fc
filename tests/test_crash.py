"""Crash safety with real processes: SIGKILL at random moments, SIGTERM drains."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
import yaml

from tests.conftest import ROOT
from tests.helpers import chat_rows, expected_messages, sample_mapping_at, stats, stored_messages, write_jsonl


@pytest.fixture
def job(tmp_path, dev_server):
    return make_job(tmp_path, dev_server)


def make_job(tmp_path, dev_server, kind: str = "cloud", users: int = 2, conversations: int = 80):
    """A source of 1,600 messages in 400 requests (by default), and a run config, as files for the CLI."""
    data = tmp_path / "data"
    write_jsonl(data / "a.jsonl", chat_rows(conversations=conversations, turns=20, users=users))
    mapping = sample_mapping_at(tmp_path, data)
    return (
        crash_command(tmp_path, mapping, dev_server, kind),
        expected_messages([data / "a.jsonl"])[0],
        (tmp_path / "state" / "ledger.db"),
    )


def crash_command(tmp_path, mapping, dev_server, kind: str = "cloud") -> list[str]:
    """The CLI sync of `mapping` the crash tests kill: 4 messages a request at 60 a second
    over 4 lanes (a run long enough to kill mid-send), quick timeouts and retries."""
    cfg = {
        "target": {
            "base_url": dev_server.url,
            "timeout_s": 5,
            "in_doubt_grace_s": 0.05,
            "backoff_base_s": 0.01,
            "backoff_cap_s": 0.1,
            "kind": kind,
        },
        "load": {"max_messages_per_request": 4, "requests_per_second": 60, "concurrency": 4},
        "state": {"work_dir": str(tmp_path / "state")},
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    return [
        sys.executable,
        "-m",
        "memos_etl.cli",
        "sync",
        str(mapping),
        "--config",
        str(tmp_path / "run.yaml"),
        "--no-prefect",
    ]


def kill_while_sending(cmd, dev_server, times: int = 3, after_s: float = 0.3) -> None:
    """Start `cmd` and SIGKILL it `after_s` into its sending, `times` times."""
    for _ in range(times):
        proc = start(cmd)
        before = stats(dev_server.url)["add_requests"]
        assert wait_for_sending(dev_server.url, proc, before), "the run finished before it was killed"
        time.sleep(after_s)
        assert proc.poll() is None, "the run finished before it was killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def rerun_until_exact(cmd, dev_server, want: dict, messages=stored_messages) -> None:
    """Run `cmd` again (up to 3 times, until it exits 0) after kills: the target then holds
    `want` exactly, as `messages(url)` reads it: 0 missing, 0 twice, in order."""
    for _ in range(3):
        final = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
        if final.returncode == 0:
            break
    assert final.returncode == 0, final.stdout[-3000:] + final.stderr[-3000:]
    assert messages(dev_server.url) == want  # 0 missing, 0 twice, in order
    assert stats(dev_server.url)["messages"] == sum(len(v) for v in want.values())


def start(cmd):
    return subprocess.Popen(
        cmd,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def wait_for_sending(server_url, proc, before, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if stats(server_url)["add_requests"] > before:
            return True
        time.sleep(0.02)
    return False


def test_sigkill_at_random_moments_then_rerun_loses_and_duplicates_nothing(job, dev_server):
    sigkill_then_rerun(job, dev_server)


def test_sigkill_against_self_hosted_settles_every_request_from_its_memories(tmp_path, dev_server):
    """The same chaos against the open-source server's routes: requests a killed run left
    unanswered are settled from the session's memories (info.batch_key, sources), so the
    re-runs finish with every message once, in order, and no --resend-in-doubt. (3,200
    messages of 40 users: each user's memories fit in one listing.)"""
    sigkill_then_rerun(make_job(tmp_path, dev_server, kind="self-hosted", users=40, conversations=160), dev_server)


def sigkill_then_rerun(job, dev_server):
    cmd, expected, _ = job
    rng = random.Random(int(os.environ.get("CHAOS_SEED", "20261125")))
    kills = 0
    while kills < 10:
        proc = start(cmd)
        before = stats(dev_server.url)["add_requests"]
        if rng.random() < 0.2:
            time.sleep(rng.uniform(0.5, 6.0))  # anywhere: start-up, settling, staging or sending
        else:
            wait_for_sending(dev_server.url, proc, before)
            time.sleep(rng.uniform(0.0, 0.5))
        assert proc.poll() is None, "the source is too small: the run finished before 10 kills"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
    rerun_until_done(cmd, dev_server, expected)
    assert 0 < stats(dev_server.url)["messages"] == sum(len(v) for v in expected.values())


def rerun_until_done(cmd, dev_server, expected) -> None:
    """Run `cmd` again (up to 3 times) until it completes; then the store holds every expected
    message once, in order."""
    for _ in range(3):
        final = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if final.returncode == 0:
            break
    assert final.returncode == 0, final.stdout
    assert stored_messages(dev_server.url) == expected  # 0 missing, 0 duplicated, in order


def test_sigterm_drains_and_exits_resumable(job, dev_server):
    cmd, expected, ledger = job
    proc = start(cmd)
    assert wait_for_sending(dev_server.url, proc, 0)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 3, out
    assert "interrupted" in out
    with sqlite3.connect(ledger) as db:  # in-flight requests were finished and recorded
        assert db.execute("SELECT COUNT(*) FROM batches WHERE status='sent'").fetchone()[0] == 0
        delivered = db.execute("SELECT COALESCE(SUM(n_messages), 0) FROM batches WHERE status='delivered'").fetchone()[
            0
        ]
    assert 0 < delivered < 1200
    assert sum(len(v) for v in stored_messages(dev_server.url).values()) == delivered
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert again.returncode == 0, again.stdout
    assert stored_messages(dev_server.url) == expected
