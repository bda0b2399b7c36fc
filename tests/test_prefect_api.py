"""The CLI's shared Prefect server: with no API configured, the first sync starts Prefect's
background server (and says so), the next reuses it; both runs, their task runs and their
artifacts are recorded there. `prefect server stop` ends it."""

from __future__ import annotations

import os
import subprocess
import sys

import requests

from tests.helpers import chat_rows, sample_mapping_at, write_jsonl


def test_the_first_sync_starts_a_server_the_next_reuses_it(tmp_path, dev_server):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API") and k != "MEMOS_ETL_PREFECT_SERVER"}
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")
    env["PREFECT_SERVER_UI_ENABLED"] = "false"
    # a port of its own: a server the demo left on Prefect's default 4200 would be found and reused
    from memos_etl.devserver import free_port

    env["PREFECT_SERVER_API_PORT"] = str(free_port())
    write_jsonl(tmp_path / "data" / "a.jsonl", chat_rows(3, 4))
    mapping = sample_mapping_at(tmp_path, tmp_path / "data")
    cmd = [sys.executable, "-m", "memos_etl.cli", "sync", str(mapping), "--target-url", dev_server.url]
    try:
        outs = []
        for _ in range(2):
            out = subprocess.run(
                [*cmd, "--work-dir", str(tmp_path / "work")], env=env, capture_output=True, text=True, timeout=600
            )
            assert out.returncode == 0, out.stdout + out.stderr
            outs.append(out.stdout)
        assert "Prefect server started in the background at http://127.0.0.1:" in outs[0], outs[0]
        assert "Prefect server started" not in outs[1], outs[1]
        import json

        url = json.loads((tmp_path / "prefect-home" / "memos-etl-api.json").read_text())["url"]
        runs = requests.post(f"{url}/flow_runs/filter", json={}, timeout=30).json()
        assert sorted(r["state_type"] for r in runs) == ["COMPLETED", "COMPLETED"], runs
        tasks = requests.post(f"{url}/task_runs/filter", json={}, timeout=30).json()
        assert {t["flow_run_id"] for t in tasks} == {r["id"] for r in runs}
        keys = {a["key"] for a in requests.post(f"{url}/artifacts/filter", json={}, timeout=30).json()}
        assert {"sync-sample-chats", "sync-sample-chats-table"} <= keys, keys  # the mapping's source name
    finally:
        subprocess.run(
            [sys.executable, "-m", "prefect", "server", "stop"], env=env, capture_output=True, text=True, timeout=120
        )
