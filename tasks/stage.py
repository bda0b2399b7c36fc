"""Stage: one source file -> mapped, validated rows, split by conversation bucket on disk.

This is the per-file unit of work. Bad rows go to quarantine with their reasons; good rows
are written as Arrow IPC files under `<run dir>/stage/bucket=NNNN/`, one per (file, bucket).
Every message of a conversation lands in the same bucket, so a bucket can later be loaded
on its own, in order, while other buckets load in parallel; and memory stays bounded by a
record batch here and by a bucket when loading.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc

from memos_etl.config import Mapping
from memos_etl.report import Counts
from tasks.extract import SourceFile, iter_batches, read_schema
from tasks.map import MAPPED_SCHEMA, hash_keys, map_batch
from tasks.quarantine import QuarantineWriter, rows_table
from tasks.validate import Validator, split


@dataclass
class StageResult:
    file: str
    counts: Counts
    buckets: list[int]


def bucket_of(table: pa.Table, buckets: int) -> np.ndarray:
    """Conversation bucket per row: a stable hash of (user_id, conversation_id)."""
    ident = pc.binary_join_element_wise(pc.fill_null(table.column("user_id"), ""),
                                        pc.fill_null(table.column("conversation_id"), ""), "\x1f")
    lo, _ = hash_keys(ident.combine_chunks() if isinstance(ident, pa.ChunkedArray) else ident)
    return (lo.view(np.uint64) % np.uint64(buckets)).astype(np.int64)


def stage_file(mapping: Mapping, f: SourceFile, file_index: int, validator: Validator, run_id: str,
               stage_dir: Path, quarantine_dir: Path, buckets: int) -> StageResult:
    counts = Counts()
    mapping.check_columns(read_schema(mapping, f).names, f"file {f.rel}")
    writers: dict[int, ipc.RecordBatchFileWriter] = {}
    quarantine = QuarantineWriter(quarantine_dir, f"extract-{file_index:05d}")
    try:
        for offset, rb in iter_batches(mapping, f):
            mapping.check_columns(rb.schema.names, f"file {f.rel} at row {offset}")
            counts.read += rb.num_rows
            mapped = map_batch(rb, mapping, f.rel, offset)
            reasons = validator.reasons(mapped)
            good, bad = split(mapped, reasons)
            if len(bad):
                raw = pa.Table.from_batches([rb]).take(pa.array(bad)).to_pylist()
                quarantine.write(rows_table(
                    run_id, mapping.source.name, "validate", [f.rel] * len(bad), (bad + offset).tolist(),
                    mapped.column("source_key").take(pa.array(bad)).to_pylist(),
                    [reasons[int(i)] for i in bad], raw))
                counts.quarantined += len(bad)
                for i in bad:
                    counts.reasons.update(reasons[int(i)])
            _write_buckets(good, buckets, stage_dir, file_index, writers)
    finally:
        for w in writers.values():
            w.close()
        quarantine.close()
    return StageResult(f.rel, counts, sorted(writers))


def _write_buckets(good: pa.Table, buckets: int, stage_dir: Path, file_index: int, writers: dict) -> None:
    if good.num_rows == 0:
        return
    ids = bucket_of(good, buckets)
    order = np.argsort(ids, kind="stable")
    good = good.take(pa.array(order))
    ids = ids[order]
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    stops = np.r_[starts[1:], len(ids)]
    for s, e in zip(starts.tolist(), stops.tolist()):
        b = int(ids[s])
        if b not in writers:
            d = stage_dir / f"bucket={b:04d}"
            d.mkdir(parents=True, exist_ok=True)
            writers[b] = ipc.new_file(d / f"part-{file_index:05d}.arrow", MAPPED_SCHEMA)
        writers[b].write_table(good.slice(s, e - s))


def read_bucket(stage_dir: Path, bucket: int) -> pa.Table:
    d = stage_dir / f"bucket={bucket:04d}"
    parts = sorted(d.glob("*.arrow")) if d.exists() else []
    tables = [ipc.open_file(p).read_all() for p in parts]
    return pa.concat_tables(tables) if tables else MAPPED_SCHEMA.empty_table()
