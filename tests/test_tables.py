"""The guarantees of every source, on the table sources (Delta, Iceberg): a backfill by
partition (the tables' Hive folders), a bad row quarantined with its reason, personal data
redacted before it leaves, the report's read = outcomes; then the nightly sync finds it all
delivered. A backfill part naming a data file the table has since rewritten stops, never
loads the part empty."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pyarrow as pa
import pytest
from typer.testing import CliRunner

from memos_etl.cli import app
from tests.helpers import chat_rows, expected_from_rows, sample_mapping_at, stats, stored_messages

runner = CliRunner()

_DELTA = """
import json, sys
import pyarrow as pa
from deltalake import write_deltalake
path, rows = sys.argv[1], json.loads(sys.stdin.read())
write_deltalake(path, pa.Table.from_pylist(rows), partition_by=["day"], mode="append")
print("written", flush=True)
"""


def write(kind: str, tmp_path, rows: list[dict]) -> dict:
    """The table (partitioned by `day`) and the source section that reads it."""
    if kind == "delta":
        table = tmp_path / "chats"
        out = subprocess.run(
            [sys.executable, "-c", _DELTA, str(table)],
            input=json.dumps(rows),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert "written" in out.stdout, out.stderr
        return {"name": "lake", "type": "delta", "delta": {"table": str(table)}}
    from pyiceberg.catalog.sql import SqlCatalog

    (tmp_path / "wh").mkdir()
    cat = SqlCatalog("lake", uri=f"sqlite:///{tmp_path / 'catalog.db'}", warehouse=(tmp_path / "wh").as_uri())
    cat.create_namespace("chats")
    data = pa.Table.from_pylist(rows)
    t = cat.create_table("chats.messages", schema=data.schema)
    with t.update_spec() as spec:
        spec.add_identity("day")
    t.append(data)
    catalog = {"type": "sql", "uri": f"sqlite:///{tmp_path / 'catalog.db'}", "warehouse": (tmp_path / "wh").as_uri()}
    return {
        "name": "lake",
        "type": "iceberg",
        "iceberg": {"table": "chats.messages", "catalog_name": "lake", "catalog": catalog},
    }


def number(output: str, name: str) -> int:
    m = re.search(rf"^{re.escape(name)} +(\d+)", output, re.M)
    assert m, f"no {name!r} line in:\n{output}"
    return int(m.group(1))


@pytest.mark.parametrize("kind", ["delta", "iceberg"])
def test_backfill_by_partition_with_quarantine_and_redaction(kind, tmp_path, dev_server):
    rows = [
        {k: v for k, v in r.items() if k != "image_caption"}
        | {"day": f"2024-03-0{1 + int(r['conversation_id'][1:]) % 3}"}
        for r in chat_rows(6, 5, prefix="p")
    ]
    rows[3]["text"] = "write to ann.lee@example.com about it"
    bad = dict(rows[0], message_id="bad-1", user=None)
    source = write(kind, tmp_path, rows + [bad])
    mapping = sample_mapping_at(
        tmp_path, tmp_path, source=source, content_append=[], redact={"entities": ["EMAIL_ADDRESS"]}
    )
    args = ["--no-prefect", "--target-url", dev_server.url, "--work-dir", str(tmp_path / "work")]
    res = runner.invoke(app, ["backfill", str(mapping), "--by", "partition", "--json", *args])
    assert "Traceback" not in res.output, res.output
    assert res.exit_code == 0, res.output
    out = json.loads(res.output[res.output.index("{") :])
    assert (out["parts"], out["done"], out["status"]) == (3, 3, "completed"), out  # one part a day

    want = [dict(r, text="write to <EMAIL_ADDRESS> about it") if r is rows[3] else r for r in rows]
    assert stored_messages(dev_server.url) == expected_from_rows(want)[0]
    c = out["counts"]
    assert (c["read"], c["delivered"], c["quarantined"]) == (31, 30, 1), c
    assert c["reasons"] == {"user_id is missing": 1} and c["redaction"]["EMAIL_ADDRESS"]["found"] == 1, c

    before = stats(dev_server.url)
    res = runner.invoke(app, ["sync", str(mapping), *args])
    assert res.exit_code == 0, res.output
    assert number(res.output, "delivered") == 0 and stats(dev_server.url)["add_requests"] == before["add_requests"]


@pytest.mark.parametrize("kind", ["delta", "iceberg"])
def test_a_part_naming_a_rewritten_file_stops(kind, tmp_path):
    from core.config import load_mapping
    from core.errors import TableReadError
    from tasks.extract import Slice, open_source

    rows = [
        {k: v for k, v in r.items() if k != "image_caption"} | {"day": "2024-03-01"}
        for r in chat_rows(1, 3, prefix="r")
    ]
    mapping = load_mapping(sample_mapping_at(tmp_path, tmp_path, source=write(kind, tmp_path, rows), content_append=[]))
    source = open_source(mapping)
    held = [u.rel for u in source.units(Slice())]
    assert len(held) == 1 and "day=2024-03-01/" in held[0], held
    assert [u.rel for u in source.units(Slice(partitions=("2024-03-01",)))] == held
    assert source.units(Slice(partitions=("2024-03-02",))) == []
    with pytest.raises(TableReadError, match="of this backfill part is no longer in the table"):
        source.units(Slice(units=("day=2024-03-01/compacted-away.parquet",)))
