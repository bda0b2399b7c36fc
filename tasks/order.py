"""Order: a conversation bucket in the loader's order (tasks.batch.SORT_KEYS) from sorted runs
on disk, for buckets too large to sort in memory (one conversation of millions of messages).

The staged rows are dealt into hash partitions of their message key, each small enough to
sort in memory: every copy of a key lands in one partition, so what the caller does per key
(drop duplicates, look up deleted rows) gives what it gives on the whole bucket. Each
partition is sorted, handed to the caller, and written back as a sorted run; `ordered()`
then merges the runs into slices of bounded size. Memory is a partition, or a few batches
of each run, never the bucket.

The order is exactly `read_bucket(...).sort_by(SORT_KEYS)`: Arrow's sort is stable, so rows
with equal keys keep the order in which read_bucket concatenates them (part files by name,
rows as written); each row carries that place (POS) as the last sort key here.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc

from core.memory import release_unused
from tasks.batch import SORT_KEYS

POS = "_pos"  # a row's place in the bucket as read_bucket concatenates it
ORDER_KEYS = SORT_KEYS + [(POS, "ascending")]
_KEY_COLUMNS = [k for k, _ in ORDER_KEYS]


def bucket_parts(stage_dir: Path, bucket: int) -> list[Path]:
    """A bucket's staged files, in the order read_bucket concatenates them."""
    d = stage_dir / f"bucket={bucket:04d}"
    return sorted(d.glob("*.arrow")) if d.exists() else []


def _batches(path: Path) -> Iterator[pa.RecordBatch]:
    """The record batches of an Arrow IPC file, one at a time, read (not memory-mapped: the
    pages of a mapped file would count as this process's memory)."""
    with pa.OSFile(str(path)) as f:
        reader = ipc.open_file(f)
        for i in range(reader.num_record_batches):
            yield reader.get_batch(i)


class SortedRuns:
    """A bucket as sorted runs on disk. `conversations`: its (user_id, conversation_id) pairs
    in the bucket's order; `rows`: the rows the caller kept."""

    def __init__(
        self, tmp: Path, runs: list[Path], rows: int, conversations: list[tuple], chunk_rows: int, row_bytes: float
    ):
        self.tmp, self.runs, self.rows, self.conversations = tmp, runs, rows, conversations
        self.chunk_rows, self.row_bytes = chunk_rows, row_bytes  # rows a run is read in; staged bytes a row

    def chunks(self) -> Iterator[pa.Table]:
        """Every row, a batch at a time, run after run: not in order (for facts about whole
        conversations that do not depend on it)."""
        for path in self.runs:
            for rb in _batches(path):
                yield pa.Table.from_batches([rb]).drop_columns([POS])

    def ordered(self, max_rows: int) -> Iterator[pa.Table]:
        """Every row in order, in slices of at most `max_rows`. Each step sorts what the runs'
        buffers hold and gives out the rows up to the smallest last row among runs that still
        have rows on disk: nothing still on disk can come before those."""
        runs = [_Run(p, self.chunk_rows) for p in self.runs]
        while True:
            live = [r for r in runs if r.buf.num_rows]
            if not live:
                return
            lens = np.array([r.buf.num_rows for r in live], dtype=np.int64)
            # one copy of what the buffers hold, which then hold slices of it (the batches they
            # held are freed): the slices below are taken from one array, not from chunks
            pool = pa.concat_tables([r.buf for r in live]).combine_chunks()
            at = np.r_[0, np.cumsum(lens)]
            for i, r in enumerate(live):
                r.buf = pool.slice(int(at[i]), int(lens[i]))
            idx = pc.sort_indices(pool.select(_KEY_COLUMNS), sort_keys=ORDER_KEYS).to_numpy()
            waiting = [i for i, r in enumerate(live) if not r.done]
            if waiting:
                rank = np.empty(len(idx), dtype=np.int64)
                rank[idx] = np.arange(len(idx))
                last = at[1:] - 1  # each buffer's last (largest) row in the pool
                cut = int(rank[last[waiting]].min()) + 1
            else:
                cut = len(idx)
            for start in range(0, cut, max_rows):
                yield pool.take(pa.array(idx[start : min(cut, start + max_rows)])).drop_columns([POS])
            taken = np.bincount(np.repeat(np.arange(len(live)), lens)[idx[:cut]], minlength=len(live))
            del pool
            for r, n in zip(live, taken.tolist()):
                r.consume(n)  # a buffer's rows given out are its first ones: it is sorted
            release_unused()

    def close(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)
        release_unused()


