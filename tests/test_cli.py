"""The `memos-etl` command line, as a user runs it."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from memos_etl.cli import app
from tests.conftest import SAMPLE_MAPPING
from tests.helpers import stats

runner = CliRunner()


def test_sync_status_quarantine_and_search(prefect_server, dev_server, tmp_path):
    args = ["--target-url", dev_server.url, "--work-dir", str(tmp_path)]
    res = runner.invoke(app, ["sync", str(SAMPLE_MAPPING), *args])
    assert res.exit_code == 0, res.output
    assert re.search(r"^delivered +6466$", res.output, re.M) and re.search(r"^quarantined +8$", res.output, re.M)
    assert re.search(r"^read = outcomes +yes$", res.output, re.M)
    # where the rows went, as the CLI, Prefect's and Airflow's task logs print it (report.text())
    assert re.search(rf"^quarantine: {re.escape(str(tmp_path))}\S*$", res.output, re.M), res.output
    res = runner.invoke(app, ["status", "--work-dir", str(tmp_path)])
    assert res.exit_code == 0 and re.search(r"delivered +6466 messages", res.output), res.output
    assert re.search(r"files +2 done", res.output) and re.search(r"quarantined 8 rows", res.output), res.output
    res = runner.invoke(app, ["quarantine", "list", "--work-dir", str(tmp_path)])
    assert "8 quarantined rows" in res.output and "narrator" in res.output
    res = runner.invoke(app, ["search", "ana-00", "train weekdays", "--target-url", dev_server.url])
    assert res.exit_code == 0 and "7am" in res.output
    before = stats(dev_server.url)["add_requests"]
    res = runner.invoke(app, ["sync", str(SAMPLE_MAPPING), *args, "--json"])
    assert res.exit_code == 0 and '"requests": 0' in res.output
    assert stats(dev_server.url)["add_requests"] == before


def test_bad_mapping_is_a_clear_error_not_a_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    data = (SAMPLE_MAPPING.parent / "../../data/sample").resolve()
    bad.write_text(
        SAMPLE_MAPPING.read_text()
        .replace("content: text", "content: txt")
        .replace("path: ../../data/sample", f"path: {data}")
    )
    res = runner.invoke(app, ["sync", str(bad), "--work-dir", str(tmp_path), "--target-url", "http://127.0.0.1:9"])
    assert res.exit_code == 1
    assert "fields.content" in res.output and "'txt'" in res.output and "Traceback" not in res.output


def test_quick_commands_import_neither_gx_nor_prefect_nor_pandas(tmp_path, dev_server):
    """--help, status, presets, quarantine list/show/export, reset and search answer without
    importing Great Expectations, Prefect or pandas (seconds of CPU each): each runs in a new
    process that lists what it imported. The ledger and quarantine here hold a real run's state."""
    import json
    import subprocess
    import sys

    from core.config import load_mapping, load_run_config
    from flows.runner import run

    cfg = load_run_config(None)
    cfg.state.work_dir = str(tmp_path)
    cfg.target.base_url = dev_server.url
    run(load_mapping(SAMPLE_MAPPING), cfg)
    probe = (
        "import sys, json; sys.argv = ['memos-etl'] + json.loads(sys.argv[1])\n"
        "from memos_etl.cli import app\n"
        "try:\n    app()\nexcept SystemExit:\n    pass\n"
        "print('HEAVY', json.dumps(sorted(m for m in ('great_expectations', 'prefect', 'pandas') "
        "if m in sys.modules)))"
    )
    w = ["--work-dir", str(tmp_path)]
    for args in (
        ["--help"],
        ["status", *w],
        ["presets"],
        ["quarantine", "list", *w],
        ["quarantine", "show", "chats-2024-part1.jsonl", "37", *w],
        ["quarantine", "export", str(tmp_path / "q.csv"), *w],
        ["search", "ana-00", "train", "--target-url", dev_server.url],
        ["reset", "nothing-here", "--yes", *w],
    ):
        res = subprocess.run([sys.executable, "-c", probe, json.dumps(args)], capture_output=True, text=True)
        heavy = [json.loads(line[6:]) for line in res.stdout.splitlines() if line.startswith("HEAVY ")]
        assert heavy == [[]], (args, res.stdout[-1500:], res.stderr[-1500:])


def test_every_entry_point_allocates_arrow_from_the_system_pool():
    """The CLI, the Prefect flows, the runner and the benchmarks: a new process that imports
    one of them and then pyarrow allocates from the system pool (core/__init__.py, measured in
    core/memory.py), and a user's ARROW_DEFAULT_MEMORY_POOL still wins."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    for module in ("memos_etl.cli", "flows.sync", "flows.runner", "benchmarks.memory"):
        probe = f"import {module}, pyarrow as pa; print(pa.default_memory_pool().backend_name)"
        res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env)
        assert res.stdout.split()[-1:] == ["system"], (module, res.stdout[-500:], res.stderr[-1500:])
    probe = "import memos_etl.cli, pyarrow as pa; print(pa.default_memory_pool().backend_name)"
    res = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        env={**env, "ARROW_DEFAULT_MEMORY_POOL": "jemalloc"},
    )
    assert res.stdout.split()[-1:] == ["jemalloc"], res.stderr[-1500:]


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_status_reads_the_ledger_through_the_driver_as_the_ledger_class_does(store, tmp_path, dev_server, request):
    """`status` reads a current ledger with plain SQL (no SQLAlchemy import): the same overview
    and erasure log as core.ledger.Ledger, on SQLite and PostgreSQL, after a real sync and a
    forget; a ledger at an older revision is left to the full path (None here)."""
    import sqlalchemy as sa

    from core.config import load_mapping, load_run_config
    from core.ledger import Ledger
    from core.ledger import overview as status
    from core.ledger.db import HEAD
    from flows.runner import run

    assert status.HEAD == HEAD
    cfg = load_run_config(None)
    cfg.state.work_dir = str(tmp_path)
    cfg.target.base_url = dev_server.url
    if store == "postgresql":
        cfg.state.ledger_url = request.getfixturevalue("pg_ledger_url")
    run(load_mapping(SAMPLE_MAPPING), cfg)
    url = cfg.state.ledger()
    led = Ledger(url)
    try:
        led.finish_erasure(led.start_erasure("nobody", None, "t"), 0, 0)
        want = (led.source_overview(), led.erasure_log())
    finally:
        led.close()

    def norm(v):
        return (
            str(v)[:19]
            if hasattr(v, "isoformat") or (isinstance(v, str) and v[:2] == "20" and len(v) >= 19 and v[10] in " T")
            else v
        )

    def rows(x):
        return [
            {k: ({kk: norm(vv) for kk, vv in v.items()} if isinstance(v, dict) else norm(v)) for k, v in r.items()}
            for r in x
        ]

    got = status.overview(url)
    assert got is not None
    assert rows(got[0]) == rows(want[0]) and rows(got[1]) == rows(want[1])
    assert want[0] and want[0][0]["delivered"] == 6466
    eng = sa.create_engine(url)
    with eng.begin() as c:
        c.execute(sa.text("UPDATE memos_etl_ledger_version SET version_num = '0002'"))
    eng.dispose()
    assert status.overview(url) is None
