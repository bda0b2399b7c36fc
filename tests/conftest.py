"""Shared real parts for the tests: a MemOS dev-server on loopback, a throwaway PostgreSQL
cluster, and one Prefect test server for the whole session."""

from __future__ import annotations

import atexit
import ipaddress
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
# CLI runs in tests use Prefect's per-command server (or the harness's): a shared background
# server (memos_etl/cli/prefect_api.py) would outlive the test; test_prefect_api.py starts one
os.environ.setdefault("MEMOS_ETL_PREFECT_SERVER", "ephemeral")
# ... and a Prefect home of the test process's own (pytest-xdist runs two): the per-command
# servers of two workers never share one SQLite database, and the user's ~/.prefect is untouched
_PREFECT_HOME = tempfile.mkdtemp(prefix="memos-etl-tests-prefect-")
os.environ["PREFECT_HOME"] = _PREFECT_HOME
atexit.register(shutil.rmtree, _PREFECT_HOME, True)

import pytest  # noqa: E402

from core.config import RunConfig  # noqa: E402
from memos_etl.devserver import DevServer, free_port  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_MAPPING = ROOT / "schemas" / "mappings" / "sample.yaml"


_LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", ""}


def _loopback(host) -> bool:
    if host is None:
        return True
    if isinstance(host, bytes):
        host = host.decode()
    host = str(host).split("%")[0].strip("[]").lower()
    if host in _LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class NetworkGuard:
    """Refuses (and records) any connection or name lookup beyond loopback made by this test
    process: the suite fails on a library reaching out (telemetry, model hubs, suffix lists)."""

    def __init__(self):
        self.attempts: list[str] = []
        self._real = (socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo)

    def _check(self, what: str, host) -> None:
        if not _loopback(host):
            self.attempts.append(f"{what} {host}")
            raise OSError(f"non-loopback network access refused in tests: {what} {host}")

    def install(self) -> None:
        connect, connect_ex, getaddrinfo = self._real
        guard = self

        def guarded_connect(sock, address):
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                guard._check("connect", address[0])
            return connect(sock, address)

        def guarded_connect_ex(sock, address):
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                guard._check("connect", address[0])
            return connect_ex(sock, address)

        def guarded_getaddrinfo(host, *args, **kwargs):
            guard._check("lookup", host)
            return getaddrinfo(host, *args, **kwargs)

        socket.socket.connect, socket.socket.connect_ex = guarded_connect, guarded_connect_ex
        socket.getaddrinfo = guarded_getaddrinfo

    def remove(self) -> None:
        socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo = self._real


@pytest.fixture(scope="session", autouse=True)
def data_docs_assets():
    """The Data Docs assets, fetched once per machine from the npm registry (a package registry,
    which this machine kind reaches) before any test's guard is up: a fresh machine's first run
    would otherwise fetch them inside a guarded test. Without the registry the Data Docs tests
    fail on the run's own note, saying what is missing."""
    from tasks.datadocs import ensure_assets

    try:
        ensure_assets()
    except OSError as exc:
        logging.getLogger(__name__).warning("Data Docs assets unavailable: %s", exc)


@pytest.fixture(autouse=True)
def network_guard():
    """Every test: nothing in this process may reach past loopback (subprocesses that must
    prove the same run under `unshare -n`, see tests/test_datadocs.py and test_redact.py)."""
    guard = NetworkGuard()
    guard.install()
    try:
        yield guard
    finally:
        guard.remove()
    assert not guard.attempts, f"the test tried to reach beyond loopback: {guard.attempts}"


