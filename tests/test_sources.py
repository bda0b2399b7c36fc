"""S3 and SQL sources end to end: first sync, no-op re-sync, growth, late rows, backfill
slices, schema drift and bad inputs, against moto's S3 server and a real PostgreSQL."""

from __future__ import annotations

import io
import json
import uuid
from datetime import UTC, datetime, timedelta

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
import yaml

from core.config import load_mapping
from core.errors import SchemaDrift, SourceError
from flows.runner import run
from tasks.extract import Slice
from tasks.quarantine import read_quarantine
from tests.conftest import SAMPLE_MAPPING
from tests.helpers import chat_rows, expected_from_rows, stored_messages

FIELDS = yaml.safe_load(SAMPLE_MAPPING.read_text())["fields"]


def mapping_file(tmp_path, source: dict, fields: dict | None = None, name="m.yaml"):
    body = {
        "source": source,
        "fields": fields or {k: v for k, v in FIELDS.items() if k != "info"},
        "time": {"formats": ["iso"], "timezone": "UTC"},
    }
    p = tmp_path / name
    p.write_text(yaml.safe_dump(body))
    return load_mapping(p)


# -- S3 -----------------------------------------------------------------------------------


@pytest.fixture
def bucket(s3_endpoint):
    name = f"chats-{uuid.uuid4().hex[:8]}"
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    client.create_bucket(Bucket=name)
    return client, name


def put_parquet(client, bucket, key, rows):
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buf)
    client.put_object(Bucket=bucket, Key=key, Body=buf.getvalue())


def s3_source(s3_endpoint, bucket, fmt="parquet"):
    return {
        "name": "s3-chats",
        "type": "s3",
        "format": fmt,
        "s3": {"bucket": bucket, "prefix": "raw/", "endpoint_url": s3_endpoint, "partition_key": "dt"},
    }


def test_s3_prefix_end_to_end_incremental(dev_server, run_config, tmp_path, s3_endpoint, bucket):
    client, name = bucket
    day1 = chat_rows(conversations=8, turns=10)
    put_parquet(client, name, "raw/dt=2024-03-01/part-0.parquet", day1[:40])
    put_parquet(client, name, "raw/dt=2024-03-01/part-1.parquet", day1[40:])
    client.put_object(Bucket=name, Key="raw/_SUCCESS", Body=b"")
    mapping = mapping_file(tmp_path, s3_source(s3_endpoint, name))
    first = run(mapping, run_config)
    assert first.counts.delivered == 80 and first.files == 2
    assert stored_messages(dev_server.url) == expected_from_rows(day1)[0]

    noop = run(mapping, run_config)  # unchanged objects are skipped without being read
    assert noop.counts.requests == 0 and noop.counts.read == 0 and noop.counts.units_skipped == 2

    day2 = chat_rows(conversations=8, turns=4, start_turn=11) + chat_rows(conversations=2, turns=3, prefix="n")
    put_parquet(client, name, "raw/dt=2024-03-02/part-0.parquet", day2)
    # a rewritten object (new ETag) is read again; only its new messages are sent
    extra = chat_rows(conversations=1, turns=2, start_turn=15)
    put_parquet(client, name, "raw/dt=2024-03-01/part-1.parquet", day1[40:] + extra)
    grown = run(mapping, run_config)
    assert grown.counts.delivered == len(day2) + len(extra)
    assert grown.counts.already_delivered == 40 and grown.counts.units_skipped == 1
    assert stored_messages(dev_server.url) == expected_from_rows(day1 + day2 + extra)[0]


