"""The CLI's shared Prefect server: with no API configured, the first sync starts Prefect's
background server (and says so), the next reuses it; both runs, their task runs and their
artifacts are recorded there. Its watcher stops it once it has gone unused for the idle time."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import requests

from tests.helpers import chat_rows, sample_mapping_at, write_jsonl


def test_the_first_sync_starts_a_server_the_next_reuses_it(tmp_path, dev_server):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API") and k != "MEMOS_ETL_PREFECT_SERVER"}
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")
    env["PREFECT_SERVER_UI_ENABLED"] = "false"
    env["MEMOS_ETL_PREFECT_IDLE_MINUTES"] = "0.25"  # the two syncs follow each other well within 15 s
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
        assert "it stops after 0.25 minutes unused" in outs[0], outs[0]

        # unused from here on: the watcher stops the server and forgets it
        state = tmp_path / "prefect-home" / "memos-etl-api.json"
        deadline = time.monotonic() + 90
        while state.exists() and time.monotonic() < deadline:
            time.sleep(1)
        log = (tmp_path / "prefect-home" / "memos-etl-api-watch.log").read_text()
        assert not state.exists(), log
        assert "stopped after" in log and "rc 0" in log, log
        with pytest.raises(requests.RequestException):
            requests.get(f"{url}/health", timeout=5)
    finally:
        subprocess.run(
            [sys.executable, "-m", "prefect", "server", "stop"], env=env, capture_output=True, text=True, timeout=120
        )


def test_the_watcher_never_stops_a_server_in_use(tmp_path):
    """`watch` against a stand-in for the server's two endpoints it reads: a command holding the
    use lock, or a flow run running on the server, keeps it up past the idle time; once neither
    is left it stops it and forgets it."""
    import fcntl
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from memos_etl.cli import prefect_api

    running = {"n": 1}

    class Api(BaseHTTPRequestHandler):
        def _answer(self, body: bytes):
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            self._answer(b'"ok"')

        def do_POST(self):
            self.rfile.read(int(self.headers["content-length"]))
            self._answer(str(running["n"]).encode())

        def log_message(self, *args):
            pass

    api = ThreadingHTTPServer(("127.0.0.1", 0), Api)
    threading.Thread(target=api.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{api.server_address[1]}/api"
    state = tmp_path / "memos-etl-api.json"
    state.write_text(json.dumps({"url": url, "started": time.time()}))
    done: list[str] = []
    user = open(tmp_path / "memos-etl-api.in-use", "w")
    fcntl.flock(user, fcntl.LOCK_SH)  # a command using the server
    watcher = threading.Thread(target=lambda: done.append(prefect_api.watch(tmp_path, url, 0.2)), daemon=True)
    try:
        watcher.start()
        time.sleep(2.0)
        assert not done and state.exists(), done  # in use: kept
        user.close()  # the command ends; a flow run is still running on the server
        time.sleep(2.0)
        assert not done and state.exists(), done
        running["n"] = 0
        watcher.join(timeout=60)
        assert done and done[0].startswith("stopped after"), done
        assert not state.exists()
    finally:
        user.close()
        api.shutdown()
