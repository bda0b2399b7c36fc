"""source.type iceberg: a table written by `pyiceberg` into a SQL catalog (SQLite) read as a
table. The first sync loads exactly its current snapshot's rows; after a delete, an update
(an overwrite of one row) and an append, the nightly sync compares the two snapshots: the new
rows sent, the update and the deletes reported and applied (on_change: replace, on_delete:
delete), the dev-server's store equal to the table's current rows; a sync with no new
snapshot reads nothing; an expired snapshot and a rollback stop the run with the way out."""

from __future__ import annotations

import re

import pyarrow as pa
import pytest
from typer.testing import CliRunner

from memos_etl.cli import app
from tests.helpers import chat_rows, expected_from_rows, sample_mapping_at, stats, stored_messages

runner = CliRunner()


def rows_of(n_conv: int, turns: int, prefix: str) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "image_caption"} for r in chat_rows(n_conv, turns, prefix=prefix)]


def number(output: str, name: str) -> int:
    m = re.search(rf"^{re.escape(name)} +(\d+)", output, re.M)
    assert m, f"no {name!r} line in:\n{output}"
    return int(m.group(1))


def catalog(tmp_path, uri: str | None = None, **props):
    from pyiceberg.catalog.sql import SqlCatalog

    (tmp_path / "wh").mkdir(exist_ok=True)
    props.setdefault("warehouse", (tmp_path / "wh").as_uri())
    return SqlCatalog("lake", uri=uri or f"sqlite:///{tmp_path / 'catalog.db'}", **props)


def create(cat, rows: list[dict]):
    data = pa.Table.from_pylist(rows)
    if "chats" not in [n[0] for n in cat.list_namespaces()]:
        cat.create_namespace("chats")
    table = cat.create_table("chats.messages", schema=data.schema)
    table.append(data)
    return table


def mapping_for(tmp_path, catalog_props: dict | None = None, **changes):
    props = {"type": "sql", "uri": "sqlite:///catalog.db", "warehouse": "wh"}  # relative to the mapping
    iceberg = {"table": "chats.messages", "catalog_name": "lake", "catalog": props}
    source = {"name": "lake", "type": "iceberg", "iceberg": iceberg}
    source["iceberg"].update(catalog_props or {})
    return sample_mapping_at(tmp_path, tmp_path, source=source, content_append=[], **changes)


def sync(mapping, dev_server, work, code: int = 0):
    res = runner.invoke(
        app, ["sync", str(mapping), "--no-prefect", "--target-url", dev_server.url, "--work-dir", str(work)]
    )
    assert "Traceback" not in res.output, res.output
    assert res.exit_code == code, res.output
    return res.output


def test_first_sync_then_snapshot_changes_then_nothing(tmp_path, dev_server):
    cat = catalog(tmp_path)
    rows = rows_of(4, 25, "i")
    table = create(cat, rows)
    mapping = mapping_for(tmp_path, on_change="replace", on_delete="delete")
    work = tmp_path / "work"
    first = sync(mapping, dev_server, work)
    assert number(first, "delivered") == 100
    assert stored_messages(dev_server.url) == expected_from_rows(rows)[0]

    table.delete("turn > 22")
    edited = next({**r, "text": "edited"} for r in rows if r["message_id"] == "i1-4")
    one = pa.Table.from_pylist([edited], schema=table.schema().as_arrow())
    table.overwrite(one, overwrite_filter="message_id = 'i1-4'")
    late = rows_of(1, 3, "late")
    table.append(pa.Table.from_pylist(late, schema=table.schema().as_arrow()))
    now = [edited if r["message_id"] == "i1-4" else r for r in rows if r["turn"] <= 22] + late
    assert cat.load_table("chats.messages").scan().to_arrow().num_rows == len(now)

    nightly = sync(mapping, dev_server, work)
    assert "Iceberg snapshots" in nightly and "compared" in nightly
    assert number(nightly, "changed after delivery") == 1
    assert number(nightly, "deleted in source") == 12
    assert stored_messages(dev_server.url) == expected_from_rows(now)[0]

    before = stats(dev_server.url)
    again = sync(mapping, dev_server, work)
    assert "no commit since the last run, nothing read" in again
    assert number(again, "read") == 0
    assert stats(dev_server.url) == before


