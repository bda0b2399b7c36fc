"""Files and objects: list a local folder (S3 listing is s3.py) and stream each unit as pyarrow
record batches. Memory stays bounded by `source.batch_rows` (Parquet, SQL pages) or
the reader's block size (JSONL, CSV), whatever the size of the unit: nothing here
materialises a whole file.
"""

from __future__ import annotations

import glob
import os
import posixpath
import stat
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from core.config import Mapping
from core.errors import NotJson, NotJsonl, RowTooLong, SourceError, WrongFormat

# a source may carry each row's original position in ROW_COLUMN (re-drive does, and a JSONL
# block with bad lines does): the mapper takes source_row from it instead of counting; never data
from tasks.extract.chatlines import whatsapp_batches
from tasks.extract.csvfile import csv_batches
from tasks.extract.discord import markup
from tasks.extract.grouped import grouped_batches
from tasks.extract.kinds import Kind
from tasks.extract.lakehouse import DELTA_LOG, refuse, table_in
from tasks.extract.lines import ROW_COLUMN, flat_batches, record_batches
from tasks.extract.records import json_items
from tasks.extract.slack import slack_batches
from tasks.extract.streams import (
    MEMBER_SEP,
    ZIP,
    compression_of,
    open_bytes,
    open_text,
    strip_compression,
    zip_members,
)
from tasks.extract.telegram import telegram_items
from tasks.extract.units import SUFFIXES, Slice, Unit, in_slice, suffixes, wanted  # noqa: F401
from tasks.extract.views import plain_schema
from tasks.people import each_person
from tasks.quarantine import BadRow, Reason


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
    """Parquet, JSONL, CSV or JSON files (compressed, or members of .zip archives) on a local
    disk or in S3 (via pyarrow's filesystems). A record that cannot be read is a BadRow (the
    caller quarantines it) and the rest of its unit is read; only a unit that cannot be read
    at all (no such object, a Parquet footer that is not one, the wrong format behind the
    name) raises SourceError, for the unit to be quarantined whole."""

    mapping: Mapping
    fs: pafs.FileSystem
    listing: list[Unit] = field(default_factory=list)
    high_water: Any = None  # unused for files: their state is the object manifest

    def units(self, part: Slice) -> list[Unit]:
        key = self.mapping.source.s3.partition_key if self.mapping.source.s3 else None
        out = [u for u in self.listing if in_slice(u.rel, part, key)]
        return out

    def attachment_bytes(self, at: str, limit: int = 1 << 30) -> bytes:
        """A file an attachment names, by its location under the source (`dir/a.jpg`, or
        `export.zip!dir/a.jpg`: tasks/attachments.py), read whole (at most `limit` bytes)."""
        rel, _, member = at.partition(MEMBER_SEP)
        for u in self.listing:  # the listing's base: a unit's path without its relative name
            first = u.rel.split(MEMBER_SEP, 1)[0]
            if u.path.endswith(first):
                base = u.path[: len(u.path) - len(first)]
                break
        else:
            raise OSError(f"cannot tell where {at!r} is: the source lists nothing")
        if posixpath.isabs(rel) or ".." in rel.split("/"):
            raise OSError(f"{at!r} is outside the source")
        with open_bytes(self.fs, base + rel, member) as fh:
            data = fh.read(limit + 1)
        if len(data) > limit:
            raise OSError(f"{at!r} is larger than {limit} bytes")
        return data

    def schema(self, unit: Unit) -> pa.Schema:
        """The columns of the unit's first rows; no columns when it has no rows (an empty
        file, a CSV header alone): the mapping is checked against the first unit with rows."""
        if self.mapping.source.format == "parquet":
            try:
                with self.fs.open_input_file(unit.path) as fh:
                    pf = pq.ParquetFile(fh)
                    return plain_schema(pf.schema_arrow) if pf.metadata.num_rows else pa.schema([])
            except (pa.ArrowException, OSError) as exc:
                raise SourceError(self.mapping.source.name, unit.rel, f"cannot read: {exc}") from None
        bad: list[BadRow] = []
        for _, rb in self.iter_batches(unit, bad):
            return pa.schema([f for f in rb.schema if f.name != ROW_COLUMN])
        return pa.schema([])

    def iter_batches(self, unit: Unit, bad: list[BadRow] | None = None) -> Iterator[tuple[int, pa.RecordBatch]]:
        """Yield (row offset in the unit, record batch). Records that cannot be read are
        appended to `bad` as they are met (a caller drains it after each batch); without a
        list, the first one stops the unit."""
        strict = bad is None
        sink: list[BadRow] = [] if bad is None else bad
        src = self.mapping.source
        where = unit.rel
        if unit.path.lower().endswith(ZIP) and not unit.member and src.format != "parquet":
            raise SourceError(src.name, where, _archive_problem(self.mapping, self.fs, unit))
        try:
            if src.format == "parquet":
                yield from self._parquet(unit, sink)
                return
            compression = compression_of(unit.member or unit.path, src.compression)
            replace = src.encoding_errors == "replace"

            def open_stream():
                return open_text(self.fs, unit.path, src.encoding, unit.member, compression, src.format)

            if src.format == "slack":
                batches = slack_batches(
                    self.fs,
                    unit.path,
                    unit.member or None,
                    unit.rel,
                    sink,
                    src.slack_threads,
                    src.slack_each_member,
                    src.max_record_bytes,
                    self.mapping.perspective_ids(),
                )
                yield from _checked(batches, sink, strict)
                return
            if src.format == "whatsapp":

                def chat(bad: list[BadRow]):
                    return whatsapp_batches(
                        open_stream,
                        unit.rel,
                        bad,
                        replace,
                        src.day_first,
                        src.max_record_bytes,
                        src.locale,
                        self.mapping.time.timezone,
                    )

                # perspective each: a copy per mapped person who speaks (tasks/people.py)
                batches = each_person(chat, sink, self.mapping) if src.whatsapp_each_person else chat(sink)
                yield from _checked(batches, sink, strict)
                return
            if src.format == "csv":
                delimiter = "\t" if strip_compression(unit.member or unit.path).endswith(".tsv") else src.csv_delimiter
                batches = csv_batches(
                    open_stream,
                    delimiter,
                    _text_columns(self.mapping),
                    sink,
                    replace,
                    max_record_bytes=src.max_record_bytes,
                )
                yield from _checked(batches, sink, strict)
                return
            app = self.mapping.app  # a chat app's JSON export is read its way (either shape of Telegram's)
            if src.format == "json" and app == "telegram":
                yield from _checked(telegram_items(open_stream, sink, src.max_record_bytes, src.records), sink, strict)
                return
            if src.group_by is not None and self.mapping.nest is not None:  # a document a line, grouped
                # the unit's version names its content: its first pass is done once for a run's checks and staging
                version = (type(self.fs).__name__, unit.path, unit.member, unit.version) if unit.version else None
                batches = grouped_batches(open_stream, src.group_by, sink, src.max_record_bytes, replace, version)
                yield from _checked(batches, sink, strict)
                return
            with open_stream() as fh:
                if src.format == "json":
                    each = markup(self.fs, unit.path, unit.member or None) if app == "discord" else None
                    batches = json_items(fh, sink, src.max_record_bytes, records=src.records, each=each)
                elif self.mapping.nest is not None:
                    batches = record_batches(fh, sink, src.max_record_bytes, replace)
                else:
                    batches = flat_batches(fh, sink, src.max_record_bytes, replace)
                yield from _checked(batches, sink, strict)
        except (WrongFormat, NotJsonl, NotJson, RowTooLong) as exc:
            raise SourceError(src.name, where, str(exc)) from None
        except (pa.ArrowException, OSError, EOFError, zipfile.BadZipFile) as exc:
            raise SourceError(src.name, where, f"cannot read: {_plain(exc)}") from None

    def _parquet(self, unit: Unit, bad: list[BadRow]) -> Iterator[tuple[int, pa.RecordBatch]]:
        """Row groups in runs of about batch_rows; a run that fails is read group by group,
        and a group that cannot be read is one BadRow standing for its rows."""
        batch_rows = self.mapping.source.batch_rows
        with self.fs.open_input_file(unit.path) as fh:
            pf = pq.ParquetFile(fh)
            meta = pf.metadata
            starts = np.cumsum([0] + [meta.row_group(i).num_rows for i in range(meta.num_row_groups)])
            plain = plain_schema(pf.schema_arrow)
            viewed = plain is not pf.schema_arrow
            for groups in row_group_runs(meta, batch_rows):
                try:
                    out = [rb for rb in pf.iter_batches(batch_size=batch_rows, row_groups=groups) if rb.num_rows]
                except (pa.ArrowException, OSError):
                    out = None
                if out is not None:
                    offset = int(starts[groups[0]])
                    for rb in out:
                        yield offset, (rb.cast(plain) if viewed else rb)
                        offset += rb.num_rows
                    continue
                for g in groups:
                    try:
                        one = [rb for rb in pf.iter_batches(batch_size=batch_rows, row_groups=[g]) if rb.num_rows]
                    except (pa.ArrowException, OSError) as exc:
                        n = meta.row_group(g).num_rows
                        bad.append(
                            BadRow(
                                int(starts[g]),
                                f"row group {g}",
                                Reason("unreadable row group", f"cannot read its {n} rows: {_plain(exc)}"),
                                rows=n,
                            )
                        )
                        continue
                    offset = int(starts[g])
                    for rb in one:
                        yield offset, (rb.cast(plain) if viewed else rb)
                        offset += rb.num_rows


