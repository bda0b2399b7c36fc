"""Backfills: killed and resumed, and racing a nightly sync over the same data. Real
processes, a real dev-server over HTTP, ledgers on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import sqlalchemy as sa
import yaml

from core.config import load_mapping
from flows.runner import run
from tests.conftest import ROOT
from tests.helpers import (
    chat_rows,
    expected_from_rows,
    sample_mapping_at,
    set_faults,
    stats,
    stored_messages,
    write_jsonl,
)


def _files(tmp_path, n_files=4, conversations=12, turns=16):
    rows_all = []
    for i in range(n_files):
        rows = chat_rows(conversations, turns, prefix=f"f{i}c", user=f"u{i}-")
        write_jsonl(tmp_path / "data" / f"part-{i}.jsonl", rows)
        rows_all += rows
    return rows_all


def test_backfill_killed_then_resumed_exactly(dev_server, tmp_path):
    rows = _files(tmp_path)
    want, _ = expected_from_rows(rows)
    mapping = sample_mapping_at(tmp_path, tmp_path / "data")
    set_faults(dev_server.url, latency_ms=40)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "sources": {"chats": str(mapping)},
                "target": {"base_url": dev_server.url, "name": "bf"},
                "load": {"max_messages_per_request": 4, "concurrency": 2},
                "state": {"work_dir": str(tmp_path / "state")},
            }
        )
    )
    cmd = [
        sys.executable,
        "-m",
        "memos_etl.cli",
        "backfill",
        "chats",
        "-c",
        str(cfg),
        "--by",
        "file",
        "--parallel",
        "1",
        "--no-prefect",
        "--json",
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ledger = sa.create_engine(f"sqlite:///{tmp_path / 'state' / 'ledger.db'}")
    deadline = time.monotonic() + 180
    done = 0
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with ledger.connect() as c:
                done = c.execute(sa.text("SELECT count(*) FROM backfill_parts WHERE status='done'")).scalar()
        except sa.exc.OperationalError:
            done = 0
        if done >= 1 and stats(dev_server.url)["messages"] > done * 12 * 16:  # into the next part
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the backfill finished before it could be interrupted: " + proc.communicate()[1][-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 0 < stats(dev_server.url)["messages"] < len(rows)

    set_faults(dev_server.url, latency_ms=0)
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    out = json.loads(res.stdout[res.stdout.index("{") :])
    assert out["status"] == "completed" and out["done"] == 4
    assert out["ran"] < 4  # parts done before the kill were not run again
    assert stored_messages(dev_server.url) == want  # every message once, in order
    ledger.dispose()


def test_nightly_and_backfill_at_once_on_postgres(dev_server, tmp_path, run_config, pg_ledger_url):
    from flows.backfill import backfill

    rows = _files(tmp_path, n_files=3, conversations=10, turns=12)
    want, _ = expected_from_rows(rows)
    mapping = load_mapping(sample_mapping_at(tmp_path, tmp_path / "data"))
    run_config.state.ledger_url = pg_ledger_url
    run_config.load.max_messages_per_request = 3
    set_faults(dev_server.url, latency_ms=15)
    results: dict = {}

    def nightly():
        results["nightly"] = run(mapping, run_config)

    def bf():
        results["backfill"] = backfill(
            mapping, run_config, source="chats", by="hash", buckets=4, parallel=2, in_flow=False
        )

    threads = [threading.Thread(target=nightly), threading.Thread(target=bf)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    n = results["nightly"].counts
    b = results["backfill"]["counts"]
    # what one run sent the other skipped or left pending behind a lease: never both
    assert n.delivered + b["delivered"] <= len(rows), (n, b)
    set_faults(dev_server.url, latency_ms=0)
    final = run(mapping, run_config)  # whatever was left pending behind a lease
    assert final.status == "completed"
    # the backfill's totals count what each of its attempts delivered (a part retried after it
    # found conversations leased by the nightly run delivered some messages in each attempt)
    assert n.delivered + b["delivered"] + final.counts.delivered == len(rows), (n, b, final.counts)
    assert stored_messages(dev_server.url) == want  # once each, in order


def test_part_totals_add_up_over_attempts(tmp_path):
    """A part retried after an incomplete attempt reports what both attempts delivered, once."""
    from core.ledger import Ledger
    from flows.runner.backfill import with_earlier_attempts

    led = Ledger(f"sqlite:///{tmp_path / 'l.db'}")
    led.plan_backfill("b1", "src", "tgt", [("hash:0/2", {})])
    first = {"read": 30, "delivered": 20, "pending": 10, "already_delivered": 0, "requests": 4}
    led.mark_part(
        "b1", "hash:0/2", status="incomplete", report=json.dumps(with_earlier_attempts(led, "b1", "hash:0/2", first))
    )
    second = {"read": 30, "delivered": 10, "pending": 0, "already_delivered": 20, "requests": 2}
    total = with_earlier_attempts(led, "b1", "hash:0/2", second)
    assert total["delivered"] == 30 and total["already_delivered"] == 0 and total["requests"] == 6
    assert total["read"] == total["delivered"] + total["already_delivered"] + total["pending"]
    led.close()


# -- `backfill --no-prefect` where Prefect cannot be imported -----------------------------

#: a sitecustomize that makes this interpreter behave as one without Prefect installed: a
#: meta path finder ahead of the others fails every `import prefect` / `prefect.*` with the
#: ModuleNotFoundError a missing package gives (the Airflow environment's case, docs/airflow.md).
#: Any code path that would reach Prefect there fails here at the same import, in seconds and
#: without building that environment; what this cannot see, a module importing a package only
#: Prefect brings, tests/test_airflow.py sees: it imports every flows.runner module there.
NO_PREFECT = """
import sys
class NoPrefect:
    def find_spec(self, name, path=None, target=None):
        if name == "prefect" or name.startswith("prefect."):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked: Prefect is absent here)", name=name)
        return None
