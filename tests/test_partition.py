"""Splitting a backfill range into parts (tasks/partition.py): pure functions on real listings."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import yaml

from core.config import load_mapping
from core.errors import ConfigError
from tasks.extract import Slice, open_source
from tasks.partition import backfill_id, split
from tests.helpers import SAMPLE_MAPPING, chat_rows, write_jsonl


def _hive(tmp_path):
    for day in ("2024-03-01", "2024-03-02", "2024-03-03", "2024-03-04"):
        write_jsonl(tmp_path / "data" / f"dt={day}" / "part.jsonl", chat_rows(1, 2, prefix=day))
    body = yaml.safe_load(SAMPLE_MAPPING.read_text())
    body["source"]["path"] = str(tmp_path / "data")
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(body))
    m = load_mapping(tmp_path / "m.yaml")
    return m, open_source(m)


def test_hive_partitions_grouped_and_bounded(tmp_path):
    m, src = _hive(tmp_path)
    parts = split(m, src)  # auto: a Hive layout splits by partition value
    assert [p.key for p in parts] == [
        "partition:2024-03-01",
        "partition:2024-03-02",
        "partition:2024-03-03",
        "partition:2024-03-04",
    ]
    parts = split(m, src, "partition", since="2024-03-02", until="2024-03-04", every=2)
    assert [(p.key, p.slice.partitions) for p in parts] == [
        ("partition:2024-03-02..2024-03-03", ("2024-03-02", "2024-03-03"))
    ]
    files = split(m, src, "file", since="2024-03-03")
    assert [p.slice.units for p in files] == [("dt=2024-03-03/part.jsonl",), ("dt=2024-03-04/part.jsonl",)]
    with pytest.raises(ConfigError, match="nothing of source"):
        split(m, src, "partition", since="2025-01-01")


def test_cursor_ranges_and_stable_ids(tmp_path):
    sql = {
        "source": {
            "name": "pg",
            "type": "sql",
            "sql": {"url": "sqlite://", "table": "t", "cursor_column": "at", "key_column": "id"},
        },
        "fields": {"user_id": "u", "conversation_id": "c", "role": "r", "content": "x"},
    }
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(sql))
    m = load_mapping(tmp_path / "s.yaml")
    parts = split(m, None, since="2024-01-01", until="2024-01-03T12:00:00", every="1d")
    assert [(p.slice.since, p.slice.until) for p in parts] == [
        (datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 2, tzinfo=UTC)),
        (datetime(2024, 1, 2, tzinfo=UTC), datetime(2024, 1, 3, tzinfo=UTC)),
        (datetime(2024, 1, 3, tzinfo=UTC), datetime(2024, 1, 3, 12, tzinfo=UTC)),
    ]
    ids = split(m, None, since="0", until="1000", every="300")
    assert [(p.slice.since, p.slice.until) for p in ids] == [(0, 300), (300, 600), (600, 900), (900, 1000)]
    assert Slice.from_spec(ids[1].slice.spec()) == ids[1].slice  # what the ledger and flow parameters carry
    assert Slice.from_spec(parts[0].slice.spec()) == parts[0].slice
    with pytest.raises(ConfigError, match="needs both"):
        split(m, None, since="2024-01-01")
    with pytest.raises(ConfigError, match="not a duration"):
        split(m, None, since="2024-01-01", until="2024-02-01", every="fortnight")
    assert backfill_id("s", "t", "cursor", "a", "b", "1d", 16) == backfill_id("s", "t", "cursor", "a", "b", "1d", 16)
    assert backfill_id("s", "t", "cursor", "a", "b", "1d", 16) != backfill_id("s", "t", "cursor", "a", "c", "1d", 16)
