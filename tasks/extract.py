"""Extract: find a source's files and stream them as pyarrow record batches.

Memory stays bounded by `source.batch_rows` (Parquet) or the reader's block size (JSONL, CSV)
whatever the file size: nothing here materialises a whole file.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from memos_etl.config import Mapping
from memos_etl.errors import SourceError

_SUFFIXES = {"parquet": (".parquet", ".pq"), "jsonl": (".jsonl", ".json", ".ndjson"), "csv": (".csv", ".tsv")}
_BLOCK_BYTES = 8 << 20


@dataclass(frozen=True)
class SourceFile:
    path: str  # absolute path to open
    rel: str  # path relative to the source root: the stable location recorded in provenance
    size: int
    mtime_ns: int


def list_files(mapping: Mapping) -> list[SourceFile]:
    """The source's files in a stable order (a file, every matching file under a directory, or a glob)."""
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
        out.append(SourceFile(os.path.abspath(p), os.path.relpath(p, base), st.st_size, st.st_mtime_ns))
    if not out:
        raise SourceError(mapping.source.name, root, f"no {mapping.source.format} files ({', '.join(suffixes)}) found")
    return out


def read_schema(mapping: Mapping, f: SourceFile) -> pa.Schema:
    """The columns of one file, read cheaply (Parquet footer, or the first block of text)."""
    try:
        if mapping.source.format == "parquet":
            return pq.read_schema(f.path)
        return next(iter(_open_text(mapping, f, schema=None)), pa.record_batch([])).schema
    except SourceError:
        raise
    except (pa.ArrowException, OSError) as exc:
        raise SourceError(mapping.source.name, f.rel, f"cannot read schema: {exc}") from None


def _open_text(mapping: Mapping, f: SourceFile, schema: pa.Schema | None):
    if mapping.source.format == "jsonl":
        parse = pajson.ParseOptions(
            # types come from the first block; columns null there are read as strings so that a
            # later block with values does not break the stream
            explicit_schema=schema, unexpected_field_behavior="infer") if schema is not None else None
        return pajson.open_json(f.path, read_options=pajson.ReadOptions(block_size=_BLOCK_BYTES),
                                parse_options=parse)
    delimiter = "\t" if f.path.endswith(".tsv") else mapping.source.csv_delimiter
    text_cols = _text_columns(mapping)
    return pacsv.open_csv(
        f.path,
        read_options=pacsv.ReadOptions(block_size=_BLOCK_BYTES),
        parse_options=pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True),
        # ids and text stay strings even when they look like numbers ("007" is not 7)
        convert_options=pacsv.ConvertOptions(column_types={c: pa.string() for c in text_cols},
                                             strings_can_be_null=True),
    )


def _text_columns(mapping: Mapping) -> list[str]:
    numeric_fields = {"fields.seq", "fields.chat_time"}
    return [c for c, key in mapping.referenced_columns().items() if key not in numeric_fields]


def iter_batches(mapping: Mapping, f: SourceFile) -> Iterator[tuple[int, pa.RecordBatch]]:
    """Yield (row offset in file, record batch) for one file."""
    offset = 0
    try:
        if mapping.source.format == "parquet":
            reader = pq.ParquetFile(f.path)
            batches = reader.iter_batches(batch_size=mapping.source.batch_rows)
        elif mapping.source.format == "jsonl":
            first = read_schema(mapping, f)
            fixed = pa.schema([fld.with_type(pa.string()) if pa.types.is_null(fld.type) else fld for fld in first])
            batches = _open_text(mapping, f, fixed)
        else:
            batches = _open_text(mapping, f, None)
        for rb in batches:
            if rb.num_rows:
                yield offset, rb
                offset += rb.num_rows
    except (pa.ArrowException, OSError) as exc:
        raise SourceError(mapping.source.name, f"{f.rel} after row {offset}", f"cannot read: {exc}") from None
