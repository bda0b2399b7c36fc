"""Re-drive: after the mapping or the data was fixed, load the quarantined rows that now pass.

Rows quarantined by validation keep their raw source record; re-drive reads them back as a
source of its own (one unit per original file or object, each row keeping its original
position), and runs them through the same map, validate, batch and load steps. The ledger
makes it exactly-once like any run; rows that pass are marked resolved (a Parquet dataset
beside the quarantine) so the next re-drive does not read them again; rows that still fail
are quarantined again by the re-drive run, with today's reasons.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from memos_etl.config import Mapping
from tasks.extract import ROW_COLUMN, Slice, Unit
from tasks.quarantine import read_quarantine

RESOLVED_SCHEMA = pa.schema([("run_id", pa.string()), ("source_file", pa.string()), ("source_row", pa.int64()),
                             ("resolved_by", pa.string()), ("resolved_at", pa.timestamp("us", tz="UTC"))])


def resolved_dir(work_dir: str, source: str) -> Path:
    return Path(work_dir) / "quarantine-resolved" / f"source={source}"


def _resolved(work_dir: str, source: str) -> set[tuple[str, int]]:
    d = resolved_dir(work_dir, source)
    files = sorted(d.glob("*.parquet")) if d.exists() else []
    out: set[tuple[str, int]] = set()
    for f in files:
        for r in pq.read_table(f).select(["source_file", "source_row"]).to_pylist():
            out.add((r["source_file"], r["source_row"]))
    return out


@dataclass
class QuarantineSource:
    """Open quarantined rows of a source, as record batches per original unit."""

    mapping: Mapping
    rows: dict[str, list[tuple[int, dict]]] = field(default_factory=dict)  # unit -> [(row, record)]
    high_water: object = None

    def units(self, part: Slice) -> list[Unit]:
        return [Unit(rel=rel, size=len(rows), version="redrive") for rel, rows in sorted(self.rows.items())]

    def schema(self, unit: Unit) -> pa.Schema:
        return self._batch(unit).schema

    def _batch(self, unit: Unit) -> pa.RecordBatch:
        rows = self.rows[unit.rel]
        records = [{**rec, ROW_COLUMN: row} for row, rec in rows]
        return pa.RecordBatch.from_pylist(records)

    def iter_batches(self, unit: Unit) -> Iterator[tuple[int, pa.RecordBatch]]:
        yield 0, self._batch(unit)

    @property
    def keys(self) -> set[tuple[str, int]]:
        return {(rel, row) for rel, rows in self.rows.items() for row, _ in rows}


def open_quarantine_source(mapping: Mapping, work_dir: str) -> QuarantineSource:
    done = _resolved(work_dir, mapping.source.name)
    q = read_quarantine(work_dir, mapping.source.name)
    rows: dict[str, list[tuple[int, dict]]] = defaultdict(list)
    seen: set[tuple[str, int]] = set()
    for r in q.filter(pa.compute.equal(q.column("stage"), "validate")).to_pylist():
        key = (r["source_file"], r["source_row"])
        if key in done or key in seen:  # a row quarantined by several runs is re-driven once
            continue
        seen.add(key)
        rows[r["source_file"]].append((r["source_row"], json.loads(r["record"])))
    for v in rows.values():
        v.sort(key=lambda t: t[0])
    return QuarantineSource(mapping, dict(rows))


def mark_resolved(work_dir: str, source: str, run_id: str, keys: set[tuple[str, int]]) -> None:
    if not keys:
        return
    d = resolved_dir(work_dir, source)
    d.mkdir(parents=True, exist_ok=True)
    now = datetime.now(timezone.utc)
    ordered = sorted(keys)
    pq.write_table(pa.table({"run_id": [run_id] * len(ordered), "source_file": [k[0] for k in ordered],
                             "source_row": [k[1] for k in ordered], "resolved_by": [run_id] * len(ordered),
                             "resolved_at": [now] * len(ordered)}, schema=RESOLVED_SCHEMA), d / f"{run_id}.parquet")
