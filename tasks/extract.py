"""Extract: list a source's units of work and stream each as pyarrow record batches.

A unit is a local file, an S3 object, or a cursor range of a SQL table/query
(tasks/extract_sql.py). Memory stays bounded by `source.batch_rows` (Parquet, SQL pages) or
the reader's block size (JSONL, CSV), whatever the size of the unit: nothing here
materialises a whole file.
"""

from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.json as pajson
import pyarrow.parquet as pq

from memos_etl.config import Mapping
from memos_etl.errors import SourceError

_SUFFIXES = {"parquet": (".parquet", ".pq"), "jsonl": (".jsonl", ".json", ".ndjson"), "csv": (".csv", ".tsv"),
             "json": (".json",)}
_BLOCK_BYTES = 8 << 20

#: A source may carry each row's original position in this column (re-drive does): the
#: mapper takes source_row from it instead of counting, and it is never data.
ROW_COLUMN = "__memos_etl_row__"


@dataclass(frozen=True)
class Unit:
    """One unit of extraction: a file, an object, or a range of rows."""

    rel: str  # the stable location recorded in provenance and quarantine
    size: int = 0
    version: str = ""  # changes when the content changes: mtime+size, ETag, or "" (SQL)
    path: str = ""  # what to open: local path or bucket/key
    lo: Any = None  # SQL: cursor range [lo, hi)
    hi: Any = None


@dataclass(frozen=True)
class Slice:
    """A bounded part of a source (backfill partition, replay); reading it never moves the
    nightly cursor. Unit-level bounds pick what is read; row-level ones (hash buckets, users,
    conversations) pick which rows of it are loaded."""

    since: Any = None  # SQL cursor / partition value, inclusive
    until: Any = None  # exclusive
    partitions: tuple[str, ...] = ()  # Hive partition values (files, S3), e.g. ("2024-01-01",)
    units: tuple[str, ...] = ()  # files/objects by their relative name
    buckets: tuple[int, ...] = ()  # conversation hash buckets, out of `of_buckets`
    of_buckets: int = 0
    users: tuple[str, ...] = ()
    conversations: tuple[str, ...] = ()

    @property
    def bounded(self) -> bool:
        return self.since is not None or self.until is not None or bool(self.partitions or self.units) \
            or self.filters_rows

    @property
    def filters_rows(self) -> bool:
        return bool(self.buckets or self.users or self.conversations)

    def spec(self) -> dict:
        """JSON-able form (flow parameters, the ledger); `from_spec` reads it back."""
        from tasks.cursor import encode

        out: dict = {}
        for name in ("since", "until"):
            v = getattr(self, name)
            if v is not None:
                out[name] = json.loads(encode(v))
        for name in ("partitions", "units", "buckets", "users", "conversations"):
            if getattr(self, name):
                out[name] = list(getattr(self, name))
        if self.buckets:
            out["of_buckets"] = self.of_buckets
        return out

    @classmethod
    def from_spec(cls, spec: dict | None) -> "Slice":
        from tasks.cursor import decode

        spec = dict(spec or {})
        for name in ("since", "until"):
            if isinstance(spec.get(name), dict):
                spec[name] = decode(json.dumps(spec[name]))
        for name in ("partitions", "units", "users", "conversations"):
            spec[name] = tuple(str(v) for v in spec.get(name) or ())
        spec["buckets"] = tuple(int(v) for v in spec.get("buckets") or ())
        return cls(**spec)


def row_group_runs(meta, batch_rows: int) -> list[list[int]]:
    """Consecutive row groups of a Parquet file, taken together until they hold batch_rows.
    Read run by run, the reader holds one run's column chunks at a time: memory follows
    batch_rows (and the largest row group), not the file's size; small row groups are still
    read in batches of about batch_rows."""
    runs: list[list[int]] = []
    rows = 0
    for i in range(meta.num_row_groups):
        if not runs or rows >= batch_rows:
            runs.append([])
            rows = 0
        runs[-1].append(i)
        rows += meta.row_group(i).num_rows
    return runs