def _checked(batches, bad: list[BadRow], strict: bool):
    """`batches`, stopping at the first bad record when the caller keeps no list of them."""
    for item in batches:
        if strict and bad:
            raise NotJson(f"{bad[0].where}: {bad[0].reason}")
        yield item
    if strict and bad:
        raise NotJson(f"{bad[0].where}: {bad[0].reason}")


def _plain(exc: BaseException) -> str:
    """An Arrow or OS error in our words where we know it better than the library says it."""
    text = str(exc)
    if "straddling object" in text:
        return "a record is larger than the reader's block"
    return text.splitlines()[0] if text else type(exc).__name__


def _text_columns(mapping: Mapping) -> list[str]:
    numeric_fields = {"fields.seq", "fields.chat_time"}
    return [c for c, key in mapping.referenced_columns().items() if key not in numeric_fields]


def with_members(mapping: Mapping, fs: pafs.FileSystem, units: list[Unit]) -> list[Unit]:
    """Archives replaced by their members, each a unit of its own (`archive.zip!member`),
    versioned by the member's CRC and size: a re-zipped archive whose member did not change
    is not read again. An archive that cannot be listed, or has no member to read, stays one
    unit, which staging quarantines with the reason."""
    out: list[Unit] = []
    fmt = mapping.source.format or ""
    for u in units:
        if not u.path.lower().endswith(ZIP) or fmt == "parquet":
            out.append(u)
            continue
        try:
            infos = zip_members(fs, u.path, SUFFIXES[fmt], mapping.source.members)
        except (zipfile.BadZipFile, OSError, pa.ArrowException):
            infos = []
        if not infos:
            out.append(u)
            continue
        out.extend(
            Unit(
                rel=f"{u.rel}{MEMBER_SEP}{i.filename}",
                size=i.file_size,
                version=f"{i.CRC:08x}:{i.file_size}",
                path=u.path,
                member=i.filename,
            )
            for i in infos
        )
    return out


