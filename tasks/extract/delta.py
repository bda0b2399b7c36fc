"""Delta Lake tables read as tables, through the `deltalake` package (delta-rs: no JVM).

A run reads one version of the table, the one current when the source opens. The first run
(or one after `memos-etl reset`) reads that version's data files, a unit each. A nightly run
after version C reads what changed in (C, V]: with the change data feed
(`delta.enableChangeDataFeed`), one unit of the feed with the last change per message key
(inserts and updates as rows, deletes flagged in DELTA_DELETED: the ledger counts updates
`changed after delivery` and deletes `deleted in source`, and on_change / on_delete act on
them); without a feed, the data files added since C (an update rewrites a file: its changed
rows are found by fingerprint, its unchanged ones are already delivered; deletes need
`reconcile`). The version read is the source's high water: the ledger keeps it as the cursor.

Anything that makes a version unreadable (vacuumed files, an expired log) stops the run with
TableReadError before the cursor moves."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.config import Mapping
from core.config.mapping import DELTA_DELETED
from core.errors import SourceError, TableReadError, first_line
from tasks.extract.kinds import Kind
from tasks.extract.s3 import s3_credentials
from tasks.extract.units import Slice, Unit, table_slice
from tasks.extract.views import plain_schema

#: rows of the change feed held at once while its last changes are picked
FEED_CHUNK_ROWS = 1 << 18
_WAY_OUT = (
    "read the table whole again: `memos-etl reset {source}` then sync (the ledger skips what was "
    "delivered); `memos-etl reconcile {source}` finds deletes made in the versions that cannot be read"
)


def _storage_options(mapping: Mapping) -> dict[str, str]:
    cfg = mapping.source.delta
    assert cfg is not None  # source.type delta: the config requires the delta section
    out: dict[str, str] = {}
    if cfg.table.startswith("s3://"):
        out["AWS_REGION"] = cfg.region
        if cfg.endpoint_url:
            out["AWS_ENDPOINT_URL"] = cfg.endpoint_url
            if urlparse(cfg.endpoint_url).scheme == "http":
                out["AWS_ALLOW_HTTP"] = "true"
        out.update({k.upper(): v for k, v in s3_credentials(cfg.credentials_block).items()})
    out.update(cfg.storage_options)
    return out


class DeltaSource:
    def __init__(self, mapping: Mapping):
        from deltalake import DeltaTable

        self.mapping = mapping
        cfg = mapping.source.delta
        assert cfg is not None  # source.type delta: the config requires the delta section
        uri = cfg.table
        if "://" not in uri and not Path(uri).is_absolute() and mapping.path_ is not None:
            uri = str(mapping.path_.parent / uri)
        self.uri, self.options = uri, _storage_options(mapping)
        try:
            self.table = DeltaTable(uri, storage_options=self.options or None)
        except Exception as exc:  # deltalake's errors: no table there, no access, no endpoint
            raise SourceError(mapping.source.name, uri, f"cannot open as a Delta table: {first_line(exc)}") from None
        self.version = self.table.version()
        self.high_water: Any = self.version  # the cursor a complete nightly run leaves
        self._dataset = None
        self._fragments: dict[str, Any] = {}  # data file (relative to the table) -> its fragment
        self.note: str | None = None

    @property
    def label(self) -> str:
        return f"{self.uri} v{self.version}"

    # ---- what to read

    def units(self, part: Slice) -> list[Unit]:
        """The current version's data files in the slice (by partition folder or name; a
        row-level slice filters their rows later)."""
        return table_slice([self._file_unit(f) for f in self._files(self.table)], part, self.mapping, self.label)

    def units_after(self, loaded: int | None) -> list[Unit]:
        """A nightly run's units: everything when nothing was loaded, else the changes since."""
        name = self.mapping.source.name
        if loaded is None:
            return self.units(Slice())
        if loaded > self.version:
            raise TableReadError(
                name,
                self.uri,
                f"the table is at version {self.version}, before version {loaded} this source loaded: "
                f"it was created again. {_WAY_OUT.format(source=name)}",
            )
        if loaded == self.version:
            self.note = f"Delta table at version {self.version}: no commit since the last run, nothing read"
            return []
        try:
            from deltalake import DeltaTable

            before = DeltaTable(self.uri, version=loaded, storage_options=self.options or None)
        except Exception as exc:
            raise TableReadError(
                name,
                self.uri,
                f"version {loaded}, the last one loaded, is no longer in the table's log "
                f"({first_line(exc)}). {_WAY_OUT.format(source=name)}",
            ) from None
        if _feed(before) and _feed(self.table):
            self.note = f"Delta change data feed read: versions {loaded + 1} to {self.version}"
            return [Unit(rel=f"changes v{loaded + 1}-v{self.version}", lo=loaded + 1, hi=self.version)]
        old = set(self._files(before))
        self.note = (
            f"Delta table without a change data feed: the data files added in versions {loaded + 1} to "
            f"{self.version} read; deletes there need `memos-etl reconcile` or delta.enableChangeDataFeed"
        )
        return [self._file_unit(f) for f in self._files(self.table) if f not in old]

    def _files(self, table) -> list[str]:
        return sorted(table.get_add_actions(flatten=False).column("path").to_pylist())

    def _file_unit(self, rel: str) -> Unit:
        return Unit(rel=rel, version=f"v{self.version}", path=rel)

    # ---- reading

    def dataset(self):
        if self._dataset is None:
            try:
                ds = self.table.to_pyarrow_dataset()
            except Exception as exc:  # e.g. deletion vectors, a reader feature not supported
                raise TableReadError(self.mapping.source.name, self.uri, f"cannot read: {first_line(exc)}") from None
            # fragment paths are the table's root joined with the add action's relative path;
            # the map is complete before the dataset is published (units are read in threads)
            fragments = list(ds.get_fragments())
            names = self._files(self.table)
            if fragments and names:
                first = fragments[0].path
                rel = next((n for n in names if first == n or first.endswith("/" + n)), "")
                root = first[: len(first) - len(rel)]
                self._fragments = {f.path[len(root) :]: f for f in fragments if f.path.startswith(root)}
            self._dataset = ds
        return self._dataset

    def _schema(self) -> pa.Schema:
        return plain_schema(self.dataset().schema).append(pa.field(DELTA_DELETED, pa.bool_()))

    def schema(self, unit: Unit) -> pa.Schema:
        return self._schema()

    def iter_batches(self, unit: Unit, bad: list | None = None) -> Iterator[tuple[int, pa.RecordBatch]]:
        if unit.lo is not None:
            yield from self._changes(unit)
            return
        ds = self.dataset()
        target = self._schema()
        frag = self._fragments.get(unit.path)
        if frag is None:
            raise TableReadError(self.mapping.source.name, f"{self.label} {unit.rel}", "data file not in the table")
        offset = 0
        try:
            for rb in frag.to_batches(schema=ds.schema, batch_size=self.mapping.source.batch_rows):
                if not rb.num_rows:
                    continue
                out = pa.RecordBatch.from_arrays(
                    [*rb.columns, pa.array(np.zeros(rb.num_rows, dtype=bool))], names=[*rb.schema.names, DELTA_DELETED]
                ).cast(target)
                yield offset, out
                offset += rb.num_rows
        except (OSError, pa.ArrowException) as exc:
            raise TableReadError(
                self.mapping.source.name,
                f"{self.label} {unit.rel}",
                f"cannot read: {first_line(exc)}. {_WAY_OUT.format(source=self.mapping.source.name)}",
            ) from None

    def _changes(self, unit: Unit) -> Iterator[tuple[int, pa.RecordBatch]]:
        """The feed of versions (lo, hi], each key's last change only, in two reads of the feed:
        the key columns first (which change is each key's last), then whole rows a chunk at a
        time, kept when they are that change. Memory: the keys of the range and one chunk, not
        the range's rows (an UPDATE of every row is the whole table twice in the feed)."""
        tpl = self.mapping.template("source_key")
        assert tpl is not None  # source.type delta: the config requires fields.source_key
        keys = list(tpl.names)
        last = last_version_per_key(self._feed_chunks(unit, [*keys, "_change_type", "_commit_version"]), keys)
        target = self._schema()
        offset = 0
        for chunk in last_changes(self._feed_chunks(unit, None), last, keys):
            chunk = chunk.append_column(DELTA_DELETED, pc.equal(chunk.column("_change_type"), "delete"))
            chunk = chunk.select(target.names).cast(target)
            for rb in chunk.to_batches(max_chunksize=self.mapping.source.batch_rows):
                yield offset, rb
                offset += rb.num_rows

    def _feed_chunks(self, unit: Unit, columns: list[str] | None) -> Iterator[pa.Table]:
        """The change data of (lo, hi] as tables of about FEED_CHUNK_ROWS rows, plain layouts."""
        from deltalake.exceptions import DeltaError

        name = self.mapping.source.name
        try:
            reader = pa.RecordBatchReader.from_stream(
                self.table.load_cdf(starting_version=unit.lo, ending_version=unit.hi, columns=columns)
            )
            held: list[pa.RecordBatch] = []
            rows = 0
            for rb in reader:
                held.append(rb)
                rows += rb.num_rows
                if rows >= FEED_CHUNK_ROWS:
                    yield plain_table(pa.Table.from_batches(held))
                    held, rows = [], 0
            if held:
                yield plain_table(pa.Table.from_batches(held))
        except (OSError, ValueError, pa.ArrowException, RuntimeError, DeltaError) as exc:
            raise TableReadError(
                name,
                self.uri,
                f"the change data of versions {unit.lo} to {unit.hi} cannot be read ({first_line(exc)}): "
                f"vacuumed or expired? {_WAY_OUT.format(source=name)}",
            ) from None