class _Run:
    """One sorted run being merged: the rows read and not yet given out, topped up from disk
    a batch at a time."""

    def __init__(self, path: Path, chunk_rows: int):
        self._it = _batches(path)
        self.chunk_rows = chunk_rows
        self.done = False
        self.buf = pa.table({})
        self._fill()

    def _fill(self) -> None:
        tables = [self.buf] if self.buf.num_columns else []
        held = self.buf.num_rows
        while not self.done and held < self.chunk_rows:
            rb = next(self._it, None)
            if rb is None:
                self.done = True
                break
            tables.append(pa.Table.from_batches([rb]))
            held += rb.num_rows
        self.buf = pa.concat_tables(tables) if tables else self.buf

    def consume(self, n: int) -> None:
        self.buf = self.buf.slice(n)
        self._fill()


def sort_runs(parts: list[Path], tmp: Path, run_bytes: int, prepare: Callable[[pa.Table], pa.Table]) -> SortedRuns:
    """Deal the rows of `parts` (read_bucket's files) into hash partitions of their key of
    about `run_bytes`, sort each by SORT_KEYS, give it to `prepare` (which may drop rows and
    must keep the order: it sees every copy of a key at once) and write it as a sorted run
    under `tmp`. The runs' buffers together hold at most about half `run_bytes` when merged."""
    tmp.mkdir(parents=True, exist_ok=True)
    total = sum(p.stat().st_size for p in parts)
    n = max(2, -(-total // max(1, run_bytes)))
    paths = [tmp / f"hash-{i:05d}.arrow" for i in range(n)]
    writers: dict[int, ipc.RecordBatchFileWriter] = {}
    pos, schema = 0, None
    try:
        for part in parts:
            for rb in _batches(part):
                t = pa.Table.from_batches([rb])
                t = t.append_column(POS, pa.array(np.arange(pos, pos + t.num_rows, dtype=np.int64)))
                pos += t.num_rows
                schema = t.schema
                h = (t.column("key_lo").to_numpy().view(np.uint64) % np.uint64(n)).astype(np.int64)
                order = np.argsort(h, kind="stable")
                t, h = t.take(pa.array(order)), h[order]
                starts = np.flatnonzero(np.r_[True, h[1:] != h[:-1]])
                for s, e in zip(starts.tolist(), np.r_[starts[1:], len(h)].tolist()):
                    k = int(h[s])
                    if k not in writers:
                        writers[k] = ipc.new_file(str(paths[k]), schema)
                    writers[k].write_table(t.slice(s, e - s))
                del t
    finally:
        for w in writers.values():
            w.close()
    release_unused()
    row_bytes = total / pos if pos else 1.0
    chunk_rows = max(64, int(run_bytes / 4 / n / row_bytes))  # merging holds 1-2 chunks of each run
    runs, rows, pairs = [], 0, []
    for k in sorted(writers):
        with pa.OSFile(str(paths[k])) as f:
            t = ipc.open_file(f).read_all()
        paths[k].unlink()
        t = prepare(t.sort_by(ORDER_KEYS))
        if t.num_rows:
            run = tmp / f"run-{k:05d}.arrow"
            with ipc.new_file(str(run), t.schema) as w:
                w.write_table(t, max_chunksize=chunk_rows)
            runs.append(run)
            rows += t.num_rows
            pairs.append(t.group_by(["user_id", "conversation_id"]).aggregate([]))
        del t
        release_unused()
    convs: list[tuple] = []
    if pairs:
        both = pa.concat_tables(pairs).group_by(["user_id", "conversation_id"]).aggregate([])
        both = both.sort_by([("user_id", "ascending"), ("conversation_id", "ascending")])
        convs = list(zip(both.column("user_id").to_pylist(), both.column("conversation_id").to_pylist()))
    return SortedRuns(tmp, runs, rows, convs, chunk_rows, row_bytes)