def test_s3_backfill_slice_reads_only_its_partitions(dev_server, run_config, tmp_path, s3_endpoint, bucket):
    client, name = bucket
    days = {f"2024-03-0{d}": chat_rows(conversations=2, turns=3, prefix=f"d{d}-") for d in (1, 2, 3)}
    for day, rows in days.items():
        put_parquet(client, name, f"raw/dt={day}/p.parquet", rows)
    mapping = mapping_file(tmp_path, s3_source(s3_endpoint, name))
    sliced = run(mapping, run_config, part=Slice(since="2024-03-02", until="2024-03-03"))
    assert sliced.files == 1 and sliced.counts.delivered == 6
    assert stored_messages(dev_server.url) == expected_from_rows(days["2024-03-02"])[0]
    rest = run(mapping, run_config)  # the nightly run then loads the others, not the slice again
    assert rest.counts.delivered == 12 and rest.counts.units_skipped == 1
    assert stored_messages(dev_server.url) == expected_from_rows([r for v in days.values() for r in v])[0]


def test_s3_corrupt_object_is_quarantined_and_the_others_load(dev_server, run_config, tmp_path, s3_endpoint, bucket):
    client, name = bucket
    good = chat_rows(conversations=3, turns=4)
    put_parquet(client, name, "raw/dt=2024-03-01/good.parquet", good)
    client.put_object(Bucket=name, Key="raw/dt=2024-03-01/bad.parquet", Body=b"PAR1 this is not parquet")
    mapping = mapping_file(tmp_path, s3_source(s3_endpoint, name))
    report = run(mapping, run_config)
    assert report.counts.units_failed == 1 and report.counts.delivered == 12
    q = read_quarantine(run_config.state.work_dir).to_pylist()
    assert [r["source_file"] for r in q] == ["dt=2024-03-01/bad.parquet"] and "unreadable" in q[0]["reasons"][0]
    assert stored_messages(dev_server.url) == expected_from_rows(good)[0]
    again = run(mapping, run_config)  # unchanged and still corrupt: skipped, and said so
    assert again.counts.units_skipped == 2 and any("still unreadable" in n for n in again.notes)


def test_s3_truncated_jsonl_costs_its_last_line(dev_server, run_config, tmp_path, s3_endpoint, bucket):
    """An object cut off mid-line: that line is quarantined with its number, the lines before
    it are delivered (they are whole), the other object as usual."""
    client, name = bucket
    rows = chat_rows(conversations=2, turns=3)
    body = "".join(json.dumps(r) + "\n" for r in rows) + '{"message_id": "x", "user": "u0", "te'
    client.put_object(Bucket=name, Key="raw/a.jsonl", Body=body.encode())
    client.put_object(
        Bucket=name, Key="raw/b.jsonl", Body="".join(json.dumps(r) + "\n" for r in chat_rows(2, 2, prefix="b")).encode()
    )
    source = s3_source(s3_endpoint, name, "jsonl")
    source["s3"].pop("partition_key")
    report = run(mapping_file(tmp_path, source), run_config)
    q = read_quarantine(run_config.state.work_dir).to_pylist()
    assert report.counts.units_failed == 0 and report.counts.delivered == 10 and report.counts.quarantined == 1
    assert (q[0]["source_file"], q[0]["source_row"], q[0]["stage"]) == ("a.jsonl", 6, "extract")
    assert q[0]["reasons"][0].startswith("line 7: not JSON")
    assert report.counts.read == 11


def test_s3_missing_bucket_and_unreachable_endpoint_are_clear(run_config, tmp_path, s3_endpoint):
    with pytest.raises(SourceError, match="bucket does not exist"):
        run(mapping_file(tmp_path, s3_source(s3_endpoint, "no-such-bucket")), run_config)
    with pytest.raises(SourceError, match="cannot reach the S3 endpoint"):
        run(mapping_file(tmp_path, s3_source("http://127.0.0.1:9", "b")), run_config)


# -- SQL ------------------------------------------------------------------------------------

T0 = datetime(2024, 5, 1, tzinfo=UTC)


def sql_rows(conversations, turns, start_turn=1, prefix="c", at=T0):
    rows = chat_rows(conversations, turns, start_turn, prefix)
    for i, r in enumerate(rows):
        r["updated_at"] = at + timedelta(seconds=i)
        r["sent_at"] = datetime.fromisoformat(r["sent_at"])
    return rows


