"""source.type delta: a table written by the `deltalake` package read as a table. The first
sync loads exactly its current rows; after an append, an update and a delete, the nightly sync
reads the change data feed only: the new rows sent, the update and the delete reported and
applied (on_change: replace, on_delete: delete), the dev-server's store equal to the table's
current state; a sync with no new commit reads nothing."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from memos_etl.cli import app
from tests.helpers import chat_rows, expected_from_rows, sample_mapping_at, stats, stored_messages

runner = CliRunner()

#: tables are written in a child process: deltalake's runtime sometimes aborts its process at
#: interpreter exit after all its work is done (STACK-NOTES.md), which must not be pytest's
_WRITER = """
import json, sys
import pyarrow as pa
from deltalake import DeltaTable, write_deltalake
path, step = sys.argv[1], json.loads(sys.stdin.read())
if "create" in step:
    write_deltalake(path, pa.Table.from_pylist(step["create"]), configuration={"delta.enableChangeDataFeed": "true"})
t = DeltaTable(path)
if "delete" in step:
    t.delete(step["delete"])
for predicate, text in step.get("update", []):
    t.update(updates={"text": "'" + text + "'"}, predicate=predicate)
if "append" in step:
    write_deltalake(path, pa.Table.from_pylist(step["append"]), mode="append")
