"""Dynamic task mapping or one task per run: what a mapped task instance costs real Airflow,
against the work a run does per conversation bucket.

Run it in the Airflow environment (docs/airflow.md), from the project's root:

    UV_PROJECT_ENVIRONMENT=.venv-airflow uv sync --frozen --no-default-groups --group airflow
    .venv-airflow/bin/python -m benchmarks.airflow_bench            # about 3-5 minutes on 2 cores

Airflow's side: a DAG whose one task (a no-op) is mapped over N items, N = 1, 16, 64, run by
`airflow dags test` twice: in-process (each task instance run inside the command, the cheapest
Airflow gets) and with `--use-executor` (the LocalExecutor and an `airflow api-server`: each
task instance a process of its own, as under a scheduler). The DAG file imports flows.airflow,
so a task process parses what a memos-etl DAG file costs. The cost of one task instance is the
slope of the DAG run's duration (from the metadata database) over N, which leaves out what a
run costs once (the command's start, the DAG file's parse, the run's own records).

Our side: one run of the bundled sample (6,474 messages, 2 files, 16 buckets) by the runner
into the dev-server (its own process), twice: at MemOS Cloud's published rate (40 requests a
second, the default `load` settings) and unthrottled (the runner's own work only). A bucket's
time is the load phase's wall time times the buckets loaded at once, over the buckets. The
ratios: one task instance's cost over one bucket's time, and the run's task instances (one a
bucket) over the whole run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "schemas" / "mappings" / "sample.yaml"

DAG_FILE = """
import flows.airflow  # noqa: F401  (what a memos-etl DAG file imports)
from datetime import datetime, UTC
from airflow.sdk import DAG, task

@task
def noop(i):
    return None

for n in {sizes}:
    with DAG(dag_id=f"bench-mapped-{{n}}", schedule=None, start_date=datetime(2024, 1, 1, tzinfo=UTC)) as dag:
        noop.expand(i=list(range(n)))
    globals()[dag.dag_id] = dag
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def airflow_env(home: Path, api_port: int) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MEMOS_ETL_"))}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(home / "dags"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home}/airflow.db",
        AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"http://127.0.0.1:{api_port}/execution/",
        AIRFLOW__API_AUTH__JWT_SECRET="memos-etl-bench-" + os.urandom(8).hex(),
        AIRFLOW__CORE__PARALLELISM="2",  # the machine's cores: more workers only queue for them
        PYTHONPATH=str(ROOT),
    )
    return env


def airflow(env: dict, *args: str) -> float:
    """Run an airflow command; its wall time."""
    t = time.perf_counter()
    res = subprocess.run(
        [str(Path(sys.executable).parent / "airflow"), *args], env=env, capture_output=True, text=True, timeout=1800
    )
    if res.returncode:
        raise RuntimeError(f"airflow {' '.join(args)} failed:\n{res.stdout[-2000:]}{res.stderr[-2000:]}")
    return time.perf_counter() - t


def run_duration(db: Path, dag_id: str) -> tuple[float, str]:
    """The latest DAG run of `dag_id`: start to end in seconds, and its state."""
    with sqlite3.connect(db) as conn:
        start, end, state = conn.execute(
            "SELECT start_date, end_date, state FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1", (dag_id,)
        ).fetchone()
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds(), state


def slope(points: list[tuple[int, float]]) -> float:
    """Least-squares slope of seconds over N."""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    return sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x in xs)


