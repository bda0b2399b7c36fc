"""Units of extraction and slices of a source: what a run reads, named the same way by every
reader (files, S3 objects, SQL cursor ranges), the ledger's manifest and backfill parts."""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from datetime import time as dtime
from typing import Any

from core.config import Mapping
from core.errors import TableReadError
from tasks.extract.streams import ZIP, strip_compression

#: file name endings of each file format, compression extensions aside
SUFFIXES = {
    "parquet": (".parquet", ".pq"),
    "jsonl": (".jsonl", ".json", ".ndjson"),
    "csv": (".csv", ".tsv"),
    "json": (".json",),
    "whatsapp": (".txt",),
    "slack": (".json",),
    # every file: one MemOS cannot read is skipped with its reason, not passed over
    "documents": ("",),
}


@dataclass(frozen=True)
class Unit:
    """One unit of extraction: a file, an object, or a range of rows."""

    rel: str  # the stable location recorded in provenance and quarantine
    size: int = 0
    version: str = ""  # changes when the content changes: mtime+size, ETag, or "" (SQL)
    path: str = ""  # what to open: local path or bucket/key (a .zip: the archive)
    member: str = ""  # a member of the .zip archive at `path`
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
        return (
            self.since is not None or self.until is not None or bool(self.partitions or self.units) or self.filters_rows
        )

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
                out[name] = json.loads(encode(v) or "null")  # v is not None: encode gives its text
        for name in ("partitions", "units", "buckets", "users", "conversations"):
            if getattr(self, name):
                out[name] = list(getattr(self, name))
        if self.buckets:
            out["of_buckets"] = self.of_buckets
        return out

    @classmethod
    def from_spec(cls, spec: dict | None) -> Slice:
        from tasks.cursor import decode

        spec = dict(spec or {})
        for name in ("since", "until"):
            if isinstance(spec.get(name), dict):
                spec[name] = decode(json.dumps(spec[name]))
        for name in ("partitions", "units", "users", "conversations"):
            spec[name] = tuple(str(v) for v in spec.get(name) or ())
        spec["buckets"] = tuple(int(v) for v in spec.get("buckets") or ())
        return cls(**spec)


def table_slice(units: list[Unit], part: Slice, mapping: Mapping, where: str) -> list[Unit]:
    """A table's data files in a slice, by their Hive partition folder (since/until,
    partitions) or by name. A file the slice names that the table no longer holds (compacted
    or rewritten since the backfill was planned: its rows are in other files now) stops the
    part with TableReadError: it is never loaded empty."""
    held = {u.rel for u in units}
    gone = [rel for rel in part.units if rel not in held]
    if gone:
        more = f" and {len(gone) - 1} more" if len(gone) > 1 else ""
        raise TableReadError(
            mapping.source.name,
            where,
            f"data file {gone[0]}{more} of this backfill part is no longer in the table: the table was "
            "rewritten (compacted, updated) since the backfill was planned, so its rows are in other files. "
            "Plan the backfill again (other --since/--until, or --by partition), or sync",
        )
    return [u for u in units if in_slice(u.rel, part, None)]


def partition_value(rel: str, key: str | None) -> str | None:
    for part in rel.split("/"):
        name, eq, value = part.partition("=")
        if eq and (key is None or name == key):
            return value
    return None


def in_slice(rel: str, part: Slice, key: str | None) -> bool:
    if part.units and rel not in part.units:
        return False
    if part.since is None and part.until is None and not part.partitions:
        return True
    value = partition_value(rel, key)
    if value is None:
        return False  # a bounded slice of a partitioned layout: unpartitioned files are not in it
    if part.partitions and value not in part.partitions:
        return False
    if part.since is not None and value < as_partition_text(part.since):
        return False
    if part.until is not None and value >= as_partition_text(part.until):
        return False
    return True


def as_partition_text(bound) -> str:
    """A --since/--until bound as partition values spell it: a midnight is its date
    (`2024-03-02`, not `2024-03-02 00:00:00`, which sorts after the day's own value)."""
    if isinstance(bound, datetime):
        if bound.time() == dtime(0) and (bound.tzinfo is None or bound.utcoffset() == timedelta(0)):
            return bound.date().isoformat()
        return bound.isoformat()
    return str(bound)


def suffixes(fmt: str) -> tuple[str, ...]:
    return SUFFIXES[fmt]


def wanted(name: str, fmt: str, members: str | None = None, rel: str | None = None) -> bool:
    """A file or object a source of this format reads: by its name, compression extensions
    aside (`day.jsonl.gz`), or a .zip archive of members (text formats). `members`, the glob
    that picks an archive's members, picks the files of a folder the same way (an export
    unzipped: `conversations.json`, not `users.json`), on the path under the folder (`rel`)
    or the base name."""
    lower = name.lower()
    if lower.endswith(ZIP):
        return fmt != "parquet"
    if members is not None:
        base = name.replace("\\", "/").rsplit("/", 1)[-1]
        return fnmatch.fnmatch(rel or base, members) or fnmatch.fnmatch(base, members)
    return strip_compression(lower).endswith(SUFFIXES[fmt])
