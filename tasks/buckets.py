"""The staging area of a run: mapped, validated rows split by conversation bucket into Arrow
IPC files (`<stage_dir>/bucket=NNNN/part-<unit>.arrow`), written by the stage and read back,
one bucket at a time, by the loader. A conversation's rows are all in one bucket."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc

from tasks.map import MAPPED_SCHEMA, hash_keys


def bucket_of(table: pa.Table, buckets: int) -> np.ndarray:
    """Conversation bucket per row: a stable hash of (user_id, conversation_id)."""
    ident = pc.binary_join_element_wise(
        pc.fill_null(table.column("user_id"), ""), pc.fill_null(table.column("conversation_id"), ""), "\x1f"
    )
    lo, _ = hash_keys(ident.combine_chunks() if isinstance(ident, pa.ChunkedArray) else ident)
    return (lo.view(np.uint64) % np.uint64(buckets)).astype(np.int64)


def write_buckets(good: pa.Table, buckets: int, stage_dir: Path, file_index: int, writers: dict) -> None:
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
