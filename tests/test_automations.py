"""Automations as code, for real: `prefect server start`, deployments/prefect.yaml applied with
`prefect deploy` (its triggers become the server's automations), a worker; the nightly sync of
the sample run as its deployment; its `memos-etl.run.completed` event fires the verify
deployment's trigger, and the worker runs verify on that source: it completes, clean."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import ROOT
from tests.test_fleet import BIN, kill_tree, prefect_api  # noqa: F401  (the fixture)

pytestmark = pytest.mark.slow


def _runs(api: str, flow: str) -> list[dict]:
    body = {"flows": {"name": {"any_": [flow]}}}
    return requests.post(f"{api}/flow_runs/filter", json=body, timeout=30).json()


def test_a_completed_nightly_sync_triggers_verify(prefect_api, dev_server, tmp_path):  # noqa: F811
    env = {
        **prefect_api,
        "MEMOS_ETL_HOME": str(ROOT),
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_WORKER_PREFETCH_SECONDS": "1",
        # the deployments' config (deployments/memos-etl.yaml) pointed at this test's target and state
        "MEMOS_ETL__TARGET__BASE_URL": dev_server.url,
        "MEMOS_ETL__STATE__WORK_DIR": str(tmp_path / "state"),
    }
    api = env["PREFECT_API_URL"]
    prefect = str(BIN / "prefect")

    def run(*a):
        return subprocess.run([prefect, *a], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)

    assert run("work-pool", "create", "memos-etl", "--type", "process").returncode == 0
    res = run("--no-prompt", "deploy", "--all", "--prefect-file", "deployments/prefect.yaml")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    automations = requests.post(f"{api}/automations/filter", json={}, timeout=30).json()
    [auto] = [a for a in automations if "verify" in a["name"]]
    assert auto["trigger"]["expect"] == ["memos-etl.run.completed"], auto

    log = open(tmp_path / "worker.log", "w")
    worker = subprocess.Popen(
        [prefect, "worker", "start", "--pool", "memos-etl", "--name", "w1"],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        res = run("deployment", "run", "memos-etl-sync/sample-nightly")
        assert res.returncode == 0, res.stdout + res.stderr
        deadline = time.monotonic() + 420
        verify: list[dict] = []
        while time.monotonic() < deadline:
            verify = [
                r for r in _runs(api, "memos-etl-verify") if r["state_type"] in ("COMPLETED", "FAILED", "CRASHED")
            ]
            if verify:
                break
            time.sleep(1)
    finally:
        kill_tree(worker)
        log.close()
    [sync] = [r for r in _runs(api, "memos-etl-sync") if r["state_type"] != "SCHEDULED"]  # not the cron's
    assert sync["state_type"] == "COMPLETED", Path(tmp_path / "worker.log").read_text()[-4000:]
    assert verify, "no verify run after the nightly sync: " + Path(tmp_path / "worker.log").read_text()[-4000:]
    v = verify[0]
    assert v["state_type"] == "COMPLETED", Path(tmp_path / "worker.log").read_text()[-4000:]
    assert v["parameters"]["source"] == "sample" and v["parameters"]["sample"] == 50
    deadline = time.monotonic() + 30
    while True:  # the server persists events a moment after they arrive
        done = requests.post(
            f"{api}/events/filter",
            json={"filter": {"event": {"prefix": ["memos-etl.verify."]}}, "limit": 10},
            timeout=30,
        ).json()["events"]
        done = [e for e in done if e["event"] == "memos-etl.verify.completed"]
        if done or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert [e["payload"]["status"] for e in done] == ["clean"], done
