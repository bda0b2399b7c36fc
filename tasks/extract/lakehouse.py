"""Table formats found where files were expected.

A Delta Lake or Iceberg table's folder holds more than the table: data files that later
versions removed, change-data files, metadata. Read as a folder of Parquet it gives deleted
rows and every old version of an updated one. A `files` or `s3` source whose path is, holds,
or is inside such a table stops before reading, naming the table and the source type that
reads it. Pure functions over names: the callers list."""

from __future__ import annotations

import posixpath
import re

from core.errors import SourceError

#: what marks a table's root: Delta's log folder, Iceberg's metadata files
DELTA_LOG = "_delta_log"
_ICEBERG_METADATA = re.compile(r"(^|/)metadata/(v?\d+[-.][^/]*|[^/]*)\.metadata\.json$")

_HOW = {
    "delta": "Read it as a table with source.type: delta and source.delta.table (its current rows, "
    "then its change data feed)",
    "iceberg": "Read it as a table with source.type: iceberg and source.iceberg.location (this folder, "
    "no catalog needed) or source.iceberg.table with its catalog: its current snapshot's rows, then "
    "what later snapshots add and delete",
}


def table_in(names: list[str]) -> tuple[str, str] | None:
    """(format, the table's root) when one of `names` (slash-separated, relative to where the
    source points) is a table's marker: a `_delta_log/` entry or an Iceberg metadata file."""
    for name in names:
        parts = name.split("/")
        if DELTA_LOG in parts[:-1] or parts[-1] == DELTA_LOG:
            return "delta", "/".join(parts[: parts.index(DELTA_LOG)]) or "."
        m = _ICEBERG_METADATA.search(name)
        if m:
            root = name[: m.start()] if m.group(1) else ""
            return "iceberg", root.rstrip("/") or "."
    return None


def refuse(source: str, where: str, found: tuple[str, str]) -> SourceError:
    """The error that stops a files/s3 source pointed at (or into) a table."""
    kind, root = found
    table = where.rstrip("/") if root == "." else posixpath.join(where.rstrip("/"), root)
    label = {"delta": "a Delta Lake table", "iceberg": "an Apache Iceberg table"}[kind]
    return SourceError(
        source,
        where,
        f"{table} is {label}: its folder also holds files that older versions removed, so reading it "
        f"as files would load deleted and superseded rows. Nothing was read. {_HOW[kind]} "
        "(docs/sources.md#lakehouse-tables)",
    )