def create_table(url, name="chat_messages"):
    eng = sa.create_engine(url)
    meta = sa.MetaData()
    t = sa.Table(
        name,
        meta,
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("message_id", sa.Text),
        sa.Column("user", sa.Text),
        sa.Column("conversation_id", sa.Text),
        sa.Column("speaker", sa.Text),
        sa.Column("text", sa.Text),
        sa.Column("turn", sa.Integer),
        sa.Column("sent_at", sa.DateTime(timezone=True)),
        sa.Column("image_caption", sa.Text),
        sa.Column("updated_at", sa.DateTime(timezone=True), index=True),
    )
    meta.create_all(eng)
    return eng, t


def insert(eng, t, rows):
    cols = {c.name for c in t.columns} - {"id"}
    with eng.begin() as c:
        c.execute(t.insert(), [{k: r.get(k) for k in cols} for r in rows])


def sql_source(url, **kw):
    return {
        "name": "pg-chats",
        "type": "sql",
        "sql": {
            "url": url,
            "table": "chat_messages",
            "cursor_column": "updated_at",
            "key_column": "id",
            "lag": 3600,
            "page_rows": 25,
            **kw,
        },
    }


def test_postgres_table_incremental_with_lag_and_backfill(dev_server, run_config, tmp_path, pg_ledger_url):
    eng, t = create_table(pg_ledger_url)
    first_rows = sql_rows(6, 10)
    insert(eng, t, first_rows)
    mapping = mapping_file(tmp_path, sql_source(pg_ledger_url))
    first = run(mapping, run_config)
    assert first.counts.delivered == 60
    assert stored_messages(dev_server.url) == expected_from_rows(first_rows)[0]

    noop = run(mapping, run_config)  # re-reads only the lag window; nothing is sent again
    assert noop.counts.requests == 0 and noop.counts.already_delivered == noop.counts.read <= 60

    later_rows = sql_rows(6, 3, start_turn=11, at=T0 + timedelta(hours=2))
    late_row = sql_rows(1, 1, start_turn=14, at=T0 + timedelta(hours=2, minutes=-30))  # commits late, inside lag
    insert(eng, t, later_rows)
    grown = run(mapping, run_config)
    insert(eng, t, late_row)
    late = run(mapping, run_config)
    assert grown.counts.delivered == 18 and late.counts.delivered == 1
    assert stored_messages(dev_server.url) == expected_from_rows(first_rows + later_rows + late_row)[0]


def test_sql_backfill_slice_does_not_move_the_cursor(dev_server, run_config, tmp_path, pg_ledger_url):
    from core.ledger import Ledger

    eng, t = create_table(pg_ledger_url)
    rows = sql_rows(4, 10)  # updated_at T0 .. T0+39s
    insert(eng, t, rows)
    mapping = mapping_file(tmp_path, sql_source(pg_ledger_url, lag=0))
    part = Slice(since=T0 + timedelta(seconds=10), until=T0 + timedelta(seconds=20))
    sliced = run(mapping, run_config, part=part)
    assert sliced.counts.read == 10 and sliced.counts.delivered == 10
    led = Ledger(run_config.state.ledger())
    assert led.source_state("pg-chats", run_config.target.ledger_name)[0] is None  # cursor untouched
    nightly = run(mapping, run_config)
    assert nightly.counts.delivered == 30 and nightly.counts.already_delivered == 10
    assert led.source_state("pg-chats", run_config.target.ledger_name)[0] is not None
    led.close()
    assert stored_messages(dev_server.url) == expected_from_rows(rows)[0]


