"""Scale-out on Prefect's own machinery, for real: `prefect server start`, a process work
pool, the deployments applied from deployments/prefect.yaml with `prefect deploy`, two
`prefect worker` processes, a backfill fanned out over them, and one worker killed (with
its flow runs) mid-backfill. The other finishes; the dev-server ends up holding every
message once, in order, and the fleet never went over the server's request rate."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from memos_etl.devserver import free_port
from tests.conftest import ROOT
from tests.helpers import (
    chat_rows,
    expected_from_rows,
    fleet_config,
    sample_mapping_at,
    set_faults,
    stats,
    stored_messages,
    write_jsonl,
)

BIN = Path(sys.executable).parent
PREFECT = str(BIN / "prefect")
pytestmark = pytest.mark.slow


def _children(pid: int) -> list[int]:
    """Every descendant of pid (from /proc), deepest last."""
    parents: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        for c in parents.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def kill_tree(proc: subprocess.Popen) -> None:
    for pid in [proc.pid] + _children(proc.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


@pytest.fixture
def prefect_api(tmp_path):
    port = free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }
    env.pop("PREFECT_API_KEY", None)
    server = subprocess.Popen(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "server.log", "w"),
        start_new_session=True,
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if requests.get(env["PREFECT_API_URL"] + "/health", timeout=2).ok:
                break
        except requests.RequestException:
            pass
        assert server.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
        time.sleep(0.5)
    else:
        pytest.fail("prefect server did not start in 180 s")
    yield env
    kill_tree(server)


def _fleet(prefect_api, dev_server, pg_ledger_url, tmp_path) -> tuple[dict, Path, list, int]:
    """Four parts of chats, the fleet's run config (a fleet rate limit the dev-server enforces)
    and the deployments of deployments/prefect.yaml applied to a process work pool: the run
    environment, the config, the messages expected and the rows written."""
    env = {
        **prefect_api,
        "MEMOS_ETL_HOME": str(ROOT),
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_WORKER_PREFETCH_SECONDS": "1",
    }
    rows = []
    for i in range(4):
        part = chat_rows(12, 16, prefix=f"w{i}c", user=f"w{i}u")
        write_jsonl(tmp_path / "data" / f"part-{i}.jsonl", part)
        rows += part
    want, _ = expected_from_rows(rows)
    mapping = sample_mapping_at(tmp_path, tmp_path / "data")
    rps = 12
    set_faults(dev_server.url, latency_ms=20, rps=rps)  # the server refuses anything faster
    backfill = {"part_ttl_s": 10, "poll_s": 1, "max_attempts": 3}
    sources = {"chats": str(mapping)}
    cfg = fleet_config(tmp_path / "fleet.yaml", sources, dev_server.url, rps, pg_ledger_url, backfill=backfill)

    run = lambda *a: subprocess.run([PREFECT, *a], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)  # noqa: E731
    res = run("work-pool", "create", "memos-etl", "--type", "process")
    assert res.returncode == 0, res.stdout + res.stderr
    res = run("--no-prompt", "deploy", "--all", "--prefect-file", "deployments/prefect.yaml")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "backfill-part" in res.stdout + res.stderr

    return env, cfg, want, len(rows)


def _backfill(env: dict, cfg: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "memos_etl.cli", "backfill", "chats", "-c", str(cfg), "--by", "file"]
    return subprocess.Popen(
        [*cmd, "--fan-out", "deployment", "--json"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _worker(env: dict, name: str, log) -> subprocess.Popen:
    return subprocess.Popen(
        [PREFECT, "worker", "start", "--pool", "memos-etl", "--name", name],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def test_backfill_over_two_workers_survives_a_killed_worker(prefect_api, dev_server, pg_ledger_url, tmp_path):
    env, cfg, want, n_rows = _fleet(prefect_api, dev_server, pg_ledger_url, tmp_path)
    logs = [open(tmp_path / f"{name}.log", "w") for name in ("w1", "w2")]
    workers = [_worker(env, name, log) for name, log in zip(("w1", "w2"), logs)]
    backfill = _backfill(env, cfg)
    try:
        # kill a worker, and its flow runs with it, once it is loading a part
        victim = None
        deadline = time.monotonic() + 240
        while victim is None and time.monotonic() < deadline:
            assert backfill.poll() is None, backfill.communicate()
            if stats(dev_server.url)["messages"] >= 60:
                for w in workers:
                    if _children(w.pid):
                        victim = w
                        break
            time.sleep(0.3)
        assert victim is not None, "no worker ever ran a part"
        kill_tree(victim)
        assert stats(dev_server.url)["messages"] < n_rows, "the backfill was over before the kill"
        out, err = backfill.communicate(timeout=420)
    finally:
        if backfill.poll() is None:
            kill_tree(backfill)
        for w in workers:
            if w.poll() is None:
                kill_tree(w)
        for log in logs:
            log.close()
    assert backfill.returncode == 0, out[-3000:] + err[-5000:]
    result = json.loads(out[out.index("{") :])
    assert result["status"] == "completed" and result["done"] == 4
    assert stored_messages(dev_server.url) == want  # every message once, in order
    s = stats(dev_server.url)
    throttled = sum(c["count"] for c in s["by_code"] if c["code"] in (40300, 40309))
    assert throttled == 0, s  # two workers together stayed under the server's limit
    assert s["add_ok"] == s["add_requests"]
    import sqlalchemy as sa

    eng = sa.create_engine(pg_ledger_url)
    with eng.connect() as c:
        attempts = c.execute(sa.text("SELECT sum(attempts) FROM backfill_parts")).scalar()
    eng.dispose()
    assert attempts > 4, "no part was taken over after the kill"  # the killed worker's part ran again


def test_a_part_whose_worker_died_before_starting_its_run_is_resubmitted(
    prefect_api, dev_server, pg_ledger_url, tmp_path
):
    """A worker that takes a flow run (Pending) and dies before starting it leaves the run
    Pending for good: Prefect has nothing that notices. The backfill waited for it forever (met
    once in CI, the worker killed while it submitted a part). Here every part's run is put in
    Pending as that worker would leave it, before any worker runs; a live worker then starts,
    the backfill resubmits each part after its TTL, and every message arrives once."""
    env, cfg, want, _ = _fleet(prefect_api, dev_server, pg_ledger_url, tmp_path)
    api = env["PREFECT_API_URL"]
    backfill = _backfill(env, cfg)
    log = open(tmp_path / "w1.log", "w")
    worker = None
    try:
        taken: set[str] = set()
        deadline = time.monotonic() + 120
        while len(taken) < 4 and time.monotonic() < deadline:
            assert backfill.poll() is None, backfill.communicate()
            runs = requests.post(f"{api}/flow_runs/filter", json={"limit": 50}, timeout=10).json()
            for r in runs:
                if r["state_type"] == "SCHEDULED" and (r.get("parameters") or {}).get("part_key"):
                    res = requests.post(
                        f"{api}/flow_runs/{r['id']}/set_state",
                        json={"state": {"type": "PENDING", "name": "Pending"}, "force": True},
                        timeout=10,
                    )
                    assert res.ok, res.text
                    taken.add(r["id"])
            time.sleep(0.2)
        assert len(taken) == 4, taken
        worker = _worker(env, "w1", log)
        out, err = backfill.communicate(timeout=240)
    finally:
        if backfill.poll() is None:
            kill_tree(backfill)
        if worker is not None and worker.poll() is None:
            kill_tree(worker)
        log.close()
    assert backfill.returncode == 0, out[-3000:] + err[-5000:]
    assert json.loads(out[out.index("{") :])["done"] == 4
    assert err.count("never started") >= 4, err[-3000:]
    assert stored_messages(dev_server.url) == want  # every message once, in order
