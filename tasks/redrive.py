"""Re-drive: after the mapping or the data was fixed, load the quarantined rows that now pass.

Rows quarantined by validation keep their raw source record; re-drive reads them back as a
source of its own (one unit per original file or object, each row keeping its original
position), and runs them through the same map, validate, batch and load steps. The ledger
makes it exactly-once like any run; rows that pass are marked resolved (a Parquet dataset
beside the quarantine) so the next re-drive does not read them again; rows that still fail
are quarantined again by the re-drive run, with today's reasons.

A nested source's row is one message of a record: its raw record is the exploded row (the
record's fields and the message's), and several messages share the record's `source_row`, so
a row is known by (file, row, position) and is not exploded a second time. Rows quarantined
before validation (`nest`: the record's shape; `extract`: an unreadable unit) have no mapped
row to re-validate: re-drive counts them in its notes and leaves them for a fixed file.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.parquet as pq

from core.config import Mapping
from tasks.extract import ROW_COLUMN, Slice, Unit
from tasks.quarantine import POSITION, RowKey, read_quarantine, resolved, resolved_dir, row_key

RESOLVED_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("source_file", pa.string()),
        ("source_row", pa.int64()),
        ("resolved_by", pa.string()),
        ("resolved_at", pa.timestamp("us", tz="UTC")),
        ("position", pa.int64()),
    ]
)


@dataclass
class QuarantineSource:
    """Open quarantined rows of a source, as record batches per original unit."""

    mapping: Mapping
    rows: dict[str, list[tuple[int, dict]]] = field(default_factory=dict)  # unit -> [(row, record)]
    high_water: object = None
    not_redriven: dict[str, int] = field(default_factory=dict)  # stage -> open rows re-drive cannot take

    @property
    def exploded(self) -> bool:
        """A nested source's rows are its messages, already exploded: staging must not explode them again."""
        return self.mapping.nest is not None

    @property
    def keys(self) -> set[RowKey]:
        return {(rel, row, rec.get(POSITION)) for rel, rows in self.rows.items() for row, rec in rows}

    def units(self, part: Slice) -> list[Unit]:
        return [Unit(rel=rel, size=len(rows), version="redrive") for rel, rows in sorted(self.rows.items())]

    def schema(self, unit: Unit) -> pa.Schema:
        return self._batch(unit).schema

    def _batch(self, unit: Unit) -> pa.RecordBatch:
        rows = self.rows[unit.rel]
        records = [{**rec, ROW_COLUMN: row} for row, rec in rows]
        return pa.RecordBatch.from_pylist(records)

    def iter_batches(self, unit: Unit, bad: list | None = None) -> Iterator[tuple[int, pa.RecordBatch]]:
        yield 0, self._batch(unit)


def open_quarantine_source(mapping: Mapping, work_dir: str) -> QuarantineSource:
    done = resolved(work_dir, mapping.source.name)
    q = read_quarantine(work_dir, mapping.source.name)
    rows: dict[str, list[tuple[int, dict]]] = defaultdict(list)
    seen: set[RowKey] = set()
    not_redriven: dict[str, int] = defaultdict(int)
    for r in q.to_pylist():
        r["record"] = json.loads(r["record"]) if r["record"] else None  # parsed once, for the key and the row
        key = row_key(r)
        if key in done or key in seen:  # a row quarantined by several runs is re-driven once
            continue
        seen.add(key)
        if r["stage"] != "validate":
            not_redriven[r["stage"]] += 1
            continue
        rows[r["source_file"]].append((r["source_row"], r["record"]))
    for v in rows.values():
        v.sort(key=lambda t: (t[0], t[1].get(POSITION) or 0))
    return QuarantineSource(mapping, dict(rows), not_redriven=dict(not_redriven))


def mark_resolved(work_dir: str, source: str, run_id: str, keys: set[RowKey]) -> None:
    if not keys:
        return
    d = resolved_dir(work_dir, source)
    d.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    ordered = sorted(keys, key=lambda k: (k[0], k[1], -1 if k[2] is None else k[2]))
    pq.write_table(
        pa.table(
            {
                "run_id": [run_id] * len(ordered),
                "source_file": [k[0] for k in ordered],
                "source_row": [k[1] for k in ordered],
                "resolved_by": [run_id] * len(ordered),
                "resolved_at": [now] * len(ordered),
                "position": [k[2] for k in ordered],
            },
            schema=RESOLVED_SCHEMA,
        ),
        d / f"{run_id}.parquet",
    )