print("version", DeltaTable(path).version(), flush=True)
"""


def delta(path, **step) -> int:
    out = subprocess.run(
        [sys.executable, "-c", _WRITER, str(path)], input=json.dumps(step), capture_output=True, text=True, timeout=120
    )
    m = re.search(r"version (\d+)", out.stdout)
    assert m, out.stderr
    return int(m.group(1))


def rows_of(n_conv: int, turns: int, prefix: str) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "image_caption"} for r in chat_rows(n_conv, turns, prefix=prefix)]


def number(output: str, name: str) -> int:
    m = re.search(rf"^{re.escape(name)} +(\d+)", output, re.M)
    assert m, f"no {name!r} line in:\n{output}"
    return int(m.group(1))


def sync(mapping, dev_server, work):
    res = runner.invoke(
        app, ["sync", str(mapping), "--no-prefect", "--target-url", dev_server.url, "--work-dir", str(work)]
    )
    assert "Traceback" not in res.output, res.output
    assert res.exit_code == 0, res.output
    return res.output


def test_first_sync_then_changes_through_the_feed_then_nothing(tmp_path, dev_server):
    table = tmp_path / "lake" / "chats"
    rows = rows_of(4, 25, "d")
    assert delta(table, create=rows) == 0
    mapping = sample_mapping_at(
        tmp_path,
        tmp_path,
        source={"name": "lake", "type": "delta", "delta": {"table": str(table)}},
        content_append=[],
        on_change="replace",
        on_delete="delete",
    )
    work = tmp_path / "work"
    first = sync(mapping, dev_server, work)
    assert number(first, "delivered") == 100
    assert stored_messages(dev_server.url) == expected_from_rows(rows)[0]

    late = rows_of(1, 3, "late")
    assert delta(table, delete="turn > 22", update=[["message_id = 'd1-4'", "edited"]], append=late) == 3
    now = [r for r in rows if r["turn"] <= 22]
    now = [{**r, "text": "edited"} if r["message_id"] == "d1-4" else r for r in now] + late
    nightly = sync(mapping, dev_server, work)
    assert "Delta change data feed read: versions 1 to 3" in nightly
    assert number(nightly, "changed after delivery") == 1
    assert number(nightly, "deleted in source") == 12
    assert stored_messages(dev_server.url) == expected_from_rows(now)[0]

    before = stats(dev_server.url)
    again = sync(mapping, dev_server, work)
    assert "no commit since the last run, nothing read" in again
    assert stats(dev_server.url) == before
    assert number(again, "read") == 0


_VACUUM = """
import sys
from deltalake import DeltaTable
DeltaTable(sys.argv[1]).vacuum(retention_hours=0, enforce_retention_duration=False, dry_run=False)
print("vacuumed", flush=True)
"""


def test_a_vacuumed_change_range_stops_the_run_and_the_cursor_stays(tmp_path, dev_server):
    table = tmp_path / "chats"
    rows = rows_of(2, 5, "v")
    delta(table, create=rows)
    mapping = sample_mapping_at(
        tmp_path, tmp_path, source={"name": "lake", "type": "delta", "delta": {"table": str(table)}}, content_append=[]
    )
    work = tmp_path / "work"
    sync(mapping, dev_server, work)
    # version 1 appends a file, version 2 rewrites it: vacuum removes the file version 1 added
    delta(table, append=rows_of(1, 2, "late"))
    delta(table, update=[["message_id = 'late0-1'", "second"]])
    out = subprocess.run([sys.executable, "-c", _VACUUM, str(table)], capture_output=True, text=True, timeout=120)
    assert "vacuumed" in out.stdout, out.stderr
    before = stats(dev_server.url)
    for _ in range(2):  # the cursor did not move: the second run stops the same way
        res = runner.invoke(
            app, ["sync", str(mapping), "--no-prefect", "--target-url", dev_server.url, "--work-dir", str(work)]
        )
        assert "Traceback" not in res.output, res.output
        assert res.exit_code == 1, res.output
        text = " ".join(res.output.split())
        assert re.search(r"the change data of versions 1 to \d+ cannot be read", text), text
        assert "memos-etl reset lake" in text
        assert stats(dev_server.url) == before


def test_without_a_feed_the_added_files_are_read(tmp_path, dev_server):
    table = tmp_path / "chats"
    rows = rows_of(2, 5, "n")
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, json, pyarrow as pa; from deltalake import write_deltalake; "
            "write_deltalake(sys.argv[1], pa.Table.from_pylist(json.loads(sys.argv[2]))); print('ok', flush=True)",
            str(table),
            json.dumps(rows),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    mapping = sample_mapping_at(
        tmp_path, tmp_path, source={"name": "lake", "type": "delta", "delta": {"table": str(table)}}, content_append=[]
    )
    work = tmp_path / "work"
    assert number(sync(mapping, dev_server, work), "delivered") == 10
    late = rows_of(1, 2, "late")
    delta(table, update=[["message_id = 'n1-2'", "edited"]], append=late)
    out = sync(mapping, dev_server, work)
    assert "without a change data feed" in out and "memos-etl reconcile" in out
    assert number(out, "delivered") == 2 and number(out, "changed after delivery") == 1
    # on_change: report (the default) leaves the delivered message as it was
    assert stored_messages(dev_server.url) == expected_from_rows(rows + late)[0]


@pytest.fixture
def s3_process(s3_endpoint):
    """moto's S3 server in a process of its own: deltalake's change-feed read holds the GIL
    while it waits on the network, so a server in a thread of this process never answers it."""
    import time
    import urllib.request

    from tests.conftest import free_port

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(url, timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_a_delta_table_on_s3(tmp_path, dev_server, s3_process):
    import uuid

    import boto3

    s3_endpoint = s3_process
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    bucket = f"lake-{uuid.uuid4().hex[:8]}"
    client.create_bucket(Bucket=bucket)
    local = tmp_path / "chats"
    rows = rows_of(3, 4, "s")
    delta(local, create=rows)

    def upload():
        for f in local.rglob("*"):
            if f.is_file():
                key = f"tables/chats/{f.relative_to(local).as_posix()}"
                client.put_object(Bucket=bucket, Key=key, Body=f.read_bytes())

    upload()
    source = {
        "name": "s3-lake",
        "type": "delta",
        "delta": {"table": f"s3://{bucket}/tables/chats", "endpoint_url": s3_endpoint},
    }
    mapping = sample_mapping_at(tmp_path, tmp_path, source=source, content_append=[], on_delete="delete")
    work = tmp_path / "work"
    assert number(sync(mapping, dev_server, work), "delivered") == 12
    late = rows_of(1, 2, "late")
    delta(local, delete="message_id = 's2-4'", append=late)
    upload()
    out = sync(mapping, dev_server, work)
    assert number(out, "delivered") == 2 and number(out, "deleted in source") == 1
    now = [r for r in rows if r["message_id"] != "s2-4"] + late
    assert stored_messages(dev_server.url) == expected_from_rows(now)[0]


def test_killed_during_a_change_feed_sync_then_rerun_exact(tmp_path, dev_server):
    """kill -9 three times while a nightly run sends what the feed holds (800 appended
    messages, 200 requests), then re-runs: every message once, in order; the cursor moves only
    with the run that completes."""
    from tests.test_crash import crash_command, kill_while_sending, rerun_until_done

    table = tmp_path / "chats"
    first = rows_of(10, 20, "f")
    delta(table, create=first)
    mapping = sample_mapping_at(
        tmp_path, tmp_path, source={"name": "lake", "type": "delta", "delta": {"table": str(table)}}, content_append=[]
    )
    cmd = crash_command(tmp_path, mapping, dev_server)
    rerun_until_done(cmd, dev_server, expected_from_rows(first)[0])
    more = rows_of(40, 20, "m")
    delta(table, append=more, update=[["message_id = 'f0-3'", "edited later"]])
    kill_while_sending(cmd, dev_server, times=3)
    # on_change: report keeps the delivered text of f0-3; every appended message once, in order
    rerun_until_done(cmd, dev_server, expected_from_rows(first + more)[0])


def test_a_folder_that_is_not_a_delta_table_is_one_clear_line(tmp_path, dev_server):
    """Not a table (a plain Parquet folder) and a truncated log entry: a clear error, no traceback."""
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "a.parquet").write_bytes(b"PAR1 not really")
    broken = tmp_path / "broken"
    delta(broken, create=rows_of(1, 3, "b"))
    log = next((broken / "_delta_log").glob("*.json"))
    log.write_bytes(log.read_bytes()[:40])  # cut mid-entry
    for where, says in ((plain, "cannot open as a Delta table"), (broken, "cannot open as a Delta table")):
        mapping = sample_mapping_at(
            tmp_path,
            tmp_path,
            source={"name": "lake", "type": "delta", "delta": {"table": str(where)}},
            content_append=[],
        )
        res = runner.invoke(
            app,
            ["sync", str(mapping), "--no-prefect", "--target-url", dev_server.url, "--work-dir", str(tmp_path / "w")],
        )
        assert "Traceback" not in res.output, res.output
        assert res.exit_code == 1, res.output
        assert says in res.output and str(where) in res.output, res.output


def test_the_last_change_per_key_from_a_feed_in_any_order_and_chunks():
    """The two reads of a feed (tasks/extract/delta.py): delta-rs gives a range's rows in no
    fixed order, so the second read is matched by key and version, never by position. Each key's
    last change is kept (an insert then two updates: the last post-image; an insert then a
    delete: the delete), pre-images never, and every row with a null key passes on for
    validation to quarantine (none is folded into another). Keys of two columns likewise."""
    import random

    import pyarrow as pa

    from tasks.extract.delta import last_changes, last_version_per_key

    rows = [
        ("c1", "a", "insert", 1, "a v1"),
        ("c1", "a", "update_preimage", 2, "a v1"),
        ("c1", "a", "update_postimage", 2, "a v2"),
        ("c1", "a", "update_preimage", 3, "a v2"),
        ("c1", "a", "update_postimage", 3, "a v3"),
        ("c1", "b", "insert", 1, "b v1"),
        ("c1", "b", "delete", 4, "b v1"),
        ("c2", "a", "insert", 2, "other conversation, same id"),
        ("c1", None, "insert", 1, "no key 1"),
        ("c1", None, "insert", 3, "no key 2"),
        ("c3", "z", "insert", 4, "only insert"),
    ]
    names = ["conversation", "id", "_change_type", "_commit_version", "text"]
    want = {
        ("c1", "a", "update_postimage", "a v3"),
        ("c1", "b", "delete", "b v1"),
        ("c2", "a", "insert", "other conversation, same id"),
        ("c1", None, "insert", "no key 1"),
        ("c1", None, "insert", "no key 2"),
        ("c3", "z", "insert", "only insert"),
    }
    rng = random.Random(7)

    def feed(cols=None):  # each read: its own order, cut into two chunks at its own place
        shuffled = rows[:]
        rng.shuffle(shuffled)
        cut = rng.randrange(1, len(shuffled))
        for part in (shuffled[:cut], shuffled[cut:]):
            t = pa.table(dict(zip(names, map(list, zip(*part)))))
            t = t.append_column("_commit_timestamp", pa.array([0] * t.num_rows, pa.int64()))
            yield t.select(cols) if cols else t

    for keys in (["conversation", "id"], ["id"]):
        for _ in range(5):
            last = last_version_per_key(feed([*keys, "_change_type", "_commit_version"]), keys)
            got = [r for t in last_changes(feed(), last, keys) for r in t.to_pylist()]
            assert all(set(r) == {"conversation", "id", "_change_type", "text"} for r in got)
            seen = {(r["conversation"], r["id"], r["_change_type"], r["text"]) for r in got}
            if keys == ["id"]:  # by id alone, c2's "a" (v2) is an older change of the same key than c1's v3
                assert seen == want - {("c2", "a", "insert", "other conversation, same id")}, seen
            else:
                assert seen == want, seen
            assert len(got) == len(seen)


_UGLY = """
import sys
import pyarrow as pa
from deltalake import DeltaTable, write_deltalake
path, step = sys.argv[1], sys.argv[2]
t = DeltaTable(path)
if step == "changes":
    # a 3 MB message, a message id set to null, and a nested column changed 30 levels down
    t.update(updates={"text": "'" + "long " * 600_000 + "'"}, predicate="message_id = 'g0-2'")
    t.update(updates={"message_id": "NULL"}, predicate="message_id = 'g0-3'")
    t.update(updates={"text": "'deep edit'"}, predicate="conversation_id IN ('g1', 'g2')")