@dataclass
class FileSource:
    """Parquet, JSONL or CSV files on a local disk or in S3 (via pyarrow's filesystems)."""

    mapping: Mapping
    fs: pafs.FileSystem
    listing: list[Unit] = field(default_factory=list)
    high_water: Any = None  # unused for files: their state is the object manifest

    def units(self, part: Slice) -> list[Unit]:
        key = self.mapping.source.s3.partition_key if self.mapping.source.s3 else None
        out = [u for u in self.listing if _in_slice(u.rel, part, key)]
        return out

    def schema(self, unit: Unit) -> pa.Schema:
        try:
            if self.mapping.source.format == "parquet":
                with self.fs.open_input_file(unit.path) as fh:
                    return pq.read_schema(fh)
            return next(iter(self._open_text(unit, schema=None)), pa.record_batch([])).schema
        except (pa.ArrowException, OSError) as exc:
            where = _bad_json_line(self.fs, unit) if self.mapping.source.format == "jsonl" else None
            raise SourceError(self.mapping.source.name, where or unit.rel, f"cannot read: {exc}") from None

    def iter_batches(self, unit: Unit) -> Iterator[tuple[int, pa.RecordBatch]]:
        """Yield (row offset in the unit, record batch)."""
        offset = 0
        fmt = self.mapping.source.format
        try:
            if self.mapping.nest is not None and fmt in ("jsonl", "json"):
                yield from self._records(unit)
                return
            if fmt == "parquet":
                with self.fs.open_input_file(unit.path) as fh:
                    pf = pq.ParquetFile(fh)
                    for groups in row_group_runs(pf.metadata, self.mapping.source.batch_rows):
                        for rb in pf.iter_batches(batch_size=self.mapping.source.batch_rows, row_groups=groups):
                            if rb.num_rows:
                                yield offset, rb
                                offset += rb.num_rows
                return
            schema = None
            if fmt == "jsonl":
                first = self.schema(unit)
                # types come from the first block; columns null there are read as strings so
                # that a later block with values does not break the stream
                schema = pa.schema([f.with_type(pa.string()) if pa.types.is_null(f.type) else f for f in first])
            for rb in self._open_text(unit, schema):
                if rb.num_rows:
                    yield offset, rb
                    offset += rb.num_rows
        except (pa.ArrowException, OSError) as exc:
            where = _bad_json_line(self.fs, unit) if fmt == "jsonl" else None
            raise SourceError(self.mapping.source.name, where or f"{unit.rel} after row {offset}",
                              f"cannot read: {exc}") from None

    def _records(self, unit: Unit) -> Iterator[tuple[int, pa.RecordBatch]]:
        """Nested sources: one row per record, its JSON text in RECORD_COLUMN, streamed
        (tasks/records.py: JSONL in blocks of whole lines, a JSON array item by item); memory
        does not grow with the file. tasks/nest.py explodes them; a line that is not JSON is
        quarantined there, not fatal here; a JSON document that breaks off stops the unit."""
        from tasks.records import NotJson, json_items, jsonl_blocks

        offset = 0
        with self.fs.open_input_stream(unit.path) as fh:
            batches = json_items(fh) if self.mapping.source.format == "json" else jsonl_blocks(fh)
            try:
                for rb in batches:
                    yield offset, rb
                    offset += rb.num_rows
            except NotJson as exc:
                raise SourceError(self.mapping.source.name, f"{unit.rel} after record {offset}", str(exc)) from None

    def _open_text(self, unit: Unit, schema: pa.Schema | None):
        stream = self.fs.open_input_stream(unit.path)
        if self.mapping.source.format == "jsonl":
            parse = pajson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="infer") \
                if schema is not None else None
            return pajson.open_json(stream, read_options=pajson.ReadOptions(block_size=_BLOCK_BYTES),
                                    parse_options=parse)
        delimiter = "\t" if unit.path.endswith(".tsv") else self.mapping.source.csv_delimiter
        return pacsv.open_csv(
            stream,
            read_options=pacsv.ReadOptions(block_size=_BLOCK_BYTES),
            parse_options=pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True),
            # ids and text stay strings even when they look like numbers ("007" is not 7)
            convert_options=pacsv.ConvertOptions(column_types={c: pa.string() for c in _text_columns(self.mapping)},
                                                 strings_can_be_null=True),
        )


