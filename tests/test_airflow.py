"""memos-etl on real Airflow 3, in its own environment without Prefect (issue 41).

The module sets that environment up with uv (the lock's `airflow` group, `--no-default-groups`:
no Prefect, no dev tools; a few seconds from uv's cache) and drives it in subprocesses, as
tests/test_memos_real.py does the MemOS server's: `deployments/airflow/dag-test.sh` (one
`airflow dags test`), Airflow's own `airflow backfill create`, `airflow tasks test`. Airflow's
metadata database is SQLite in a throwaway AIRFLOW_HOME; the target is our dev-server. When the
environment cannot be made the module skips with the reason, and MEMOS_ETL_REQUIRE_AIRFLOW=1
(set by .ci/run) turns that skip into a failure. Every Airflow process runs with a network guard
(a sitecustomize on its PYTHONPATH) that refuses and records any connection beyond loopback
(a lookup of the machine's own name, which Airflow makes for its hostname, aside).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from core.config import RunConfig
from core.config.run import normalise_url
from core.ledger import Ledger
from tests.helpers import SAMPLE_MAPPING, expected_messages, stats, stored_messages, write_jsonl

ROOT = Path(__file__).resolve().parent.parent
VENV = Path(os.environ.get("MEMOS_ETL_AIRFLOW_VENV", ROOT / ".venv-airflow"))
DAYS = ["2024-03-01", "2024-03-02", "2024-03-03", "2024-03-04"]

GUARD = """
import ipaddress, os, socket
_log = os.environ["MEMOS_ETL_NET_GUARD_LOG"]
_connect, _getaddrinfo = socket.socket.connect, socket.getaddrinfo
def _local(host):
    host = (host.decode() if isinstance(host, bytes) else str(host or "")).split("%")[0].strip("[]").lower()
    if host in ("", "localhost", "localhost.localdomain", "ip6-localhost", socket.gethostname().lower()):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
def _refuse(what, host):
    with open(_log, "a") as f:
        f.write(f"{what} {host}\\n")
    raise OSError(f"non-loopback network access refused in tests: {what} {host}")
def connect(sock, address):
    if sock.family in (socket.AF_INET, socket.AF_INET6) and not _local(address[0]):
        _refuse("connect", address[0])
    return _connect(sock, address)
def getaddrinfo(host, *a, **k):
    if not _local(host):
        _refuse("lookup", host)
    return _getaddrinfo(host, *a, **k)
socket.socket.connect, socket.getaddrinfo = connect, getaddrinfo
"""


@pytest.fixture(scope="module")
def airflow_env(tmp_path_factory):
    """The Airflow environment's directory, and the environment variables for its processes."""
    uv = shutil.which("uv")
    try:
        if uv is None:
            raise OSError("uv is not on PATH")
        res = subprocess.run(
            [uv, "sync", "--frozen", "--no-default-groups", "--group", "airflow", "--quiet"],
            cwd=ROOT,
            env={**os.environ, "UV_PROJECT_ENVIRONMENT": str(VENV)},
            capture_output=True,
            text=True,
            timeout=600,
        )
        if res.returncode:
            raise OSError(res.stderr.strip()[-2000:])
    except (OSError, subprocess.TimeoutExpired) as exc:
        reason = f"the Airflow environment cannot be set up here: {exc}"
        if os.environ.get("MEMOS_ETL_REQUIRE_AIRFLOW"):
            pytest.fail(reason)
        pytest.skip(reason)
    guard = tmp_path_factory.mktemp("airflow-guard")
    (guard / "sitecustomize.py").write_text(GUARD)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "PREFECT", "MEMOS_ETL_"))}
    env.update(
        PYTHONPATH=str(guard),
        MEMOS_ETL_NET_GUARD_LOG=str(guard / "refused.log"),
        MEMOS_ETL_AIRFLOW_VENV=str(VENV),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
    )
    yield VENV, env
    refused = guard / "refused.log"
    assert not refused.exists(), f"an Airflow process tried to reach beyond loopback: {refused.read_text()}"