def _feed(table) -> bool:
    return str(table.metadata().configuration.get("delta.enableChangeDataFeed", "")).lower() == "true"


def last_version_per_key(feed: Iterator[pa.Table], keys: list[str]) -> pa.Table:
    """From the key columns of a feed: each key's last commit version with a change that is
    not an update's pre-image (`keys` + `_last`). Rows with a null key are not here: they pass
    on as they are, for validation to quarantine."""
    parts = []
    for t in feed:
        t = t.filter(pc.not_equal(t.column("_change_type"), "update_preimage"))
        parts.append(t.group_by(keys, use_threads=False).aggregate([("_commit_version", "max")]))
    if not parts:
        return pa.table({**{k: pa.array([], pa.string()) for k in keys}, "_last": pa.array([], pa.int64())})
    last = pa.concat_tables(parts, promote_options="permissive")
    last = last.group_by(keys, use_threads=False).aggregate([("_commit_version_max", "max")])
    last = last.rename_columns([*keys, "_last"])
    return last.filter(_keyed(last, keys))


def _keyed(t: pa.Table, keys: list[str]) -> pa.ChunkedArray:
    """True where no key column is null."""
    return functools.reduce(pc.and_, [pc.is_valid(t.column(k)) for k in keys])


def last_changes(feed: Iterator[pa.Table], last: pa.Table, keys: list[str]) -> Iterator[pa.Table]:
    """The rows of `feed` that are their key's last change (`last` from last_version_per_key):
    a row inserted then updated is its last image, one updated then deleted is its delete, an
    update's pre-image never. Rows with a null key pass as they are. Each output table is one
    chunk of the feed, its feed columns dropped but `_change_type`."""
    for t in feed:
        t = t.filter(pc.not_equal(t.column("_change_type"), "update_preimage"))
        if not t.num_rows:
            continue
        nulls = pc.invert(_keyed(t, keys))
        if pc.any(nulls).as_py():
            yield t.filter(nulls).drop_columns(["_commit_version", "_commit_timestamp"])
            t = t.filter(pc.invert(nulls))
        # only keys, version and row number go through the join (payload columns of any type
        # stay out of it); the winners probe the chunk, so its hash table is the chunk's size
        probe = t.select([*keys, "_commit_version"]).append_column("_row", pa.array(np.arange(t.num_rows)))
        joined = last.join(probe, keys=keys, join_type="inner", use_threads=False)
        joined = joined.filter(pc.equal(joined.column("_commit_version"), joined.column("_last")))
        rows = pc.sort_indices(joined.column("_row"))
        yield t.take(pc.take(joined.column("_row"), rows)).drop_columns(["_commit_version", "_commit_timestamp"])


def plain_table(table: pa.Table) -> pa.Table:
    schema = plain_schema(table.schema)
    return table if schema is table.schema else table.cast(schema)


#: source.type delta: the table's versions after the cursor; no table stops the source
KIND = Kind(DeltaSource, plan="versions", connected=True)
