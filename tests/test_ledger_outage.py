"""The ledger going away mid-run: a PostgreSQL restart is ridden out (or ends the run with one
clear error and its report), a full disk under a SQLite ledger ends the run the same way, and
in both cases an immediate re-run completes with every message delivered exactly once and no
conversation left leased to the failed run."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time

import pytest

from core.config import load_mapping
from core.errors import LedgerError
from flows.runner import run
from tests.helpers import (
    chat_rows,
    expected_from_rows,
    sample_mapping_at,
    set_faults,
    stats,
    stored_messages,
    write_jsonl,
)


def _source(tmp_path, conversations=40, turns=10):
    rows = chat_rows(conversations, turns)
    write_jsonl(tmp_path / "data" / "chats.jsonl", rows)
    return load_mapping(sample_mapping_at(tmp_path, tmp_path / "data")), expected_from_rows(rows)[0]


def _slow(run_config, dev_server):
    run_config.load.max_messages_per_request = 5  # 80 requests
    run_config.load.concurrency = 2
    set_faults(dev_server.url, latency_ms=60)


def _in_thread(mapping, cfg):
    out: dict = {}

    def go():
        try:
            out["report"] = run(mapping, cfg)
        except Exception as exc:  # noqa: BLE001 - the test inspects what the run raised
            out["error"] = exc

    t = threading.Thread(target=go)
    t.start()
    return t, out


def _wait_requests(url: str, n: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while stats(url)["add_requests"] < n:
        assert time.monotonic() < deadline, "the sync did not get going"
        time.sleep(0.05)


def _rerun_is_exact(mapping, cfg, dev_server, expected):
    set_faults(dev_server.url)
    again = run(mapping, cfg)
    assert again.status == "completed", again.text()
    assert again.counts.pending == 0 and again.counts.leased_elsewhere == 0 and again.counts.in_doubt == 0
    assert stored_messages(dev_server.url) == expected  # every message once, in order
    return again


def test_postgres_restart_mid_sync_then_rerun_is_exact(pg_cluster, dev_server, run_config, tmp_path):
    mapping, expected = _source(tmp_path)
    run_config.state.ledger_url = pg_cluster.url
    _slow(run_config, dev_server)
    t, out = _in_thread(mapping, run_config)
    _wait_requests(dev_server.url, 10)
    pg_cluster.stop("immediate")  # a crash of the database server, then it comes back
    time.sleep(2)
    pg_cluster.start()
    t.join(180)
    assert not t.is_alive()
    if "error" in out:  # stopped: with the one-line ledger error and the report of what was done
        err = out["error"]
        assert isinstance(err, LedgerError), repr(err)
        assert "Nothing is lost" in str(err) and "\n" not in str(err)
        assert err.report.status == "failed"
    else:  # rode it out
        assert out["report"].status == "completed", out["report"].text()
    _rerun_is_exact(mapping, run_config, dev_server, expected)


def test_full_disk_under_sqlite_ledger_stops_cleanly_then_rerun_is_exact(dev_server, run_config, tmp_path):
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("needs root to mount a small tmpfs for the ledger")
    disk = tmp_path / "small-disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        mapping, expected = _source(tmp_path)
        run_config.state.ledger_url = f"sqlite:///{disk / 'ledger.db'}"
        _slow(run_config, dev_server)
        t, out = _in_thread(mapping, run_config)
        _wait_requests(dev_server.url, 10)
        filler = disk / "filler"
        subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=64k"], capture_output=True)  # until ENOSPC
        t.join(180)
        assert not t.is_alive()
        err = out.get("error")
        assert isinstance(err, LedgerError), repr(out)
        assert str(err).startswith(f"ledger sqlite:///{disk / 'ledger.db'}: ")
        assert "full" in str(err) and "Nothing is lost" in str(err) and "\n" not in str(err)
        assert err.report.status == "failed" and err.report.counts.delivered > 0
        filler.unlink()  # space is back
        _rerun_is_exact(mapping, run_config, dev_server, expected)
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)