def test_sql_schema_drift_new_column_noted_type_change_stops(dev_server, run_config, tmp_path, pg_ledger_url):
    eng, t = create_table(pg_ledger_url)
    insert(eng, t, sql_rows(2, 3))
    mapping = mapping_file(tmp_path, sql_source(pg_ledger_url, lag=0))
    run(mapping, run_config)
    with eng.begin() as c:
        c.execute(sa.text("ALTER TABLE chat_messages ADD COLUMN mood text"))
    insert(eng, t, sql_rows(2, 2, start_turn=4, at=T0 + timedelta(hours=1)))
    noted = run(mapping, run_config)
    assert noted.counts.delivered == 4 and any("new column 'mood'" in n for n in noted.notes)
    with eng.begin() as c:
        c.execute(sa.text("ALTER TABLE chat_messages ALTER COLUMN turn TYPE text USING turn::text"))
    insert(eng, t, [{**r, "turn": str(r["turn"])} for r in sql_rows(2, 1, start_turn=6, at=T0 + timedelta(hours=2))])
    before = len(sum(stored_messages(dev_server.url).values(), []))
    with pytest.raises(SchemaDrift, match="'turn' changed type: int -> string"):
        run(mapping, run_config)
    assert len(sum(stored_messages(dev_server.url).values(), [])) == before  # nothing sent


def test_sqlite_query_source_and_unreachable_database(dev_server, run_config, tmp_path):
    url = f"sqlite:///{tmp_path / 'chats.db'}"
    eng, t = create_table(url)
    rows = sql_rows(3, 4)
    insert(eng, t, rows)
    source = {
        "name": "lite",
        "type": "sql",
        "sql": {
            "url": url,
            "query": "SELECT * FROM chat_messages WHERE speaker != 'system'",
            "cursor_column": "id",
            "key_column": "id",
            "page_rows": 5,
        },
    }
    report = run(mapping_file(tmp_path, source), run_config)
    assert report.counts.delivered == 12
    assert stored_messages(dev_server.url) == expected_from_rows(rows)[0]
    bad = {**source, "sql": {**source["sql"], "url": "postgresql+psycopg://etl:secret@127.0.0.1:9/x"}}
    with pytest.raises(SourceError) as err:
        run(mapping_file(tmp_path, bad, name="bad.yaml"), run_config)
    assert "cannot connect" in str(err.value) and "secret" not in str(err.value)


def test_sql_url_from_a_prefect_secret_block(prefect_server, dev_server, run_config, tmp_path):
    from prefect.blocks.system import Secret

    url = f"sqlite:///{tmp_path / 'chats.db'}"
    eng, t = create_table(url)
    rows = sql_rows(2, 3)
    insert(eng, t, rows)
    Secret(value=url).save("memos-etl-test-chats-url", overwrite=True)
    source = {
        "name": "lite",
        "type": "sql",
        "sql": {
            "url_block": "memos-etl-test-chats-url",
            "table": "chat_messages",
            "cursor_column": "id",
            "key_column": "id",
        },
    }
    assert run(mapping_file(tmp_path, source), run_config).counts.delivered == 6
    missing = {**source, "sql": {**source["sql"], "url_block": "no-such-block"}}
    with pytest.raises(SourceError, match="no-such-block"):
        run(mapping_file(tmp_path, missing, name="missing.yaml"), run_config)


def test_parquet_is_read_in_runs_of_row_groups(tmp_path):
    """Row groups are read a run at a time (memory follows batch_rows, not the file), and small
    row groups still make batches of about batch_rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tasks.extract import row_group_runs

    path = tmp_path / "f.parquet"
    pq.write_table(pa.table({"x": list(range(10_000))}), path, row_group_size=1000)
    meta = pq.ParquetFile(path).metadata
    assert row_group_runs(meta, 2500) == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    assert row_group_runs(meta, 500) == [[i] for i in range(10)]
    assert row_group_runs(meta, 100_000) == [list(range(10))]


def test_every_source_type_is_one_module_with_its_kind():
    """`source.type: X` is tasks/extract/X.py and its KIND: the runner asks the kind, never
    the name (a type without its module fails here, not in a user's run)."""
    import importlib
    import typing

    from core.config.source import SourceConfig
    from tasks.extract import Kind

    names = typing.get_args(SourceConfig.model_fields["type"].annotation)
    assert "files" in names and "sql" in names
    for name in names:
        kind = importlib.import_module(f"tasks.extract.{name}").KIND
        assert isinstance(kind, Kind), name
        assert callable(kind.plan) or kind.plan in ("manifest", "cursor", "versions"), name