def test_an_expired_snapshot_and_a_rollback_stop_the_run_and_the_cursor_stays(tmp_path, dev_server):
    cat = catalog(tmp_path)
    rows = rows_of(2, 5, "e")
    table = create(cat, rows)
    mapping = mapping_for(tmp_path)
    work = tmp_path / "work"
    sync(mapping, dev_server, work)
    loaded = table.current_snapshot().snapshot_id
    table.append(pa.Table.from_pylist(rows_of(1, 2, "late"), schema=table.schema().as_arrow()))
    table.maintenance.expire_snapshots().by_id(loaded).commit()
    before = stats(dev_server.url)
    for _ in range(2):  # the cursor did not move: the second run stops the same way
        text = " ".join(sync(mapping, dev_server, work, code=1).split())
        assert f"snapshot {loaded}, the last one loaded, is no longer in the table's metadata" in text, text
        assert "memos-etl reset lake" in text
        assert stats(dev_server.url) == before

    # a fresh table: loaded, one more append loaded, then rolled back to the first and appended
    cat.drop_table("chats.messages")
    table = create(cat, rows)
    work = tmp_path / "work2"
    sync(mapping, dev_server, work)
    first = table.current_snapshot().snapshot_id
    table.append(pa.Table.from_pylist(rows_of(1, 2, "b"), schema=table.schema().as_arrow()))
    sync(mapping, dev_server, work)
    table.manage_snapshots().rollback_to_snapshot(first).commit()
    table.append(pa.Table.from_pylist(rows_of(1, 2, "c"), schema=table.schema().as_arrow()))
    text = " ".join(sync(mapping, dev_server, work, code=1).split())
    assert "does not descend from snapshot" in text and "memos-etl reset lake" in text, text


def test_no_table_and_a_broken_catalog_are_one_clear_line(tmp_path, dev_server):
    catalog(tmp_path)  # an empty catalog: no table in it
    (tmp_path / "broken.db").write_bytes(b"not a database at all" * 100)
    for props, says in (
        (None, "cannot open as an Iceberg table"),
        ({"catalog": {"type": "sql", "uri": "sqlite:///broken.db"}}, "cannot open as an Iceberg table"),
        ({"catalog": {"type": "no-such-kind"}}, "cannot open as an Iceberg table"),
    ):
        text = " ".join(sync(mapping_for(tmp_path, props), dev_server, tmp_path / "w", code=1).split())
        assert says in text and "chats.messages" in text, text


def test_a_mapping_without_a_message_key_is_refused(tmp_path):
    from core.config import load_mapping
    from core.errors import ConfigError

    path = mapping_for(tmp_path)
    import yaml

    body = yaml.safe_load(path.read_text())
    body["fields"].pop("source_key")
    path.write_text(yaml.safe_dump(body))
    with pytest.raises((ConfigError, ValueError), match="source.type iceberg needs fields.source_key"):
        load_mapping(path)


def test_an_iceberg_table_on_s3(tmp_path, dev_server, s3_endpoint):
    import uuid

    import boto3

    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    bucket = f"ice-{uuid.uuid4().hex[:8]}"
    client.create_bucket(Bucket=bucket)
    s3 = {"s3.endpoint": s3_endpoint, "s3.region": "us-east-1"}
    cat = catalog(tmp_path, warehouse=f"s3://{bucket}/wh", **s3)
    rows = rows_of(3, 4, "s")
    table = create(cat, rows)
    props = {"type": "sql", "uri": "sqlite:///catalog.db", "warehouse": f"s3://{bucket}/wh"}
    mapping = mapping_for(tmp_path, {"catalog": props, "endpoint_url": s3_endpoint}, on_delete="delete")
    work = tmp_path / "work"
    assert number(sync(mapping, dev_server, work), "delivered") == 12
    late = rows_of(1, 2, "late")
    table.delete("message_id = 's2-4'")
    table.append(pa.Table.from_pylist(late, schema=table.schema().as_arrow()))
    out = sync(mapping, dev_server, work)
    assert number(out, "delivered") == 2 and number(out, "deleted in source") == 1
    now = [r for r in rows if r["message_id"] != "s2-4"] + late
    assert stored_messages(dev_server.url) == expected_from_rows(now)[0]
    # the same table by its folder on S3, no catalog: a plan of everything it holds now
    folder = {
        "name": "s3-folder",
        "type": "iceberg",
        "iceberg": {"location": table.location(), "endpoint_url": s3_endpoint},
    }
    plan = sample_mapping_at(tmp_path, tmp_path, name="folder.yaml", source=folder, content_append=[])
    res = runner.invoke(app, ["plan", str(plan), "--work-dir", str(tmp_path / "plan"), "--json"])
    assert res.exit_code == 0, res.output
    import json

    assert json.loads(res.output[res.output.index("{") :])["counts"]["planned"] == len(now), res.output