def _archive_problem(mapping: Mapping, fs: pafs.FileSystem, unit: Unit) -> str:
    """Why an archive listed as one unit has nothing to read."""
    try:
        with fs.open_input_file(unit.path) as fh:
            names = [i.filename for i in zipfile.ZipFile(fh).infolist() if not i.is_dir()]
    except (zipfile.BadZipFile, OSError, pa.ArrowException) as exc:
        return f"not a readable .zip archive ({_plain(exc)})"
    want = (
        f"source.members={mapping.source.members!r}"
        if mapping.source.members
        else f"the {mapping.source.format} extensions ({', '.join(SUFFIXES[mapping.source.format or 'jsonl'])})"
    )
    return f"no member of the archive matches {want}; it holds {', '.join(names[:10]) or 'nothing'}" + (
        f" and {len(names) - 10} more" if len(names) > 10 else ""
    )


def hidden_name(parts: tuple[str, ...] | list[str], members: str | None) -> bool:
    """Dot files and folders, and `_`-names (`_SUCCESS`, `_delta_log/`) are not data; a file
    named `_...` is read when source.members picks it (WhatsApp's `_chat.txt`)."""
    *dirs, name = parts
    if any(d.startswith((".", "_")) for d in dirs) or name.startswith("."):
        return True
    return name.startswith("_") and members is None