def _source(tmp_path: Path) -> tuple[Path, list[Path]]:
    """A Hive-partitioned JSONL source (a day a folder, 3 conversations a day) and its mapping."""
    files = []
    for day in DAYS:
        rows = []
        for c in range(3):
            for t in range(1, 4):
                rows.append(
                    {
                        "message_id": f"{day}-c{c}-{t}",
                        "user": f"u{c % 2}",
                        "conversation_id": f"{day}-c{c}",
                        "session": 1,
                        "turn": t,
                        "speaker": "user" if t % 2 else "assistant",
                        "text": f"day {day} conversation {c} turn {t}",
                        "sent_at": f"{day}T{8 + t:02d}:00:00+00:00",
                        "image_caption": None,
                    }
                )
        f = tmp_path / "data" / f"dt={day}" / "chats.jsonl"
        write_jsonl(f, rows)
        files.append(f)
    body = yaml.safe_load(SAMPLE_MAPPING.read_text())
    body["source"]["path"] = str(tmp_path / "data")
    body["source"]["name"] = "daily-chats"
    mapping = tmp_path / "daily-chats.yaml"
    mapping.write_text(yaml.safe_dump(body))
    return mapping, files


def _dag_test(env: dict, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(ROOT / "deployments" / "airflow" / "dag-test.sh"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _count(report: str, row: str) -> int:
    m = re.search(rf"^{re.escape(row)}\s+(\d+)", report, re.M)
    assert m, report
    return int(m.group(1))


def test_the_airflow_path_imports_and_runs_without_prefect(airflow_env, dev_server, tmp_path):
    """In the Airflow environment Prefect is not installed; the DAG module, the runner, every
    source reader, the ledger and the dev-server import, and `sync --no-prefect` loads exactly."""
    venv, env = airflow_env
    probe = textwrap.dedent(
        """
        import importlib, importlib.util, pkgutil, sys
        assert importlib.util.find_spec("prefect") is None, "Prefect is installed"
        names = ["flows.airflow", "memos_etl.cli", "memos_etl.devserver"]
        for top in ("schemas", "core", "tasks", "flows.runner", "memos_etl.devserver"):
            pkg = importlib.import_module(top)
            names += [m.name for m in pkgutil.walk_packages(pkg.__path__, top + ".")]
        for name in names:  # every module of the Airflow path: each source reader, the ledger, ...
            if ".migrations." not in name:
                importlib.import_module(name)
        print(sorted(m for m in sys.modules if m == "prefect" or m.startswith("prefect.")))
        """
    )
    res = subprocess.run([str(venv / "bin" / "python"), "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.strip() == "[]"
    mapping, files = _source(tmp_path)
    cmd = [str(venv / "bin" / "memos-etl"), "sync", str(mapping), "--no-prefect", "--target-url", dev_server.url]
    res = subprocess.run(
        [*cmd, "--work-dir", str(tmp_path / "state")], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stdout + res.stderr[-3000:]
    assert stored_messages(dev_server.url) == expected_messages(files)[0]
    res = subprocess.run(cmd[:-3], cwd=tmp_path, env=env, capture_output=True, text=True)  # without --no-prefect
    assert res.returncode == 1 and "Prefect is not installed" in res.stderr and "Traceback" not in res.stderr


def test_a_dag_run_syncs_exactly_and_a_second_sends_nothing(airflow_env, dev_server, tmp_path):
    venv, env = airflow_env
    mapping, files = _source(tmp_path)
    first = _dag_test(env, str(mapping), "--target-url", dev_server.url, cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr[-3000:]
    expected, _ = expected_messages(files)
    n = sum(len(v) for v in expected.values())
    assert _count(first.stdout, "delivered") == n and "status                  completed" in first.stdout
    assert stored_messages(dev_server.url) == expected
    # state where `memos-etl sync` of that mapping keeps it: .memos-etl/ of the directory it ran in
    assert (tmp_path / ".memos-etl" / "ledger.db").exists()
    sent = stats(dev_server.url)["add_requests"]
    second = _dag_test(env, str(mapping), "--target-url", dev_server.url, cwd=tmp_path)
    assert second.returncode == 0, second.stdout + second.stderr[-3000:]
    assert _count(second.stdout, "add requests") == 0 and _count(second.stdout, "delivered") == 0
    assert stats(dev_server.url)["add_requests"] == sent
    assert stored_messages(dev_server.url) == expected


def _airflow(venv: Path, env: dict, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run([str(venv / "bin" / "airflow"), *args], env=env, capture_output=True, text=True, timeout=600)
    if check:
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res


def _airflow_home(tmp_path: Path, env: dict, dag_file: str) -> dict:
    home = tmp_path / "airflow"
    (home / "dags").mkdir(parents=True)
    (home / "dags" / "memos_etl_dags.py").write_text(textwrap.dedent(dag_file))
    return {
        **env,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
    }


def test_an_airflow_backfill_loads_its_intervals_and_leaves_the_nightly_cursor(airflow_env, dev_server, tmp_path):
    """`airflow backfill create` plans one DAG run per day of the range (run type backfill, the
    day as its data interval); each run's task is run by `airflow tasks test` in that run (the
    part a scheduler and worker would do). Exactly the messages of those days arrive; the
    source's nightly state does not move, so the next nightly reads every file (and sends only
    the day the backfill did not load)."""
    venv, env = airflow_env
    mapping, files = _source(tmp_path)
    env = _airflow_home(
        tmp_path,
        env,
        f"""
        from flows.airflow import dags
        globals().update(dags(sources=[{str(mapping)!r}], schedules={{"daily-chats": "0 0 * * *"}},
                              work_dir={str(tmp_path / "state")!r}, retries=0))
        """,
    )
    env["AIRFLOW_CONN_MEMOS_DEFAULT"] = json.dumps({"conn_type": "http", "host": dev_server.url})
    _airflow(venv, env, "db", "migrate")
    _airflow(venv, env, "dags", "reserialize")
    dag = "memos-etl-daily-chats"
    _airflow(venv, env, "backfill", "create", "--dag-id", dag, "--from-date", DAYS[0], "--to-date", DAYS[2])
    listed = _airflow(venv, env, "dags", "list-runs", dag, "--output", "json").stdout
    runs = json.loads(next(line for line in listed.splitlines() if line.startswith("[")))
    backfill_runs = sorted(r["run_id"] for r in runs if r["run_id"].startswith("backfill__"))
    assert len(backfill_runs) == 3, runs
    for run_id in backfill_runs:
        res = _airflow(venv, env, "tasks", "test", dag, "sync", run_id)
        assert "backfill of the data interval" in res.stdout + res.stderr
    expected, _ = expected_messages(files[:3])
    assert stored_messages(dev_server.url) == expected
    cfg = RunConfig()
    cfg.state.work_dir = str(tmp_path / "state")
    ledger = Ledger(cfg.state.ledger())
    try:
        assert ledger.source_state("daily-chats", normalise_url(dev_server.url))[0] is None  # no cursor moved
    finally:
        ledger.close()
    # the nightly after it: every day read, only the day the backfill did not load is sent
    nightly = subprocess.run(
        [str(venv / "bin" / "memos-etl"), "sync", str(mapping), "--no-prefect", "--target-url", dev_server.url]
        + ["--work-dir", str(tmp_path / "state")],
        env=env,
        capture_output=True,
        text=True,
    )
    assert nightly.returncode == 0, nightly.stdout + nightly.stderr[-3000:]
    day4 = sum(len(v) for v in expected_messages(files[3:])[0].values())
    assert _count(nightly.stdout, "delivered") == day4
    assert stored_messages(dev_server.url) == expected_messages(files)[0]


def test_a_missing_connection_is_one_clear_error_and_not_retried(airflow_env, tmp_path):
    venv, env = airflow_env
    mapping, _ = _source(tmp_path)
    env = _airflow_home(
        tmp_path,
        env,
        f"""
        from flows.airflow import dags
        globals().update(dags(sources=[{str(mapping)!r}], work_dir={str(tmp_path / "state")!r}, retries=3))
        """,
    )
    _airflow(venv, env, "db", "migrate")
    res = _airflow(venv, env, "dags", "test", "memos-etl-daily-chats", check=False)
    out = res.stdout + res.stderr
    assert res.returncode != 0 or "state=failed" in out or "failed" in out.lower(), out[-3000:]
    assert "Airflow connection 'memos_default' is not defined" in out, out[-3000:]
    assert "up_for_retry" not in out.lower(), out[-3000:]
    assert not (tmp_path / "state" / "ledger.db").exists()  # stopped before the run opened anything


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-n", "0", "-p", "no:randomly"]))
