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


def wall(cmd: list[str], runs: int = 5, env: dict | None = None) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        res = subprocess.run(cmd, capture_output=True, text=True, env=env)
        times.append(time.perf_counter() - t)
        if res.returncode:
            raise RuntimeError(f"{cmd}: {res.stderr[-2000:]}")
    return statistics.median(times)


def bench(work_with_ledger: Path, demo_dir: Path) -> dict:
    cli = str(BIN / "memos-etl")
    out = {
        "python_pass_s": wall([sys.executable, "-c", "pass"]),
        "help_s": wall([cli, "--help"]),
        "status_s": wall([cli, "status", "--work-dir", str(work_with_ledger)]),
    }
    shutil.rmtree(demo_dir, ignore_errors=True)
    demo_dir.mkdir(parents=True)
    env = dict(os.environ)
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
    return out