def _enclosing_table(folder: str) -> tuple[str, str] | None:
    """(format, root) of a Delta or Iceberg table that `folder` is, or is inside of."""
    d = os.path.abspath(folder)
    while True:
        if os.path.isdir(os.path.join(d, DELTA_LOG)):
            return "delta", d
        meta = os.path.join(d, "metadata")
        if os.path.isdir(meta) and any(n.endswith(".metadata.json") for n in os.listdir(meta)):
            return "iceberg", d
        up = os.path.dirname(d)
        if up == d:
            return None
        d = up


def _walk(mapping: Mapping, root: str, fmt: str) -> list[str]:
    """The files under a folder this source reads (os.scandir: one stat a file at most, 100,000
    files in about a second). A table inside the folder stops the source before anything is
    read; hidden folders (`.git/`, `_tmp/`) are not walked, and a link to a folder is not
    followed (it is listed, and left out once its target is known to be a folder)."""
    members = mapping.source.members
    paths: list[str] = []
    stack = [(root, "")]
    while stack:
        folder, prefix = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue  # a folder that cannot be listed: nothing in it to read (as rglob passed it by)
        for e in entries:
            rel = prefix + e.name
            if e.is_dir(follow_symlinks=False):
                found = table_in([rel + "/"]) if e.name == DELTA_LOG else None
                if found is not None:  # a table inside the folder: stop before reading anything
                    raise refuse(mapping.source.name, root, found)
                if not e.name.startswith((".", "_")):
                    stack.append((e.path, rel + "/"))
                continue
            found = table_in([rel])
            if found is not None:
                raise refuse(mapping.source.name, root, found)
            if wanted(e.name, fmt, members, rel) and not hidden_name(rel.split("/"), members):
                paths.append(e.path)  # a file, or a link (followed, or quarantined, below)
    return paths


def list_local(mapping: Mapping) -> list[Unit]:
    """Local files in a stable order: a file, every matching file under a directory, or a glob.
    A link that leads nowhere (dangling, a loop) under a matching name is listed, so that it is
    quarantined with its reason rather than passed over in silence."""
    root = mapping.resolve_path()
    fmt = mapping.source.format or ""
    if os.path.isfile(root):
        paths, base = [root], os.path.dirname(root)
    elif os.path.isdir(root):
        base = root
        paths = _walk(mapping, root, fmt)
    else:
        paths = [p for p in glob.glob(root, recursive=True) if os.path.isfile(p)]
        base = os.path.dirname(root.split("*", 1)[0]) or "."
        if not paths:
            raise SourceError(mapping.source.name, root, "no such file or directory, and no file matches it as a glob")
    enclosing = _enclosing_table(base)
    if enclosing is not None:
        raise refuse(mapping.source.name, enclosing[1], (enclosing[0], "."))
    out = []
    under = os.path.abspath(base) + os.sep
    for p in sorted(paths):
        try:
            st = os.stat(p)
            version = f"{st.st_size}:{st.st_mtime_ns}"
        except OSError as exc:  # a link that leads nowhere: staging says so
            st, version = os.lstat(p), f"unreadable:{exc.errno}"
        if not version.startswith("unreadable") and not stat.S_ISREG(st.st_mode):
            continue  # a link to a directory
        path = os.path.abspath(p)
        rel = path[len(under) :] if path.startswith(under) else os.path.relpath(p, base)
        out.append(Unit(rel=rel.replace(os.sep, "/"), size=st.st_size, version=version, path=path))
    if not out:
        raise SourceError(
            mapping.source.name, root, f"no {fmt} files ({', '.join(SUFFIXES[fmt])}, compressed or zipped) found"
        )
    return with_members(mapping, pafs.LocalFileSystem(), out)


def open_files(mapping: Mapping) -> FileSource:
    """Local files: a file, a folder or a glob, listed once."""
    return FileSource(mapping, pafs.LocalFileSystem(), list_local(mapping))


#: source.type files: the manifest of file versions picks what a run reads
KIND = Kind(open_files)
