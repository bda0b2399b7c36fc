"""Quarantine: rows (or whole request batches) that must not be sent, each with its reasons.

Stored as a Parquet dataset under `<work_dir>/quarantine/source=<name>/run=<run_id>/`, one
file per extracted file or loaded bucket, so it can be queried with any Parquet reader and
re-driven later. Each row keeps the raw source record as JSON and where it came from.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

QUARANTINE_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("source", pa.string()),
        ("stage", pa.string()),  # extract | nest | validate | load
        ("source_file", pa.string()),
        ("source_row", pa.int64()),
        ("source_key", pa.string()),
        ("reasons", pa.list_(pa.string())),
        ("record", pa.string()),  # the raw source row (validate) or the mapped message (load), as JSON
        ("quarantined_at", pa.timestamp("us", tz="UTC")),
    ]
)


#: how much of a bad record's raw text a quarantine row keeps (an oversized one is never held whole)
PREVIEW_CHARS = 4096


class Reason(str):
    """A reason in our words, carrying the short kind a report groups it by ("not JSON",
    "too long"): the words hold the detail (sizes, bytes, names), the kind does not."""

    kind: str

    def __new__(cls, kind: str, text: str) -> Reason:
        obj = super().__new__(cls, text)
        obj.kind = kind
        return obj


@dataclass
class BadRow:
    """A record a reader could not turn into a row (a JSONL line that is not JSON, a CSV row
    with the wrong field count, an oversized record, a corrupt Parquet row group). The rest of
    its unit is read as usual; this one is quarantined with its place and reason."""

    row: int  # the record's number in its unit, counting bad ones (a good row's source_row)
    where: str  # `line 12`, `row 7`, `row group 3`, `record 5`: in the file's own terms
    reason: str  # in our words, the detail after a colon
    raw: str = ""  # the record's text (at most PREVIEW_CHARS)
    rows: int = 1  # source rows it stands for (a row group: all of its rows)

    @property
    def kind(self) -> str:
        return getattr(self.reason, "kind", self.reason)

    def record(self) -> dict:
        return {"where": self.where, "raw": self.raw[:PREVIEW_CHARS], "rows": self.rows}


def bad_rows_table(run_id: str, source: str, unit_rel: str, bad: list[BadRow]) -> pa.Table:
    return rows_table(
        run_id,
        source,
        "extract",
        [unit_rel] * len(bad),
        [b.row for b in bad],
        [None] * len(bad),
        [[f"{b.where}: {b.reason}"] for b in bad],
        [b.record() for b in bad],
    )


def quarantine_dir(work_dir: str, source: str, run_id: str) -> Path:
    return Path(work_dir) / "quarantine" / f"source={source}" / f"run={run_id}"


def rows_table(
    run_id: str,
    source: str,
    stage: str,
    source_file: list[str],
    source_row: list[int],
    source_key: list[str | None],
    reasons: list[list[str]],
    records: list[dict],
) -> pa.Table:
    now = datetime.now(UTC)
    return pa.table(
        {
            "run_id": [run_id] * len(reasons),
            "source": [source] * len(reasons),
            "stage": [stage] * len(reasons),
            "source_file": source_file,
            "source_row": source_row,
            "source_key": source_key,
            "reasons": reasons,
            "record": [json.dumps(r, default=str, ensure_ascii=False) for r in records],
            "quarantined_at": [now] * len(reasons),
        },
        schema=QUARANTINE_SCHEMA,
    )


def private_dir(directory: Path) -> None:
    """Create `directory` and make it and its parents up to the quarantine root owner-only."""
    directory.mkdir(parents=True, exist_ok=True)
    d = directory
    for _ in range(3):  # run=<id>, source=<name>, quarantine/ (or a dry run's own folder)
        try:
            os.chmod(d, 0o700)
        except OSError:
            break
        if d.name.startswith("quarantine") or d.name.endswith("-quarantine"):
            break
        d = d.parent


class QuarantineWriter:
    """Appends quarantine rows to one Parquet file, opened on the first row."""

    def __init__(self, directory: Path, part: str):
        self.path = directory / f"{part}.parquet"
        self._writer: pq.ParquetWriter | None = None
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        if self._writer is None:
            private_dir(self.path.parent)
            # raw source rows (personal data included, redaction or not): readable by the owner only
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600))
            self._writer = pq.ParquetWriter(self.path, QUARANTINE_SCHEMA)
        self._writer.write_table(table)
        self.rows += table.num_rows

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def read_quarantine(work_dir: str, source: str | None = None, run_id: str | None = None) -> pa.Table:
    """Every quarantined row, optionally of one source and/or run."""
    root = Path(work_dir) / "quarantine"
    files = sorted(str(p) for p in root.rglob("*.parquet")) if root.exists() else []
    if source:
        files = [f for f in files if f"{os.sep}source={source}{os.sep}" in f]
    if run_id:
        files = [f for f in files if f"{os.sep}run={run_id}{os.sep}" in f]
    if not files:
        return pa.Table.from_batches([], schema=QUARANTINE_SCHEMA)  # (Schema.empty_table imports pandas)
    return pa.concat_tables(_read(f) for f in files)


def _read(path: str) -> pa.Table:
    """One quarantine file in QUARANTINE_SCHEMA (a column it lacks is null). Read with
    ParquetFile, not read_table: that goes through pyarrow.dataset, which imports pandas,
    and `status` and `quarantine list` stay light."""
    t = pq.ParquetFile(path).read()
    cols = [
        t.column(f.name).cast(f.type) if f.name in t.column_names else pa.nulls(t.num_rows, f.type)
        for f in QUARANTINE_SCHEMA
    ]
    return pa.Table.from_arrays(cols, schema=QUARANTINE_SCHEMA)


#: the message's place in its record (a column of nest's exploded rows; defined here, the lighter module)
POSITION = "position"

#: a quarantined row: (source_file, source_row, position in its record; None when not nested)
RowKey = tuple[str, int, "int | None"]


def row_key(row: dict) -> RowKey:
    """The key of a quarantine row (a dict with source_file, source_row and its record, as JSON text or parsed)."""
    position = None
    if row.get("record"):
        rec = json.loads(row["record"]) if isinstance(row["record"], str) else row["record"]
        position = rec.get(POSITION) if isinstance(rec, dict) else None
    return row["source_file"], row["source_row"], position


def resolved_dir(work_dir: str, source: str) -> Path:
    return Path(work_dir) / "quarantine-resolved" / f"source={source}"


def resolved(work_dir: str, source: str) -> set[RowKey]:
    d = resolved_dir(work_dir, source)
    files = sorted(d.glob("*.parquet")) if d.exists() else []
    out: set[RowKey] = set()
    for f in files:
        t = pq.read_table(f)
        positions = t.column("position").to_pylist() if "position" in t.schema.names else [None] * t.num_rows
        for file, row, pos in zip(t.column("source_file").to_pylist(), t.column("source_row").to_pylist(), positions):
            out.add((file, row, pos))
    return out
