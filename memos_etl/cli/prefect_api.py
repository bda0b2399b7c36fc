"""The Prefect API server the CLI's flow runs report to.

With no API configured (no PREFECT_API_URL, no profile that sets one), Prefect starts an
ephemeral server for each command and stops it at the end: 10-20 s of a short sync's wall time
on 2 cores, spent before the first request and after the report. The CLI instead starts
Prefect's own background server once (`prefect server start --background`, bound to
127.0.0.1, its database the same PREFECT_HOME one the ephemeral server uses), says so, and
every later command reuses it while it answers. Runs, task runs and artifacts are kept there
as before, and its UI shows them. A watcher process started beside it stops it after
MEMOS_ETL_PREFECT_IDLE_MINUTES (default 60; 0: never) with no command using it and no flow run
running or pending; `prefect server stop` stops it any time.

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
_USERS = "memos-etl-api.in-use"  # flock'ed shared by each command using the server


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
    if not _wanted():
        return None
    import fcntl

    idle = idle_minutes()  # a bad value stops here, before a server is started
    home = _home()
    state = home / _STATE
    home.mkdir(parents=True, exist_ok=True)
    with open(home / f"{_STATE}.lock", "w") as lock:
        # shared: the watcher (exclusive) never stops the server between this check and the touch
        fcntl.flock(lock, fcntl.LOCK_SH)
        url = _answering(state)
        if url:
            return url
    with open(home / f"{_STATE}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two commands at once start one server
        url = _answering(state)
        if url:
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
        watcher = _watch_in_background(home, url, idle) if idle > 0 else None
        state.write_text(json.dumps({"url": url, "started": time.time(), "watcher": watcher}))
    stops = (
        f"it stops after {idle:g} minutes unused, or with `prefect server stop`"
        if idle > 0
        else "stop it with `prefect server stop`"
    )
    echo(
        f"Prefect server started in the background at {url.removesuffix('/api')} (its UI shows the runs); "
        f"later commands reuse it; {stops}."
    )
    return url


def _wanted() -> bool:
    from prefect.settings import get_current_settings

    return os.environ.get("MEMOS_ETL_PREFECT_SERVER", "shared") != "ephemeral" and not get_current_settings().api.url


def idle_minutes() -> float:
    """MEMOS_ETL_PREFECT_IDLE_MINUTES: how long the shared server may go unused (0: forever)."""
    raw = os.environ.get("MEMOS_ETL_PREFECT_IDLE_MINUTES", "60")
    try:
        value = float(raw)
    except ValueError:
        raise typer.BadParameter(f"MEMOS_ETL_PREFECT_IDLE_MINUTES must be a number of minutes, got {raw!r}") from None
    return max(value, 0.0)


def _answering(state: Path) -> str | None:
    """The recorded server's URL when it answers, its last use noted (the state file's mtime)."""
    with contextlib.suppress(OSError, ValueError, KeyError):
        url = json.loads(state.read_text())["url"]
        if _healthy(url):
            os.utime(state)
            return url
    return None


def _watch_in_background(home: Path, url: str, idle: float) -> int | None:
    try:
        with open(home / "memos-etl-api-watch.log", "a") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "memos_etl.cli.prefect_api", str(home), url, str(idle * 60)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # outlives this command, and its Ctrl-C
            )
    except OSError:
        return None
    return proc.pid


def _busy(url: str) -> bool:
    """Whether the server has flow runs running, pending or cancelling (an unreadable answer counts
    as busy: never stop a server on a guess)."""
    import urllib.request

    body = json.dumps({"flow_runs": {"state": {"type": {"any_": ["RUNNING", "PENDING", "CANCELLING"]}}}}).encode()
    req = urllib.request.Request(f"{url}/flow_runs/count", data=body, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as res:
            return int(json.loads(res.read())) > 0
    except (OSError, ValueError):
        return True


def watch(home: Path, url: str, idle_s: float) -> str:
    """The watcher's loop: returns why it ended. It stops the server (`prefect server stop`, the
    PREFECT_HOME it was started with) once the state file is `idle_s` old, no command holds the
    use lock and no flow run is running, pending or cancelling; it ends without stopping anything
    when the server is gone or is no longer the one the state file names (stopped by hand, started
    again)."""
    import fcntl

    state = home / _STATE
    poll = min(60.0, max(idle_s / 4, 0.5))
    while True:
        time.sleep(poll)
        with open(home / f"{_STATE}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                if json.loads(state.read_text())["url"] != url:
                    return "the state file names another server"
                unused = time.time() - state.stat().st_mtime
            except (OSError, ValueError, KeyError):
                return "no state file"
            if not _healthy(url, timeout=10):
                return "the server is gone"
            if unused < idle_s:
                continue
            with open(home / _USERS, "w") as users:
                try:  # a command holds it shared while it uses the server (released if it dies)
                    fcntl.flock(users, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue
                if _busy(url):  # runs of workers or other clients of this server
                    continue
                out = subprocess.run(
                    [sys.executable, "-m", "prefect", "server", "stop"],
                    env={**os.environ, "PREFECT_HOME": str(home)},
                    capture_output=True,
                    text=True,
                    timeout=120,
                )
                with contextlib.suppress(OSError):
                    state.unlink()
            return f"stopped after {unused:.0f} s unused (prefect server stop: rc {out.returncode})"


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
    """Around a command's flow runs: the shared server's URL set for them, when it applies. The
    command holds the server's use lock (shared) throughout, so the watcher never stops it under
    a command, from before the server is found or started to after the last run."""
    if not _wanted():
        yield
        return
    import fcntl

    home = _home()
    home.mkdir(parents=True, exist_ok=True)
    with open(home / _USERS, "w") as users:
        fcntl.flock(users, fcntl.LOCK_SH)
        url = shared_url(echo)
        if url is None:
            yield
            return
        from prefect.settings import PREFECT_API_URL, temporary_settings

        try:
            with temporary_settings(updates={PREFECT_API_URL: url}):
                yield
        finally:  # unused from the end of its last command, not from the start
            with contextlib.suppress(OSError):
                os.utime(home / _STATE)


if __name__ == "__main__":  # the watcher: python -m memos_etl.cli.prefect_api HOME URL IDLE_SECONDS
    why = watch(Path(sys.argv[1]), sys.argv[2], float(sys.argv[3]))
    print(time.strftime("%Y-%m-%dT%H:%M:%S"), sys.argv[2], why, flush=True)
