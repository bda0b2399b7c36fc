"""A real MemOS server on loopback, for proving memos-etl against it: set up, start, stop.

    python deployments/memos-local/stack.py setup    # its own virtualenv, pinned (requirements.txt)
    python deployments/memos-local/stack.py up       # PostgreSQL+pgvector, stand-ins, MemOS; prints its URL
    python deployments/memos-local/stack.py down

Standard library only: memos-etl's tests import it from their own environment, and it runs
under any Python 3.11. What runs, each a process of its own, logs and data in --dir
(default `.memos-local/` at the repo root):

- PostgreSQL 16 with pgvector, from the `pgserver` wheel (this machine's PostgreSQL 15 has no
  pgvector and Debian's package is not available here), as MemOS's graph store
  (GRAPH_DB_BACKEND=postgres). As root it runs as the `postgres` user, as PostgreSQL demands.
- standin.py: the embedder (all-MiniLM-L6-v2, real, 384 dimensions) and an LLM stand-in that
  is not a model (see its docstring), behind OpenAI-compatible URLs.
- serve.py: MemOS's own app (memos.api.server_api:app) with two offline work-arounds.

Nothing leaves loopback: the server is configured for local backends only, and the Hugging
Face libraries run with HF_HUB_OFFLINE=1.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
VENV = HERE / ".venv"
PY = VENV / "bin" / "python"
DEFAULT_DIR = REPO / ".memos-local"
# torch's CPU build is not on PyPI; this machine kind keeps its wheel here (the CUDA build
# from PyPI would be ~3 GB of downloads for nothing)
TORCH_WHEELS = os.environ.get("MEMOS_LOCAL_TORCH_WHEELS", "/opt/wheels")
TORCH_WHEEL = "torch-2.13.0+cpu-cp311-cp311-*.whl"
EMBED_MODEL = "all-MiniLM-L6-v2"
CHAT_MODEL = "memos-local-standin"
DATABASE = "memos"


class StackError(RuntimeError):
    pass


def _uv() -> list[str]:
    if shutil.which("uv"):
        return ["uv"]
    return [sys.executable, "-m", "uv"]


def _requirements_digest() -> str:
    import hashlib

    return hashlib.sha256((HERE / "requirements.txt").read_bytes()).hexdigest()


def is_set_up() -> bool:
    """The virtualenv exists and was synced from requirements.txt as it is now."""
    marker = VENV / ".memos-local-ok"
    return PY.exists() and marker.exists() and marker.read_text().strip() == _requirements_digest()


def setup() -> None:
    """Create deployments/memos-local/.venv with exactly requirements.txt (seconds with uv)."""
    if not glob.glob(os.path.join(TORCH_WHEELS, TORCH_WHEEL)):
        raise StackError(
            f"no {TORCH_WHEEL} in {TORCH_WHEELS}: the MemOS server's embedder needs "
            "torch's CPU build; point MEMOS_LOCAL_TORCH_WHEELS at a folder holding it"
        )
    marker = VENV / ".memos-local-ok"
    marker.unlink(missing_ok=True)
    if not PY.exists():
        subprocess.run(_uv() + ["venv", "-q", "-p", "3.11", str(VENV)], check=True)
    env = dict(os.environ, VIRTUAL_ENV=str(VENV))
    subprocess.run(
        _uv() + ["pip", "sync", "-q", str(HERE / "requirements.txt"), "--find-links", TORCH_WHEELS], check=True, env=env
    )
    marker.write_text(_requirements_digest() + "\n")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_bin() -> Path:
    found = glob.glob(str(VENV / "lib" / "python3*" / "site-packages" / "pgserver" / "pginstall" / "bin"))
    if not found:
        raise StackError("pgserver's PostgreSQL build is missing from the MemOS virtualenv: run setup")
    return Path(found[0])


def _as_pg_user() -> list[str]:
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def _start_postgres(run_dir: Path, port: int) -> None:
    bin_dir, as_user = _pg_bin(), _as_pg_user()
    pg_dir = run_dir / "pg"
    data = pg_dir / "data"
    pg_dir.mkdir(parents=True, exist_ok=True)
    if as_user:
        os.chmod(run_dir, 0o755)
        shutil.chown(pg_dir, "postgres", "postgres")
    if not (data / "PG_VERSION").exists():
        r = subprocess.run(
            as_user
            + [str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"],
            capture_output=True,
            text=True,
        )
        if r.returncode:
            hint = (
                " (as root the cluster belongs to `postgres`, which must be able to reach the folder)"
                if as_user
                else ""
            )
            raise StackError(f"initdb failed in {data}{hint}: {r.stderr.strip() or r.stdout.strip()}")
    opts = f"-p {port} -k {pg_dir} -c listen_addresses=127.0.0.1 -c fsync=off"
    r = subprocess.run(
        as_user + [str(bin_dir / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(pg_dir / "log"), "-w", "start"],
        capture_output=True,
        text=True,
    )
    if r.returncode:
        raise StackError(f"PostgreSQL did not start: {r.stderr or r.stdout} (log: {pg_dir / 'log'})")
    psql = [
        str(bin_dir / "psql"),
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        "-U",
        "postgres",
        "-v",
        "ON_ERROR_STOP=1",
        "-qAt",
    ]
    exists = subprocess.run(
        psql + ["-c", f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    if not exists:
        subprocess.run(psql + ["-c", f"CREATE DATABASE {DATABASE}"], check=True, capture_output=True)
    subprocess.run(
        psql + ["-d", DATABASE, "-c", "CREATE EXTENSION IF NOT EXISTS vector"], check=True, capture_output=True
    )


def _stop_postgres(run_dir: Path) -> None:
    data = run_dir / "pg" / "data"
    if (data / "postmaster.pid").exists():
        subprocess.run(
            _as_pg_user() + [str(_pg_bin() / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"], capture_output=True
        )


def server_env(run_dir: Path, pg_port: int, standin_url: str) -> dict[str, str]:
    """Everything MemOS 2.0.33 reads (memos/api/config.py) that differs from its defaults."""
    return {
        # graph + vector store: PostgreSQL with pgvector
        "GRAPH_DB_BACKEND": "postgres",
        "POSTGRES_HOST": "127.0.0.1",
        "POSTGRES_PORT": str(pg_port),
        "POSTGRES_USER": "postgres",
        "POSTGRES_PASSWORD": "",
        "POSTGRES_DB": DATABASE,
        "EMBEDDING_DIMENSION": "384",
        # embedder: OpenAI-style /embeddings on the stand-in
        "MOS_EMBEDDER_BACKEND": "universal_api",
        "MOS_EMBEDDER_PROVIDER": "openai",
        "MOS_EMBEDDER_API_BASE": standin_url,
        "MOS_EMBEDDER_MODEL": EMBED_MODEL,
        "MOS_EMBEDDER_API_KEY": "local",
        # default 5 s: on 2 CPU cores under a bulk load, embedding calls queue longer than that
        # and MemOS drops the memories it was extracting (the add was already answered 200)
        "MOS_EMBEDDER_TIMEOUT": "120",
        # every LLM role (chat, memory reader, scheduler, feedback) on the stand-in
        "OPENAI_API_BASE": standin_url,
        "OPENAI_API_KEY": "local",
        "MOS_CHAT_MODEL": CHAT_MODEL,
        "MEMRADER_API_BASE": standin_url,
        "MEMRADER_API_KEY": "local",
        "MEMRADER_MODEL": CHAT_MODEL,
        # reranker computed in process from the embeddings (the default calls a BGE HTTP service)
        "MOS_RERANKER_BACKEND": "cosine_local",
        "MOS_FEEDBACK_RERANKER_BACKEND": "cosine_local",
        "FILE_LOCAL_PATH": str(run_dir / "files"),  # server_api mounts it; must exist
        "ENABLE_INTERNET": "false",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }


def _wait_http(url: str, proc: subprocess.Popen, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            raise StackError(f"{url} exited with {proc.returncode} before answering; end of {log}:\n{tail}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise StackError(f"{url} did not answer within {timeout:.0f}s (log: {log})")


def _spawn(args: list[str], log: Path, env: dict, cwd: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True)


def up(run_dir: Path = DEFAULT_DIR, port: int = 0, timeout: float = 240.0) -> dict:
    """Start PostgreSQL, the stand-ins and MemOS; return the state (base_url, pids, ports)."""
    if not is_set_up():
        raise StackError(f"the MemOS virtualenv is not set up: run `python {HERE / 'stack.py'} setup`")
    run_dir = Path(run_dir).resolve()
    if (run_dir / "state.json").exists():
        down(run_dir)
    (run_dir / "files").mkdir(parents=True, exist_ok=True)
    pg_port, standin_port, port = _free_port(), _free_port(), port or _free_port()
    state = {"dir": str(run_dir), "pg_port": pg_port, "pids": {}}
    (run_dir / "state.json").write_text(json.dumps(state))
    try:
        _start_postgres(run_dir, pg_port)
        base_env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))}
        base_env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        log = run_dir / "standin.log"
        standin = _spawn([str(PY), str(HERE / "standin.py"), "--port", str(standin_port)], log, base_env, run_dir)
        state["pids"]["standin"] = standin.pid
        (run_dir / "state.json").write_text(json.dumps(state))
        _wait_http(f"http://127.0.0.1:{standin_port}/health", standin, timeout, log)
        env = dict(base_env, **server_env(run_dir, pg_port, f"http://127.0.0.1:{standin_port}/v1"))
        log = run_dir / "server.log"
        server = _spawn([str(PY), str(HERE / "serve.py"), "--port", str(port)], log, env, run_dir)
        state["pids"]["server"] = server.pid
        state["base_url"] = f"http://127.0.0.1:{port}"
        state["standin_url"] = f"http://127.0.0.1:{standin_port}/v1"
        (run_dir / "state.json").write_text(json.dumps(state))
        _wait_http(state["base_url"] + "/health", server, timeout, log)
    except BaseException:
        down(run_dir)
        raise
    return state


def down(run_dir: Path = DEFAULT_DIR, grace_s: float = 10.0) -> None:
    """Stop what `up` started: each process gets SIGTERM and `grace_s` to exit, then SIGKILL."""
    run_dir = Path(run_dir).resolve()
    path = run_dir / "state.json"
    if not path.exists():
        return
    state = json.loads(path.read_text())
    for name in ("server", "standin"):
        pid = state.get("pids", {}).get(name)
        if not pid:
            continue
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        for _ in range(max(1, int(grace_s * 10))):
            try:
                os.killpg(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    _stop_postgres(run_dir)
    path.unlink()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="A real MemOS server on loopback (see deployments/memos-local/README.md)")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("setup", help="create the MemOS virtualenv from requirements.txt")
    u = sub.add_parser("up", help="start PostgreSQL+pgvector, the stand-ins and MemOS; print the base URL")
    u.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    u.add_argument("--port", type=int, default=8010)
    d = sub.add_parser("down", help="stop everything `up` started")
    d.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    args = p.parse_args(argv)
    try:
        if args.cmd == "setup":
            setup()
            print(f"MemOS server environment ready in {VENV}")
        elif args.cmd == "up":
            t0 = time.monotonic()
            state = up(args.dir, args.port)
            print(
                f"MemOS {state['base_url']} up in {time.monotonic() - t0:.0f}s "
                f"(logs and data in {state['dir']}; stop with: python {Path(__file__).name} down)"
            )
        else:
            down(args.dir)
    except (StackError, subprocess.CalledProcessError) as e:
        print(f"memos-local: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