else:
    t.update(updates={"text": "'again'"}, predicate="message_id = 'g1-2'")
print("version", DeltaTable(path).version(), flush=True)
"""


def test_a_feed_of_ugly_changes_costs_a_row_each_and_a_broken_change_file_one_line(tmp_path, dev_server):
    """The feed path with what real tables hold: a nested column 30 levels deep, a 3 MB message,
    a key set to null, among 20 plain edits. Each costs what it costs on a full read: the null
    key and the 3 MB message a quarantined row each with its reason, the edits replaced, read =
    outcomes; then a change-data file that is not Parquet behind its name stops the nightly run
    with one line, and nothing is sent."""
    table = tmp_path / "chats"
    rows = rows_of(3, 10, "g")
    deep: dict = {"v": 1}
    for _ in range(30):
        deep = {"a": deep}
    delta(table, create=[{**r, "meta": deep} for r in rows])
    mapping = sample_mapping_at(
        tmp_path,
        tmp_path,
        source={"name": "lake", "type": "delta", "delta": {"table": str(table)}},
        content_append=[],
        on_change="replace",
    )
    work = tmp_path / "work"
    assert number(sync(mapping, dev_server, work), "delivered") == 30

    out = subprocess.run([sys.executable, "-c", _UGLY, str(table), "changes"], capture_output=True, text=True)
    assert "version" in out.stdout, out.stderr
    res = runner.invoke(
        app, ["sync", str(mapping), "--no-prefect", "--target-url", dev_server.url, "--work-dir", str(work)]
    )
    assert "Traceback" not in res.output, res.output
    assert res.exit_code == 0, res.output
    assert number(res.output, "read") == 22, res.output  # the changed rows, pre-images aside
    assert number(res.output, "quarantined") == 2, res.output
    assert "source_key is missing" in res.output, res.output
    assert "content too large for one request" in res.output, res.output
    assert number(res.output, "changed after delivery") == 20, res.output
    assert re.search(r"^read = outcomes +yes", res.output, re.M), res.output
    stored = stored_messages(dev_server.url)
    assert [content for _, content, _ in stored[("u1", "g1")]] == ["deep edit"] * 10, stored[("u1", "g1")]

    out = subprocess.run([sys.executable, "-c", _UGLY, str(table), "more"], capture_output=True, text=True)
    assert "version" in out.stdout, out.stderr
    for f in (table / "_change_data").rglob("*.parquet"):
        f.write_bytes(b"PAR1 this is not a parquet file")
    before = stats(dev_server.url)
    res = runner.invoke(
        app, ["sync", str(mapping), "--no-prefect", "--target-url", dev_server.url, "--work-dir", str(work)]
    )
    assert "Traceback" not in res.output, res.output
    assert res.exit_code == 1, res.output
    assert "cannot be read" in " ".join(res.output.split()), res.output
    assert stats(dev_server.url) == before