def mapped_cost(work: Path, sizes: list[int], executor: bool) -> dict:
    """DAG runs of the mapped no-op, N = each of `sizes`; the cost of one task instance."""
    home = work / ("airflow-executor" if executor else "airflow-inprocess")
    (home / "dags").mkdir(parents=True)
    (home / "dags" / "bench.py").write_text(textwrap.dedent(DAG_FILE.format(sizes=sizes)))
    port = free_port()
    env = airflow_env(home, port)
    airflow(env, "db", "migrate")
    api = None
    if executor:
        api = subprocess.Popen(
            [str(Path(sys.executable).parent / "airflow"), "api-server", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 180
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if api.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("airflow api-server did not start") from None
                time.sleep(0.3)
    points, rows = [], []
    try:
        for n in sizes:
            args = ["dags", "test", f"bench-mapped-{n}", *(["--use-executor"] if executor else [])]
            wall = airflow(env, *args)
            run_s, state = run_duration(home / "airflow.db", f"bench-mapped-{n}")
            if state != "success":
                raise RuntimeError(f"bench-mapped-{n} ended {state}")
            points.append((n, run_s))
            rows.append({"n": n, "dag_run_s": round(run_s, 2), "command_s": round(wall, 2)})
    finally:
        if api is not None:
            api.terminate()
            try:
                api.wait(timeout=30)
            except subprocess.TimeoutExpired:
                api.kill()
                api.wait()
    return {"runs": rows, "per_task_instance_s": slope(points)}


def runner_per_bucket(work: Path, throttled: bool) -> dict:
    """One run of the bundled sample by the runner into a dev-server process."""
    from benchmarks.load_bench import Server
    from benchmarks.pipeline_bench import Phases
    from core.config import RunConfig, load_mapping
    from flows.runner import run

    cfg = RunConfig()
    cfg.state.work_dir = str(work / ("runner-throttled" if throttled else "runner-unthrottled"))
    if not throttled:
        cfg.load.requests_per_second = 0
        cfg.load.tokens_per_minute = 0
    server = Server(free_port())
    try:
        cfg.target.base_url = server.url
        phases, totals = Phases(), {}

        def progress(phase: str, done: int, total: int) -> None:
            totals[phase] = total
            phases(phase, done, total)

        t = time.perf_counter()
        report = run(load_mapping(SAMPLE), cfg, progress=progress)
        total = time.perf_counter() - t
    finally:
        server.stop()
    if report.status != "completed":
        raise RuntimeError(f"the sample's run ended {report.status}")
    load_s, buckets = phases.seconds("load"), totals.get("load", cfg.load.buckets)
    at_once = min(cfg.load.concurrency, buckets)
    return {
        "rate": f"{cfg.load.requests_per_second:g} requests/s" if throttled else "unthrottled",
        "messages": report.counts.delivered,
        "requests": report.counts.requests,
        "files": report.files,
        "buckets": buckets,
        "run_s": round(total, 2),
        "load_s": round(load_s, 2),
        "per_bucket_s": load_s * at_once / buckets,
        "per_file_s": phases.seconds("extract") / max(report.files, 1),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1,16,64", help="N of the mapped task, comma-separated")
    ap.add_argument("--no-executor", action="store_true", help="only the in-process DAG runs")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    work = Path(tempfile.mkdtemp(prefix="memos-etl-airflow-bench-"))
    try:
        out: dict = {"mapped": {}, "runner": {}}
        modes = [False] if args.no_executor else [False, True]
        for executor in modes:
            name = "executor" if executor else "in-process"
            out["mapped"][name] = mapped_cost(work, sizes, executor)
            print(f"mapped no-op, {name}: {out['mapped'][name]}", file=sys.stderr)
        for throttled in (True, False):
            r = runner_per_bucket(work, throttled)
            out["runner"][r["rate"]] = r
            print(f"runner: {r}", file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n{'Airflow: one mapped task instance':<44} {'s':>8}")
    for name, m in out["mapped"].items():
        runs = ", ".join(f"N={r['n']} {r['dag_run_s']:.1f}s" for r in m["runs"])
        print(f"  {name:<42} {m['per_task_instance_s']:>8.3f}   (DAG runs: {runs})")
    print(f"\n{'runner, the bundled sample':<44} {'s':>8}")
    for rate, r in out["runner"].items():
        print(
            f"  {rate + ': a bucket':<42} {r['per_bucket_s']:>8.3f}   (run {r['run_s']:.1f}s, load {r['load_s']:.1f}s,"
            f" {r['buckets']} buckets, {r['messages']} messages in {r['requests']} requests;"
            f" a file staged in {r['per_file_s']:.2f}s)"
        )
    print("\nratio: one task instance / one bucket's load; the run's 16 task instances / the whole run")
    for name, m in out["mapped"].items():
        for rate, r in out["runner"].items():
            per_ti = m["per_task_instance_s"]
            print(
                f"  {name:<11} vs {rate:<16} {per_ti / r['per_bucket_s']:>7.2f}x   "
                f"{per_ti * r['buckets'] / r['run_s']:>6.2f}x of the run"
            )
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