def _text_columns(mapping: Mapping) -> list[str]:
    numeric_fields = {"fields.seq", "fields.chat_time"}
    return [c for c, key in mapping.referenced_columns().items() if key not in numeric_fields]


def _bad_json_line(fs: pafs.FileSystem, unit: Unit) -> str | None:
    """Find the first line that is not JSON, to name it in the error (only after a failure)."""
    try:
        with fs.open_input_stream(unit.path) as fh:
            n, rest = 0, b""
            while True:
                chunk = fh.read(_BLOCK_BYTES)
                lines = (rest + chunk).split(b"\n")
                rest = lines.pop() if chunk else b""
                for line in lines:
                    n += 1
                    if line.strip():
                        try:
                            json.loads(line)
                        except ValueError:
                            return f"{unit.rel} line {n}"
                if not chunk:
                    return None
    except OSError:
        return None


def _partition_value(rel: str, key: str | None) -> str | None:
    for part in rel.split("/"):
        name, eq, value = part.partition("=")
        if eq and (key is None or name == key):
            return value
    return None


def _in_slice(rel: str, part: Slice, key: str | None) -> bool:
    if part.units and rel not in part.units:
        return False
    if part.since is None and part.until is None and not part.partitions:
        return True
    value = _partition_value(rel, key)
    if value is None:
        return False  # a bounded slice of a partitioned layout: unpartitioned files are not in it
    if part.partitions and value not in part.partitions:
        return False
    if part.since is not None and value < _as_partition_text(part.since):
        return False
    if part.until is not None and value >= _as_partition_text(part.until):
        return False
    return True


def _as_partition_text(bound) -> str:
    """A --since/--until bound as partition values spell it: a midnight is its date
    (`2024-03-02`, not `2024-03-02 00:00:00`, which sorts after the day's own value)."""
    if isinstance(bound, datetime):
        if bound.time() == dtime(0) and (bound.tzinfo is None or bound.utcoffset() == timedelta(0)):
            return bound.date().isoformat()
        return bound.isoformat()
    return str(bound)


def list_local(mapping: Mapping) -> list[Unit]:
    """Local files in a stable order: a file, every matching file under a directory, or a glob."""
    root = mapping.resolve_path()
    suffixes = _SUFFIXES[mapping.source.format]
    if os.path.isfile(root):
        paths, base = [root], os.path.dirname(root)
    elif os.path.isdir(root):
        base = root
        paths = [str(p) for p in Path(root).rglob("*") if p.is_file() and p.name.endswith(suffixes)
                 and not any(part.startswith((".", "_")) for part in p.relative_to(root).parts)]
    else:
        paths = [p for p in glob.glob(root, recursive=True) if os.path.isfile(p)]
        base = os.path.dirname(root.split("*", 1)[0]) or "."
        if not paths:
            raise SourceError(mapping.source.name, root, "no such file or directory, and no file matches it as a glob")
    out = []
    for p in sorted(paths):
        st = os.stat(p)
        rel = os.path.relpath(p, base).replace(os.sep, "/")
        out.append(Unit(rel=rel, size=st.st_size, version=f"{st.st_size}:{st.st_mtime_ns}", path=os.path.abspath(p)))
    if not out:
        raise SourceError(mapping.source.name, root, f"no {mapping.source.format} files ({', '.join(suffixes)}) found")
    return out


def open_source(mapping: Mapping):
    """The source a mapping describes, listed (files, objects) or connected (SQL)."""
    kind = mapping.source.type
    if kind == "files":
        return FileSource(mapping, pafs.LocalFileSystem(), list_local(mapping))
    if kind == "s3":
        from tasks.extract_s3 import open_s3

        return open_s3(mapping)
    from tasks.extract_sql import SqlSource

    return SqlSource(mapping)
