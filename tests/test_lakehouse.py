"""Lakehouse tables met as files: a Delta or Iceberg table's folder is not a folder of Parquet
(removed files, change data). A files or s3 source pointed at, into or above one stops before
reading anything, naming the table. Tables written by the `deltalake` package itself."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from memos_etl.cli import app
from tests.helpers import chat_rows, sample_mapping_at, stats

runner = CliRunner()


#: the table is written in a child process: deltalake's runtime sometimes aborts its process at
#: interpreter exit after all its work is done (STACK-NOTES.md), which must not be pytest's
_WRITER = """
import json, sys
import pyarrow as pa
from deltalake import DeltaTable, write_deltalake
path, first, late = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
write_deltalake(path, pa.Table.from_pylist(first), configuration={"delta.enableChangeDataFeed": "true"})
t = DeltaTable(path)
t.delete("turn > 22")
t.update(updates={"text": "'edited'"}, predicate="message_id = 'd0-1'")
write_deltalake(path, pa.Table.from_pylist(late), mode="append")
print("written", DeltaTable(path).version(), flush=True)
"""


def _delta_table(path) -> None:
    """A table with history, as its users have them: 100 messages, then a delete, an update
    and an append (version 3); written by the `deltalake` package."""
    first, late = chat_rows(4, 25, prefix="d"), chat_rows(1, 1, prefix="late")
    out = subprocess.run(
        [sys.executable, "-c", _WRITER, str(path), json.dumps(first), json.dumps(late)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "written 3" in out.stdout, out.stderr


def _sync(mapping, dev_server, work):
    res = runner.invoke(
        app, ["sync", str(mapping), "--no-prefect", "--target-url", dev_server.url, "--work-dir", str(work)]
    )
    assert "Traceback" not in res.output, res.output
    return res


@pytest.mark.parametrize("where", ["table", "inside", "above"])
def test_a_delta_table_read_as_files_is_refused_before_reading(tmp_path, dev_server, where):
    table = tmp_path / "lake" / "chats"
    _delta_table(str(table))
    path = {"table": table, "inside": table / "_delta_log", "above": tmp_path / "lake"}[where]
    if where == "inside":
        path = next(table.glob("*.parquet"))  # one data file of the table, by name
    mapping = sample_mapping_at(tmp_path, path, source={"name": "lake", "format": "parquet", "path": str(path)})
    before = stats(dev_server.url)
    res = _sync(mapping, dev_server, tmp_path / "work")
    assert res.exit_code == 1, res.output
    text = " ".join(res.output.split())
    assert f"{table} is a Delta Lake table" in text
    assert "older versions removed" in text and "Nothing was read" in text and "source.type: delta" in text
    assert stats(dev_server.url) == before  # nothing sent


def test_an_iceberg_table_read_as_files_is_refused(tmp_path, dev_server):
    table = tmp_path / "warehouse" / "chats"
    (table / "data").mkdir(parents=True)
    (table / "metadata").mkdir()
    pq.write_table(pa.Table.from_pylist(chat_rows(1, 3)), table / "data" / "00000-0-a.parquet")
    (table / "metadata" / "00001-6f1c.metadata.json").write_text('{"format-version": 2}')
    mapping = sample_mapping_at(
        tmp_path, table, source={"name": "ice", "format": "parquet", "path": str(table / "data")}
    )
    res = _sync(mapping, dev_server, tmp_path / "work")
    assert res.exit_code == 1, res.output
    assert f"{table} is an Apache Iceberg table" in " ".join(res.output.split())


def test_a_delta_table_on_s3_read_as_objects_is_refused(tmp_path, dev_server, s3_endpoint):
    import boto3

    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    bucket = f"lake-{uuid.uuid4().hex[:8]}"
    client.create_bucket(Bucket=bucket)
    local = tmp_path / "chats"
    _delta_table(str(local))
    for f in local.rglob("*"):
        if f.is_file():
            client.put_object(Bucket=bucket, Key=f"tables/chats/{f.relative_to(local).as_posix()}", Body=f.read_bytes())
    for prefix, table in (
        ("tables/chats/", "tables/chats"),
        ("tables/", "tables/chats"),
        ("tables/chats/part-", "tables/chats"),
    ):
        source = {
            "name": "s3-lake",
            "type": "s3",
            "format": "parquet",
            "s3": {"bucket": bucket, "prefix": prefix, "endpoint_url": s3_endpoint},
        }
        res = _sync(sample_mapping_at(tmp_path, tmp_path, source=source), dev_server, tmp_path / "work")
        assert res.exit_code == 1, (prefix, res.output)
        assert f"s3://{bucket}/{table} is a Delta Lake table" in " ".join(res.output.split()), (prefix, res.output)


def test_parquet_beside_a_table_named_like_one_still_loads(tmp_path, dev_server):
    """Only the table markers count: a folder of Parquet with a `metadata/` folder of other
    files, and a file called delta_log.parquet, are read as files."""
    data = tmp_path / "data"
    (data / "metadata").mkdir(parents=True)
    (data / "metadata" / "notes.json").write_text("{}")
    rows = chat_rows(2, 3, prefix="ok")
    pq.write_table(pa.Table.from_pylist(rows), data / "delta_log.parquet")
    mapping = sample_mapping_at(tmp_path, data, source={"name": "plain", "format": "parquet", "path": str(data)})
    res = _sync(mapping, dev_server, tmp_path / "work")
    assert res.exit_code == 0, res.output