@pytest.fixture(scope="session")
def prefect_server():
    """One Prefect API server for every flow test (starting one costs 10-20 s here)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture
def dev_server():
    with DevServer() as server:
        yield server


@pytest.fixture
def run_config(tmp_path, dev_server) -> RunConfig:
    cfg = RunConfig()
    cfg.target.base_url = dev_server.url
    cfg.target.backoff_base_s = 0.01
    cfg.target.backoff_cap_s = 0.05
    cfg.target.timeout_s = 5
    cfg.target.in_doubt_grace_s = 0.05
    cfg.state.work_dir = str(tmp_path / "state")
    return cfg


class PgCluster:
    """A throwaway PostgreSQL 15 cluster on loopback, as the `postgres` user when run as root
    (PostgreSQL refuses to run as root). `stop`/`start` are a real server outage."""

    def __init__(self):
        self.base = tempfile.mkdtemp(prefix="memos-etl-pg-")
        self.data = os.path.join(self.base, "data")
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            os.chmod(self.base, 0o755)
            shutil.chown(self.base, "postgres", "postgres")
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self.port = free_port()
        subprocess.run(
            self.as_user + ["initdb", "-D", self.data, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"],
            check=True,
            capture_output=True,
        )
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100"
        subprocess.run(
            self.as_user + ["pg_ctl", "-D", self.data, "-o", opts, "-l", os.path.join(self.base, "log"), "-w", "start"],
            check=True,
            capture_output=True,
        )

    def stop(self, mode: str = "immediate") -> None:
        subprocess.run(self.as_user + ["pg_ctl", "-D", self.data, "-m", mode, "-w", "stop"], capture_output=True)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)


def need_postgres() -> None:
    """Skip (or, with MEMOS_ETL_REQUIRE_PG=1 as .ci/run sets, fail) without PostgreSQL binaries."""
    if not shutil.which("initdb") or not shutil.which("pg_ctl"):
        msg = "PostgreSQL server binaries (initdb, pg_ctl) not on PATH"
        if os.environ.get("MEMOS_ETL_REQUIRE_PG"):
            pytest.fail(msg)
        pytest.skip(msg)


@pytest.fixture(scope="session")
def postgres_url():
    """A real PostgreSQL 15 server in a temp dir, for the life of the test session."""
    need_postgres()
    cluster = PgCluster()
    cluster.start()
    try:
        yield cluster.url
    finally:
        cluster.remove()


@pytest.fixture
def pg_cluster():
    """A PostgreSQL cluster of this test's own, which the test may stop and start."""
    need_postgres()
    cluster = PgCluster()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.remove()


def new_pg_database(server_url: str, prefix: str = "t") -> str:
    """A new, empty database in the cluster at `server_url`; returns its URL."""
    import sqlalchemy as sa

    name = f"{prefix}{time.time_ns()}"
    eng = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    with eng.connect() as c:
        c.execute(sa.text(f"CREATE DATABASE {name}"))
    eng.dispose()
    return server_url.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture
def pg_ledger_url(postgres_url):
    """A fresh database per test in the session's cluster."""
    return new_pg_database(postgres_url)


@pytest.fixture(scope="session")
def s3_endpoint():
    """moto's S3 server on loopback: the real S3 HTTP API, in a thread of this process."""
    from moto.server import ThreadedMotoServer

    for k, v in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }.items():
        os.environ.setdefault(k, v)
    # its request log goes through the root logger: after a CLI test, Prefect's console handler
    # there writes to a CliRunner stream that is closed ("Logging error" in a later test's output)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(scope="session")
def redis_url():
    """A real redis-server on loopback in a temp dir, nothing persisted, for the test session.
    Skipped without the binary, unless MEMOS_ETL_REQUIRE_REDIS=1 (CI): then it fails."""
    binary = shutil.which("redis-server")
    if not binary:
        if os.environ.get("MEMOS_ETL_REQUIRE_REDIS"):
            pytest.fail("redis-server not on PATH (MEMOS_ETL_REQUIRE_REDIS is set)")
        pytest.skip("redis-server not on PATH")
    base = tempfile.mkdtemp(prefix="memos-etl-redis-")
    port = free_port()
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", base]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"redis-server did not start on port {port}")
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(base, ignore_errors=True)