def test_killed_during_a_snapshot_sync_then_rerun_exact(tmp_path, dev_server):
    """kill -9 three times while a nightly run sends what a new snapshot appended (800
    messages, 200 requests), then re-runs: every message once, in order; the cursor moves
    only with the run that completes."""
    from tests.test_crash import crash_command, kill_while_sending, rerun_until_done

    cat = catalog(tmp_path)
    first = rows_of(10, 20, "f")
    table = create(cat, first)
    mapping = mapping_for(tmp_path)
    cmd = crash_command(tmp_path, mapping, dev_server)
    rerun_until_done(cmd, dev_server, expected_from_rows(first)[0])
    more = rows_of(40, 20, "m")
    table.append(pa.Table.from_pylist(more, schema=table.schema().as_arrow()))
    edited = next({**r, "text": "edited later"} for r in first if r["message_id"] == "f0-3")
    table.overwrite(pa.Table.from_pylist([edited], schema=table.schema().as_arrow()), "message_id = 'f0-3'")
    kill_while_sending(cmd, dev_server, times=3)
    # on_change: report keeps the delivered text of f0-3; every appended message once, in order
    rerun_until_done(cmd, dev_server, expected_from_rows(first + more)[0])


def test_a_missing_data_file_and_a_cut_metadata_file_are_one_clear_line(tmp_path, dev_server):
    cat = catalog(tmp_path)
    table = create(cat, rows_of(1, 3, "x"))
    data = next(iter(table.scan().plan_files())).file.file_path
    (tmp_path / "gone").mkdir()
    moved = tmp_path / "gone" / "data.parquet"
    from urllib.parse import urlparse

    src = urlparse(data).path
    import shutil

    shutil.move(src, moved)
    text = " ".join(sync(mapping_for(tmp_path), dev_server, tmp_path / "w", code=1).split())
    assert "cannot read" in text and "chats.messages snapshot" in text, text
    shutil.move(moved, src)
    meta = urlparse(cat.load_table("chats.messages").metadata_location).path
    with open(meta, "r+b") as f:
        f.truncate(60)
    text = " ".join(sync(mapping_for(tmp_path), dev_server, tmp_path / "w2", code=1).split())
    assert "cannot open as an Iceberg table" in text, text


def test_a_catalog_on_postgresql(tmp_path, dev_server, pg_ledger_url):
    """The SQL catalog in PostgreSQL (and the ledger beside it): first sync, then a delete
    and an append found by the snapshot comparison."""
    cat = catalog(tmp_path, uri=pg_ledger_url)
    rows = rows_of(3, 6, "g")
    table = create(cat, rows)
    props = {"type": "sql", "uri": pg_ledger_url, "warehouse": (tmp_path / "wh").as_uri()}
    mapping = mapping_for(tmp_path, {"catalog": props}, on_delete="delete")
    args = ["sync", str(mapping), "--no-prefect", "--target-url", dev_server.url, "--ledger", pg_ledger_url]
    res = runner.invoke(app, args)
    assert res.exit_code == 0 and number(res.output, "delivered") == 18, res.output
    table.delete("conversation_id = 'g1'")
    late = rows_of(1, 2, "late")
    table.append(pa.Table.from_pylist(late, schema=table.schema().as_arrow()))
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert number(res.output, "delivered") == 2 and number(res.output, "deleted in source") == 6, res.output
    now = [r for r in rows if r["conversation_id"] != "g1"] + late
    assert stored_messages(dev_server.url) == expected_from_rows(now)[0]