sys.meta_path.insert(0, NoPrefect())
"""


def _day_rows(day: int, conversations: int = 3, turns: int = 4) -> list[dict]:
    """Rows updated on 2024-05-0<day>, the SQL cursor column `updated_at` in that day."""
    from datetime import UTC, datetime, timedelta

    t0 = datetime(2024, 5, day, 6, tzinfo=UTC)
    rows = chat_rows(conversations, turns, prefix=f"d{day}c", user=f"d{day}u")
    for i, r in enumerate(rows):
        r["updated_at"] = t0 + timedelta(minutes=i)
    return rows


def test_backfill_no_prefect_runs_where_prefect_cannot_be_imported(dev_server, tmp_path):
    """`memos-etl backfill --no-prefect` in an interpreter where `import prefect` fails: a
    nightly sync loads the newest day and sets the cursor; history (three older days, rows
    behind the cursor) arrives and a backfill by cursor, a day a part, loads exactly those
    days; the same backfill again runs nothing, one split differently re-reads them all and
    sends nothing; the nightly cursor stays where the nightly left it."""
    from core.config import RunConfig
    from core.ledger import Ledger

    db = tmp_path / "chats.db"
    table = sa.Table(
        "chat_messages",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        *(sa.Column(c, sa.Text) for c in ("message_id", "user", "conversation_id", "speaker", "text")),
        *(sa.Column(c, sa.Text) for c in ("sent_at", "image_caption")),
        sa.Column("updated_at", sa.DateTime(timezone=True)),
        *(sa.Column(c, sa.Integer) for c in ("turn", "session")),
    )
    eng = sa.create_engine(f"sqlite:///{db}")
    table.metadata.create_all(eng)

    def insert(rows):
        with eng.begin() as c:
            c.execute(table.insert(), [{k: r.get(k) for k in table.c.keys() if k != "id"} for r in rows])

    mapping = sample_mapping_at(
        tmp_path,
        tmp_path,
        source={
            "name": "sql-chats",
            "type": "sql",
            "sql": {
                "url": f"sqlite:///{db}",
                "table": "chat_messages",
                "cursor_column": "updated_at",
                "key_column": "id",
                "lag": 0,
            },
        },
    )
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "sources": {"chats": str(mapping)},
                "target": {"base_url": dev_server.url, "name": "np"},
                "state": {"work_dir": str(tmp_path / "state")},
            }
        )
    )
    guard = tmp_path / "no-prefect"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(NO_PREFECT)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT")}
    env["PYTHONPATH"] = os.pathsep.join([str(guard), str(ROOT)])

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "memos_etl.cli", *args, "-c", str(cfg)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    probe = subprocess.run([sys.executable, "-c", "import prefect"], env=env, capture_output=True, text=True)
    assert probe.returncode == 1 and "ModuleNotFoundError" in probe.stderr  # the guard holds

    def cursor() -> str | None:
        run_cfg = RunConfig()
        run_cfg.state.work_dir = str(tmp_path / "state")
        ledger = Ledger(run_cfg.state.ledger())
        try:
            return ledger.source_state("sql-chats", "np")[0]
        finally:
            ledger.close()

    newest = _day_rows(4)
    insert(newest)
    nightly = cli("sync", "chats", "--no-prefect")
    assert nightly.returncode == 0, nightly.stdout + nightly.stderr[-3000:]
    assert stored_messages(dev_server.url) == expected_from_rows(newest)[0]
    nightly_cursor = cursor()
    assert nightly_cursor is not None

    history = _day_rows(1) + _day_rows(2) + _day_rows(3)
    insert(history)
    bf = ["backfill", "chats", "--by", "cursor", "--since", "2024-05-01", "--until", "2024-05-04"]
    first = cli(*bf, "--every", "1d", "--parallel", "2", "--no-prefect", "--json")
    assert first.returncode == 0, first.stdout + first.stderr[-3000:]
    out = json.loads(first.stdout[first.stdout.index("{") :])
    assert (out["status"], out["parts"], out["done"], out["ran"]) == ("completed", 3, 3, 3), out
    assert out["counts"]["delivered"] == len(history) and out["counts"]["already_delivered"] == 0
    assert stored_messages(dev_server.url) == expected_from_rows(history + newest)[0]  # every message once
    assert cursor() == nightly_cursor

    sent = stats(dev_server.url)["add_requests"]
    again = cli(*bf, "--every", "1d", "--no-prefect", "--json")  # the same backfill: its parts are done
    assert again.returncode == 0, again.stdout + again.stderr[-3000:]
    assert json.loads(again.stdout[again.stdout.index("{") :])["ran"] == 0
    split = cli(*bf, "--every", "12h", "--no-prefect", "--json")  # another backfill: read again, all delivered
    assert split.returncode == 0, split.stdout + split.stderr[-3000:]
    counts = json.loads(split.stdout[split.stdout.index("{") :])["counts"]
    assert counts["read"] == len(history) == counts["already_delivered"] and counts["delivered"] == 0, counts
    assert stats(dev_server.url)["add_requests"] == sent
    assert stored_messages(dev_server.url) == expected_from_rows(history + newest)[0]
    assert cursor() == nightly_cursor


def test_backfill_no_prefect_with_the_deployment_fan_out_is_one_clear_error(tmp_path):
    """--fan-out deployment runs parts as Prefect flow runs; with --no-prefect it was silently
    ignored (the parts ran here). Now it is a usage error naming both options, before anything
    is read or planned."""
    from typer.testing import CliRunner

    from memos_etl.cli import app

    res = CliRunner().invoke(
        app, ["backfill", "sample", "--no-prefect", "--fan-out", "deployment", "--work-dir", str(tmp_path)]
    )
    assert res.exit_code == 2, res.output
    text = " ".join(res.output.split())
    assert "--fan-out" in text and "needs Prefect" in text and "--no-prefect" in text, res.output
    assert not (tmp_path / "ledger.db").exists()
