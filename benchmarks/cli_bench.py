"""How soon the CLI answers: `memos-etl --help` and `memos-etl status` wall time beside
`python -c pass` (medians of several runs, each a new process), and the demo's time to its
first request (from the process starting to the first add request, from the run's report).
The console script is run from this environment's bin directory, as `uv run` would."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent
SAMPLE_MAPPING = Path(__file__).resolve().parent.parent / "schemas" / "mappings" / "sample.yaml"


def wall(cmd: list[str], runs: int = 5, env: dict | None = None) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        res = subprocess.run(cmd, capture_output=True, text=True, env=env)
        times.append(time.perf_counter() - t)
        if res.returncode:
            raise RuntimeError(f"{cmd}: {res.stderr[-2000:]}")
    return statistics.median(times)


def _sync(cli: str, url: str, work: Path, env: dict, *extra: str) -> tuple[float, float]:
    """(wall seconds, the report's own duration) of one CLI sync of the bundled sample."""
    shutil.rmtree(work, ignore_errors=True)
    t = time.perf_counter()
    res = subprocess.run(
        [cli, "sync", str(SAMPLE_MAPPING), "--target-url", url, "--work-dir", str(work), "--json", *extra],
        capture_output=True,
        text=True,
        env=env,
    )
    seconds = time.perf_counter() - t
    if res.returncode:
        raise RuntimeError(res.stdout[-2000:] + res.stderr[-2000:])
    report = json.loads(res.stdout[res.stdout.index("{") :])
    return seconds, report["duration_s"]


def sync_wall(base: Path, runs: int = 3) -> dict:
    """A CLI sync of the sample into a dev-server (a fresh state directory each time): with
    Prefect (the first run starts the shared background server, the next reuse it), and with
    --no-prefect, alternated; wall time over the report's duration."""
    from memos_etl.devserver import DevServer

    cli = str(BIN / "memos-etl")
    home = base / "prefect-home"
    shutil.rmtree(home, ignore_errors=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API") and k != "MEMOS_ETL_PREFECT_SERVER"}
    env["PREFECT_HOME"] = str(home)
    out: dict = {"prefect": [], "no_prefect": []}
    try:
        with DevServer() as server:
            out["cold"] = _sync(cli, server.url, base / "sync-wall", env)
            for _ in range(runs):
                out["prefect"].append(_sync(cli, server.url, base / "sync-wall", env))
                out["no_prefect"].append(_sync(cli, server.url, base / "sync-wall", env, "--no-prefect"))
    finally:
        subprocess.run([sys.executable, "-m", "prefect", "server", "stop"], env=env, capture_output=True)
    for k in ("prefect", "no_prefect"):
        out[f"{k}_ratio"] = statistics.median(w / d for w, d in out[k])
        out[f"{k}_wall_s"] = statistics.median(w for w, _ in out[k])
    return out


def bench(work_with_ledger: Path, demo_dir: Path) -> dict:
    cli = str(BIN / "memos-etl")
    out = {
        "python_pass_s": wall([sys.executable, "-c", "pass"]),
        "help_s": wall([cli, "--help"]),
        "status_s": wall([cli, "status", "--work-dir", str(work_with_ledger)]),
    }
    shutil.rmtree(demo_dir, ignore_errors=True)
    demo_dir.mkdir(parents=True)
    env = dict(os.environ, MEMOS_ETL_PREFECT_SERVER="ephemeral")  # the first-ever command's path
    t0 = time.time()
    res = subprocess.run(
        [cli, "demo", "--work-dir", str(demo_dir)], capture_output=True, text=True, env=env, cwd=demo_dir
    )
    out["demo_s"] = time.time() - t0
    if res.returncode:
        raise RuntimeError(res.stdout[-2000:] + res.stderr[-2000:])
    with sqlite3.connect(demo_dir / "ledger.db") as c:
        report = json.loads(c.execute("SELECT report FROM runs ORDER BY started_at LIMIT 1").fetchone()[0])
    out["demo_first_request_s"] = report["first_request_at"] - t0
    out["demo_first_request_after_run_start_s"] = report["first_request_s"]
    out["sync_wall"] = sync_wall(demo_dir.parent / "cli-sync")
    return out
