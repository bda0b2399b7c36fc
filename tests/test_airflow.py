"""memos-etl on real Airflow 3, in its own environment without Prefect (issue 41).

The module sets that environment up with uv (the lock's `airflow` group, `--no-default-groups`:
no Prefect, no dev tools; a few seconds from uv's cache) and drives it in subprocesses, as
tests/test_memos_real.py does the MemOS server's: `deployments/airflow/dag-test.sh` (one
`airflow dags test`), Airflow's own `airflow backfill create`, `airflow tasks test`, and
`airflow dags test --use-executor` with an `airflow api-server` (each task a process of its own,
as under a scheduler: the one a test kills). Airflow's metadata database is SQLite in a
throwaway AIRFLOW_HOME (asset events and task tries are read from it); the target is our
dev-server. When the
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
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from core.config import RunConfig, load_run_config
from core.config.run import normalise_url
from core.errors import ConfigError
from core.ledger import Ledger
from tests.helpers import (
    SAMPLE_MAPPING,
    chat_rows,
    expected_from_rows,
    expected_messages,
    sample_mapping_at,
    stats,
    stored_messages,
    write_jsonl,
)

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
    # schedules: dags()'s argument, else the run config's `schedules:`, else the default nightly
    config = tmp_path / "run.yaml"
    run = {"sources": {"sample": str(SAMPLE_MAPPING)}, "schedules": {"sample": "0 4 * * *"}}
    config.write_text(yaml.safe_dump(run))
    probe = textwrap.dedent(
        f"""
        from flows.airflow import NIGHTLY, dags
        def cron(*args, **kw):
            return getattr(dags(*args, **kw)["memos-etl-sample-chats"].timetable, "expression", None)
        c = {str(config)!r}
        print(cron(c), cron(c, schedules={{"sample-chats": "5 1 * * *"}}), cron(c, schedules={{"sample": None}}))
        print(cron(sources=[{str(SAMPLE_MAPPING)!r}]) == NIGHTLY)
        """
    )
    res = subprocess.run([str(venv / "bin" / "python"), "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.split("\n")[:2] == ["0 4 * * * 5 1 * * * None", "True"], res.stdout
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
    # the schedule from the run config's `schedules:` (midnight: a day an interval), by source name
    run = {"sources": {"daily": str(mapping)}, "schedules": {"daily-chats": "0 0 * * *"}}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(run))
    env = _airflow_home(
        tmp_path,
        env,
        f"""
        from flows.airflow import dags
        globals().update(dags({str(tmp_path / "run.yaml")!r}, sources=[{str(mapping)!r}],
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
    # an asset event per run, each with its interval and its counts (a day: 3 conversations of 3)
    events = _asset_events(env)
    assert [uri for uri, _ in events] == ["memos-etl://memos_default/daily-chats"] * 3, events
    assert sorted((e["slice"]["since"][:10], e["slice"]["until"][:10]) for _, e in events) == list(
        zip(DAYS[:3], DAYS[1:4], strict=True)
    ), events
    assert [e["counts"]["delivered"] for _, e in events] == [9, 9, 9], events
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


def test_a_schedule_that_is_not_a_cron_is_a_config_error(tmp_path):
    """The run config's `schedules:` (read by dags()) is checked when the file is read, in
    either environment: five cron fields or an @preset, None for no schedule."""
    good = tmp_path / "good.yaml"
    sources = {"sample": str(SAMPLE_MAPPING), "other": str(SAMPLE_MAPPING), "off": str(SAMPLE_MAPPING)}
    good.write_text(
        yaml.safe_dump({"sources": sources, "schedules": {"sample": "0 4 * * *", "other": "@daily", "off": None}})
    )
    assert load_run_config(good, environ={}).schedules == {"sample": "0 4 * * *", "other": "@daily", "off": None}
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"sources": sources, "schedules": {"sample": "nightly at 2"}}))
    with pytest.raises(ConfigError, match="not a cron of five fields"):
        load_run_config(bad, environ={})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _task_processes(root: int) -> list[int]:
    """The processes under `root` that run a task: Airflow's task runner titles itself
    `airflow worker -- <task instance id>` (its LocalExecutor worker and supervisor parent
    `airflow worker -- LocalExecutor: ...`)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            pid, rest = stat.read_text().split(" ", 1)
            children.setdefault(int(rest.rsplit(")", 1)[1].split()[1]), []).append(int(pid))
        except (OSError, IndexError, ValueError):
            continue
    out, todo = [], [root]
    while todo:
        for pid in children.get(todo.pop(), []):
            todo.append(pid)
            try:
                title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
            except OSError:
                continue
            if title.startswith("airflow worker -- ") and "LocalExecutor" not in title:
                out.append(pid)
    return out


def _asset_events(home_env: dict) -> list[tuple[str, dict]]:
    """(asset uri, extra) of every asset event in the metadata database, oldest first."""
    db = home_env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].removeprefix("sqlite:///")
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT a.uri, e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id ORDER BY e.id"
        ).fetchall()
    return [(uri, json.loads(extra) if isinstance(extra, str) else extra) for uri, extra in rows]


def test_a_task_killed_mid_send_is_retried_by_airflow_and_ends_exact(airflow_env, dev_server, tmp_path):
    """Real Airflow runs the task in its own process: `airflow dags test --use-executor` hands it
    to the LocalExecutor, whose supervisor forks the task runner and reports to the API server
    (started here) as a scheduler's worker would. That task process is SIGKILLed while it sends;
    the supervisor reports the try failed, Airflow marks it up_for_retry, and the retry (try 2,
    a new process) finishes the run from the ledger: every message once, in order, and one asset
    event (the successful try's) on memos-etl://memos_default/<source> with its counts."""
    venv, env = airflow_env
    data = tmp_path / "data"
    write_jsonl(data / "a.jsonl", chat_rows(conversations=60, turns=20))
    mapping = sample_mapping_at(tmp_path, data, source={"format": "jsonl", "name": "killed-chats", "path": str(data)})
    run = {  # 4 messages a request at 60 a second: a run long enough to kill mid-send
        "target": {"timeout_s": 5, "in_doubt_grace_s": 0.05, "backoff_base_s": 0.01, "backoff_cap_s": 0.1},
        "load": {"max_messages_per_request": 4, "requests_per_second": 60, "concurrency": 4},
        "state": {"work_dir": str(tmp_path / "state")},
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(run))
    env = _airflow_home(
        tmp_path,
        env,
        f"""
        from datetime import timedelta
        from flows.airflow import dags
        globals().update(dags({str(tmp_path / "run.yaml")!r}, sources=[{str(mapping)!r}], default_schedule=None,
                              retries=1, retry_delay=timedelta(seconds=1)))
        """,
    )
    port = _free_port()
    env.update(
        AIRFLOW_CONN_MEMOS_DEFAULT=json.dumps({"conn_type": "http", "host": dev_server.url}),
        AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"http://127.0.0.1:{port}/execution/",
        AIRFLOW__API_AUTH__JWT_SECRET="memos-etl-test-" + os.urandom(8).hex(),
        AIRFLOW__CORE__PARALLELISM="1",  # one LocalExecutor worker process, not 32
    )
    _airflow(venv, env, "db", "migrate")
    log = tmp_path / "airflow.log"
    with open(tmp_path / "api-server.log", "w") as api_log:
        api = subprocess.Popen(
            [str(venv / "bin" / "airflow"), "api-server", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=api_log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and api.poll() is None:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                time.sleep(0.3)
        assert api.poll() is None and time.monotonic() < deadline, (tmp_path / "api-server.log").read_text()[-3000:]
        with open(log, "w") as out:
            run_proc = subprocess.Popen(
                [str(venv / "bin" / "airflow"), "dags", "test", "memos-etl-killed-chats", "--use-executor"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            deadline = time.monotonic() + 240
            while stats(dev_server.url)["add_requests"] == 0 and run_proc.poll() is None:
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.05)
            time.sleep(0.3)
            tasks = _task_processes(run_proc.pid)
            assert len(tasks) == 1, (tasks, log.read_text()[-3000:])
            os.kill(tasks[0], signal.SIGKILL)
            at_kill = stats(dev_server.url)["messages"]
            run_proc.wait(timeout=300)
        finally:
            if run_proc.poll() is None:
                run_proc.kill()
                run_proc.wait()
    finally:
        api.terminate()
        try:
            api.wait(timeout=30)
        except subprocess.TimeoutExpired:
            api.kill()
            api.wait()
    text = log.read_text()
    assert run_proc.returncode == 0, text[-3000:]
    expected = expected_messages([data / "a.jsonl"])[0]
    n = sum(len(v) for v in expected.values())
    assert 0 < at_kill < n, "the first try was not killed mid-send"
    # Airflow saw the kill and retried: the supervisor's verdict, then the second try's success
    assert re.search(r"exit_code=<Negsignal.SIGKILL: -9> final_state=up_for_retry", text), text[-3000:]
    db = env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].removeprefix("sqlite:///")
    with sqlite3.connect(db) as conn:
        tries = conn.execute("SELECT try_number, state FROM task_instance WHERE task_id = 'sync'").fetchall()
        history = conn.execute("SELECT try_number, state FROM task_instance_history WHERE task_id = 'sync'").fetchall()
    assert tries == [(2, "success")] and history == [(1, "failed")], (tries, history)  # try 1 archived
    assert stored_messages(dev_server.url) == expected  # 0 missing, 0 duplicated, in order
    events = _asset_events(env)
    assert [uri for uri, _ in events] == ["memos-etl://memos_default/killed-chats"], events
    extra = events[0][1]
    assert extra["status"] == "completed" and extra["target"] == normalise_url(dev_server.url)
    assert extra["counts"]["read"] == n and 0 < extra["counts"]["delivered"] < n, extra


def test_s3_and_sql_sources_read_through_airflow_connections(
    airflow_env, dev_server, tmp_path, s3_endpoint, pg_ledger_url
):
    """A DAG of one's own with two MemosSyncOperator tasks, run by `airflow dags test`: an S3
    source whose mapping names no endpoint and whose process has no AWS keys (the `aws`
    connection gives both), and a PostgreSQL source whose mapping names a variable that is not
    set (the `postgres` connection gives the URL). Both load exactly."""
    import boto3
    import pyarrow as pa
    import pyarrow.parquet as pq
    import sqlalchemy as sa

    venv, env = airflow_env
    s3_rows, pg_rows = chat_rows(conversations=4, turns=5, prefix="s"), chat_rows(conversations=3, turns=4, prefix="q")
    bucket = f"chats-{os.urandom(4).hex()}"
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    client.create_bucket(Bucket=bucket)
    client.put_object(Bucket=bucket, Key="raw/part-0.parquet", Body=_parquet(pa, pq, s3_rows))
    eng = sa.create_engine(pg_ledger_url)
    with eng.begin() as c:
        c.execute(
            sa.text(
                'CREATE TABLE chat_messages (id serial PRIMARY KEY, message_id text, "user" text, conversation_id text,'
                " session int, turn int, speaker text, text text, sent_at timestamptz, image_caption text,"
                " updated_at timestamptz DEFAULT now())"
            )
        )
        c.execute(
            sa.text(
                'INSERT INTO chat_messages (message_id, "user", conversation_id, session, turn, speaker, text, sent_at)'
                " VALUES (:message_id, :user, :conversation_id, :session, :turn, :speaker, :text, :sent_at)"
            ),
            pg_rows,
        )
    eng.dispose()
    body = yaml.safe_load(SAMPLE_MAPPING.read_text())
    s3_mapping, pg_mapping = tmp_path / "s3.yaml", tmp_path / "pg.yaml"
    s3_mapping.write_text(
        yaml.safe_dump(
            {
                **body,
                "source": {
                    "name": "s3-chats",
                    "type": "s3",
                    "format": "parquet",
                    "s3": {"bucket": bucket, "prefix": "raw/"},
                },
            }
        )
    )
    sql = {
        "url_env": "MEMOS_ETL_TEST_UNSET_URL",
        "table": "chat_messages",
        "cursor_column": "updated_at",
        "key_column": "id",
    }
    pg_mapping.write_text(yaml.safe_dump({**body, "source": {"name": "pg-chats", "type": "sql", "sql": sql}}))
    env = _airflow_home(
        tmp_path,
        env,
        f"""
        from datetime import datetime, UTC
        from airflow.sdk import DAG
        from flows.airflow import MemosSyncOperator
        with DAG("my-chats", schedule=None, start_date=datetime(2024, 1, 1, tzinfo=UTC)):
            for name, path, conn in (("s3", {str(s3_mapping)!r}, "chats_s3"), ("pg", {str(pg_mapping)!r}, "chats_pg")):
                MemosSyncOperator(task_id=name, source=path, source_conn_id=conn, work_dir={str(tmp_path / "state")!r})
        """,
    )
    env = {k: v for k, v in env.items() if not k.startswith("AWS_")}
    env.update(AWS_CONFIG_FILE="/dev/null", AWS_SHARED_CREDENTIALS_FILE="/dev/null", AWS_EC2_METADATA_DISABLED="true")
    pg = sa.engine.make_url(pg_ledger_url)
    env["AIRFLOW_CONN_MEMOS_DEFAULT"] = json.dumps({"conn_type": "http", "host": dev_server.url})
    env["AIRFLOW_CONN_CHATS_S3"] = json.dumps(
        {"conn_type": "aws", "login": "testing", "password": "testing", "extra": {"endpoint_url": s3_endpoint}}
    )
    env["AIRFLOW_CONN_CHATS_PG"] = json.dumps(
        {"conn_type": "postgres", "host": pg.host, "port": pg.port, "login": pg.username, "schema": pg.database}
    )
    _airflow(venv, env, "db", "migrate")
    res = _airflow(venv, env, "dags", "test", "my-chats", check=False)
    out = res.stdout + res.stderr
    assert res.returncode == 0 and out.count("final_state=success") + out.count("new_state=success") >= 2, out[-3000:]
    assert stored_messages(dev_server.url) == expected_from_rows(s3_rows + pg_rows)[0]


def test_source_connections_make_urls_and_keys_of_their_own(airflow_env, tmp_path):
    """Without a DAG run, in the Airflow environment: a postgres connection's libpq extras reach
    the URL; a sqlite connection naming no file is one clear error; an aws connection's keys
    replace a worker's temporary credentials whole (no worker session token left beside them),
    and one without keys (role_arn only) leaves the worker's chain with a warning; a source that
    cannot be reached now is retried and any other source error fails at once."""
    venv, env = airflow_env
    body = yaml.safe_load(SAMPLE_MAPPING.read_text())
    s3_mapping = tmp_path / "s3.yaml"
    s3_mapping.write_text(
        yaml.safe_dump({**body, "source": {"name": "s3-chats", "type": "s3", "format": "jsonl", "s3": {"bucket": "b"}}})
    )
    probe = textwrap.dedent(
        f"""
        import json, logging, os
        from airflow.sdk import Connection
        from airflow.sdk.exceptions import AirflowFailException
        from sqlalchemy.engine import make_url
        from core.config import load_run_config
        from core.errors import SourceError, SourceUnavailable
        from flows.airflow import apply_source_connection, environment, fails_for_good, sql_url

        libpq = {{"sslmode": "verify-full", "sslrootcert": "/ca.pem", "sslcert": "/c.pem", "sslkey": "/k.pem",
                 "options": "-c statement_timeout=5000", "connect_timeout": 7}}
        pg = Connection(conn_id="pg", conn_type="postgres", host="db", schema="chats", login="u", password="p",
                        extra=json.dumps(libpq))
        url = make_url(sql_url(pg))
        assert dict(url.query) == {{k: str(v) for k, v in libpq.items()}}, url
        assert (url.host, url.database, url.username, url.password) == ("db", "chats", "u", "p"), url
        try:
            sql_url(Connection(conn_id="lite", conn_type="sqlite"))
            raise SystemExit("a sqlite connection without a file made a URL")
        except AirflowFailException as exc:
            assert "names no database file" in str(exc), exc
        assert sql_url(Connection(conn_id="lite", conn_type="sqlite", host="/d/chats.db")) == "sqlite:////d/chats.db"

        os.environ.update(AWS_ACCESS_KEY_ID="worker", AWS_SECRET_ACCESS_KEY="worker-secret",
                          AWS_SESSION_TOKEN="worker-token", AWS_SECURITY_TOKEN="worker-token")
        mapping = load_run_config(None, environ={{}}).mapping({str(s3_mapping)!r})
        keys = Connection(conn_id="s3", conn_type="aws", login="conn-key", password="conn-secret")
        with environment(apply_source_connection(mapping, keys)):
            assert (os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"]) == ("conn-key", "conn-secret")
            assert "AWS_SESSION_TOKEN" not in os.environ and "AWS_SECURITY_TOKEN" not in os.environ
        assert os.environ["AWS_SESSION_TOKEN"] == "worker-token" and os.environ["AWS_ACCESS_KEY_ID"] == "worker"
        token = Connection(conn_id="s3", conn_type="aws", login="k", password="s",
                           extra=json.dumps({{"aws_session_token": "conn-token"}}))
        with environment(apply_source_connection(mapping, token)):
            assert os.environ["AWS_SESSION_TOKEN"] == "conn-token" == os.environ["AWS_SECURITY_TOKEN"]
        warned = []
        logging.getLogger("memos_etl").addHandler(logging.Handler())
        logging.getLogger("memos_etl").handlers[-1].emit = lambda record: warned.append(record.getMessage())
        role = Connection(conn_id="role", conn_type="aws", extra=json.dumps({{"role_arn": "arn:aws:iam::1:role/r"}}))
        assert apply_source_connection(mapping, role) == {{}}
        assert any("gives no AWS keys" in w and "role_arn" in w for w in warned), warned

        assert not fails_for_good(SourceUnavailable("s", "where", "cannot connect"))
        assert fails_for_good(SourceError("s", "where", "no such table"))
        print("ok")
        """
    )
    res = subprocess.run([str(venv / "bin" / "python"), "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.strip().endswith("ok"), res.stdout[-3000:] + res.stderr[-3000:]


def test_a_source_that_is_down_is_retried_and_a_key_that_cannot_be_read_is_not(airflow_env, tmp_path):
    """`airflow dags test` of a DAG of two tasks: `down` reads a PostgreSQL source whose server
    is not there (its connection names a closed port): Airflow retries it (up_for_retry), it is
    not failed at once; `nokey` names a Prefect block for the API key, which the Airflow
    environment cannot read: failed at once as a config error, not retried."""
    venv, env = airflow_env
    body = yaml.safe_load(SAMPLE_MAPPING.read_text())
    sql = {"url_env": "MEMOS_ETL_TEST_UNSET_URL", "table": "t", "cursor_column": "updated_at", "key_column": "id"}
    pg_mapping = tmp_path / "pg.yaml"
    pg_mapping.write_text(yaml.safe_dump({**body, "source": {"name": "down-chats", "type": "sql", "sql": sql}}))
    mapping, _ = _source(tmp_path)
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"target": {"api_key_block": "memos-key"}}))
    env = _airflow_home(
        tmp_path,
        env,
        f"""
        from datetime import datetime, timedelta, UTC
        from airflow.sdk import DAG
        from flows.airflow import MemosSyncOperator
        with DAG("outages", schedule=None, start_date=datetime(2024, 1, 1, tzinfo=UTC)):
            MemosSyncOperator(task_id="down", source={str(pg_mapping)!r}, source_conn_id="down_pg",
                              work_dir={str(tmp_path / "state")!r}, retries=1, retry_delay=timedelta(0))
            MemosSyncOperator(task_id="nokey", source={str(mapping)!r}, config_path={str(config)!r},
                              work_dir={str(tmp_path / "state2")!r}, retries=1, retry_delay=timedelta(0))
        """,
    )
    env["AIRFLOW_CONN_MEMOS_DEFAULT"] = json.dumps({"conn_type": "http", "host": f"http://127.0.0.1:{_free_port()}"})
    env["AIRFLOW_CONN_DOWN_PG"] = json.dumps(
        {"conn_type": "postgres", "host": "127.0.0.1", "port": _free_port(), "login": "u", "schema": "d"}
    )
    _airflow(venv, env, "db", "migrate")
    res = _airflow(venv, env, "dags", "test", "outages", check=False)
    out = res.stdout + res.stderr
    assert res.returncode != 0 or "state=failed" in out, out[-3000:]
    # `down`: its first try up for retry, the retry (retries=1) failed the same way, never at once
    assert out.count("core.errors.SourceUnavailable:") == 2 and "Connection refused" in out, out[-3000:]
    assert "AirflowFailException: SourceUnavailable" not in out, out[-3000:]
    # `nokey`: one try, failed at once with the config's key and why
    assert out.count("AirflowFailException: ConfigError") == 1, out[-3000:]
    assert "target.api_key_block: Prefect Secret block 'memos-key'" in out, out[-3000:]
    assert out.count("new_state=up_for_retry") == 1 and out.count("new_state=failed") == 2, out[-3000:]


def _parquet(pa, pq, rows: list[dict]) -> bytes:
    import io

    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buf)
    return buf.getvalue()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-n", "0", "-p", "no:randomly"]))