def test_a_table_folder_read_without_a_catalog(tmp_path, dev_server):
    """source.iceberg.location: the table's folder; each run reads its newest metadata file."""
    cat = catalog(tmp_path)
    rows = rows_of(2, 5, "l")
    table = create(cat, rows)
    folder = table.location().removeprefix("file://")
    source = {"name": "lake", "type": "iceberg", "iceberg": {"location": folder}}
    mapping = sample_mapping_at(tmp_path, tmp_path, source=source, content_append=[], on_delete="delete")
    work = tmp_path / "work"
    assert number(sync(mapping, dev_server, work), "delivered") == 10
    late = rows_of(1, 2, "late")
    table.append(pa.Table.from_pylist(late, schema=table.schema().as_arrow()))
    table.delete("message_id = 'l1-5'")
    out = sync(mapping, dev_server, work)
    assert number(out, "delivered") == 2 and number(out, "deleted in source") == 1, out
    now = [r for r in rows if r["message_id"] != "l1-5"] + late
    assert stored_messages(dev_server.url) == expected_from_rows(now)[0]
    # a folder that is no table, and both ways given at once: one clear line each
    (tmp_path / "empty").mkdir()
    bad = sample_mapping_at(
        tmp_path, tmp_path, source={**source, "iceberg": {"location": str(tmp_path / "empty")}}, content_append=[]
    )
    text = " ".join(sync(bad, dev_server, tmp_path / "w2", code=1).split())
    assert "no metadata/*.metadata.json under" in text, text
    both = {**source, "iceberg": {"location": folder, "table": "chats.messages"}}
    res = runner.invoke(
        app,
        [
            "sync",
            str(sample_mapping_at(tmp_path, tmp_path, name="both.yaml", source=both, content_append=[])),
            "--no-prefect",
        ],
    )
    assert res.exit_code == 1 and "exactly one of table" in res.output and "Traceback" not in res.output, res.output


def test_a_data_file_that_is_not_parquet_and_an_empty_table(tmp_path, dev_server):
    """A data file whose bytes are not Parquet behind its .parquet name: one clear line, nothing
    sent. A table with no snapshot yet: nothing read, said so, and its first rows load later."""
    cat = catalog(tmp_path)
    table = create(cat, rows_of(1, 3, "g"))
    data = next(iter(table.scan().plan_files())).file.file_path.removeprefix("file://")
    good = open(data, "rb").read()
    with open(data, "wb") as f:
        f.write(b"PAR1 this is not a parquet file at all " * 50)
    text = " ".join(sync(mapping_for(tmp_path), dev_server, tmp_path / "w", code=1).split())
    assert "cannot read" in text and "chats.messages snapshot" in text, text
    assert stats(dev_server.url)["add_requests"] == 0
    with open(data, "wb") as f:
        f.write(good)

    cat.create_namespace("empty")
    schema = table.schema().as_arrow()
    later = cat.create_table("empty.messages", schema=schema)
    body = {"table": "empty.messages", "catalog_name": "lake"}
    props = {"type": "sql", "uri": "sqlite:///catalog.db", "warehouse": "wh"}
    source = {"name": "empty", "type": "iceberg", "iceberg": {**body, "catalog": props}}
    mapping = sample_mapping_at(tmp_path, tmp_path, name="empty.yaml", source=source, content_append=[])
    out = sync(mapping, dev_server, tmp_path / "w2")
    assert "has no snapshot yet: nothing to read" in out and number(out, "read") == 0, out
    later.append(pa.Table.from_pylist(rows_of(1, 2, "e"), schema=schema))
    assert number(sync(mapping, dev_server, tmp_path / "w2"), "delivered") == 2


def test_deep_nesting_and_a_huge_message_in_a_table(tmp_path, dev_server):
    """A column nested 40 levels deep beside the mapped ones, and one 3 MB message: the nested
    column rides along unmapped, the huge message is quarantined with its reason, the rest load."""
    deep: dict = {"leaf": "x"}
    for _ in range(40):
        deep = {"inner": deep}
    rows = [r | {"extra": deep} for r in rows_of(3, 10, "n")]
    rows[1]["text"] = "word " * 600_000
    create(catalog(tmp_path), rows)
    out = sync(mapping_for(tmp_path), dev_server, tmp_path / "w")
    assert number(out, "read") == 30 and number(out, "delivered") == 29 and number(out, "quarantined") == 1, out
    assert "content too large for one request" in out
