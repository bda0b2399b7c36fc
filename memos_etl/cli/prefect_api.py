"""The Prefect API server the CLI's flow runs report to.

With no API configured (no PREFECT_API_URL, no profile that sets one), Prefect starts an
ephemeral server for each command and stops it at the end: 10-20 s of a short sync's wall time
on 2 cores, spent before the first request and after the report. The CLI instead starts
Prefect's own background server once (`prefect server start --background`, bound to
127.0.0.1, its database the same PREFECT_HOME one the ephemeral server uses), says so, and
every later command reuses it while it answers. Runs, task runs and artifacts are kept there
as before, and its UI shows them. `prefect server stop` stops it.

MEMOS_ETL_PREFECT_SERVER=ephemeral keeps Prefect's default (a server per command); a
configured API (a self-run server, Prefect Cloud, a test harness) is always used as it is.
A background server that cannot start is one line, and the command goes on ephemerally."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import typer

#: how long a starting server may take (its first start runs the database migrations)
START_TIMEOUT_S = 180.0
_STATE = "memos-etl-api.json"  # beside Prefect's own server.pid in PREFECT_HOME


def _home() -> Path:
    from prefect.settings import PREFECT_HOME

    return Path(PREFECT_HOME.value()).expanduser()


def _healthy(url: str, timeout: float = 1.0) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout) as res:
            return res.status == 200
    except OSError:
        return False


def _free_port(preferred: int = 4200) -> int:
    for port in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise OSError("no free port on 127.0.0.1")


def shared_url(echo=typer.echo) -> str | None:
    """The shared server's API URL, started when none answers; None when the run should use
    what Prefect is configured with (or its ephemeral server)."""
    from prefect.settings import get_current_settings

    if os.environ.get("MEMOS_ETL_PREFECT_SERVER", "shared") == "ephemeral" or get_current_settings().api.url:
        return None
    home = _home()
    state = home / _STATE
    with contextlib.suppress(OSError, ValueError, KeyError):
        url = json.loads(state.read_text())["url"]
        if _healthy(url):
            return url
    import fcntl

    home.mkdir(parents=True, exist_ok=True)
    with open(home / f"{_STATE}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two commands at once start one server
        with contextlib.suppress(OSError, ValueError, KeyError):
            url = json.loads(state.read_text())["url"]
            if _healthy(url):
                return url
        own = _prefect_default_url()  # a server someone started with `prefect server start` here
        if _healthy(own):
            state.write_text(json.dumps({"url": own, "started": None}))
            echo(f"Prefect server found at {own.removesuffix('/api')}: this and later commands record their runs there")
            return own
        try:
            url = _start(home)
        except OSError as exc:
            echo(f"Prefect server: {exc}; this run uses an ephemeral one (slower to start)", err=True)
            return None
        state.write_text(json.dumps({"url": url, "started": time.time()}))
    echo(
        f"Prefect server started in the background at {url.removesuffix('/api')} (its UI shows the runs); "
        "later commands reuse it. Stop it with `prefect server stop`."
    )
    return url


def _prefect_default_url() -> str:
    from prefect.settings import get_current_settings

    api = get_current_settings().server.api
    host = "127.0.0.1" if api.host in ("0.0.0.0", "::", "") else api.host
    return f"http://{host}:{api.port}/api"


def _alive(pid_file: Path) -> bool:
    try:
        os.kill(int(pid_file.read_text().strip()), 0)
    except (OSError, ValueError):
        return False
    return True


def _start(home: Path) -> str:
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    pid_file = home / "server.pid"
    if pid_file.exists() and not _alive(pid_file):  # Prefect's record of a background server that is gone
        with contextlib.suppress(OSError):
            pid_file.unlink()
    cmd = [sys.executable, "-m", "prefect", "server", "start", "--background", "--host", "127.0.0.1"]
    out = subprocess.run([*cmd, "--port", str(port)], capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        last = (out.stderr or out.stdout).strip().splitlines()
        raise OSError(f"cannot start in the background ({last[-1] if last else out.returncode})")
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if _healthy(url):
            return url
        time.sleep(0.25)
    raise OSError(f"started, but {url} did not answer within {START_TIMEOUT_S:.0f} s")


@contextlib.contextmanager
def api_server(echo=typer.echo) -> Iterator[None]:
    """Around a command's flow runs: the shared server's URL set for them, when it applies."""
    url = shared_url(echo)
    if url is None:
        yield
        return
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: url}):
        yield
