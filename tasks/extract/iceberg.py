"""Apache Iceberg tables read as tables, through their catalog with `pyiceberg` (no JVM).

A run reads one snapshot, the table's current one when the source opens. The first run (or
one after `memos-etl reset`) reads that snapshot's data files, a unit each, with their delete
files applied. A nightly run after snapshot S compares S's file plan with the current one:

* a data file only in the current plan (an append, or a file an update or delete rewrote) is
  a unit: its new rows are loaded, its rewritten unchanged rows are already delivered, and a
  changed one is found by fingerprint (`changed after delivery`);
* the rows of data files only in S's plan (removed, or given new delete files since) whose
  message key is in none of the current plan's new files were deleted: one unit reads them,
  flagged in ICEBERG_DELETED (`deleted in source`, then on_delete).

Iceberg keeps no row-level change log, so this comparison is the table's change feed: exact
for copy-on-write and merge-on-read writers alike, at the cost of reading the files a commit
rewrote. The snapshot read is the source's high water: the ledger keeps it as the cursor. A
snapshot that expired, or that the current one does not descend from (a rollback, a table
created again), stops the run with TableReadError before the cursor moves."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.config import Mapping
from core.config.mapping import ICEBERG_DELETED
from core.errors import SourceError, TableReadError, first_line
from core.secrets import secret_block
from tasks.extract.kinds import Kind
from tasks.extract.s3 import s3_credentials, s3_filesystem
from tasks.extract.units import Slice, Unit, table_slice
from tasks.extract.views import plain_schema

_WAY_OUT = (
    "read the table whole again: `memos-etl reset {source}` then sync (the ledger skips what was "
    "delivered); `memos-etl reconcile {source}` finds deletes made in the snapshots that cannot be compared"
)

#: the pyiceberg FileIO properties the source's S3 settings become
_S3_KEYS = {
    "aws_access_key_id": "s3.access-key-id",
    "aws_secret_access_key": "s3.secret-access-key",
    "aws_session_token": "s3.session-token",
}


def catalog_properties(mapping: Mapping) -> dict[str, str]:
    """The catalog's properties: the mapping's, a secret block's, the S3 settings, with a
    relative SQLite catalog or local warehouse resolved against the mapping's folder."""
    cfg = mapping.source.iceberg
    assert cfg is not None  # source.type iceberg: the config requires the iceberg section
    props = dict(cfg.catalog)
    if cfg.catalog_block:
        value = secret_block(cfg.catalog_block)
        props.update({k: str(v) for k, v in (json.loads(value) if isinstance(value, str) else dict(value)).items()})
    base = mapping.path_.parent if mapping.path_ is not None else None
    uri = props.get("uri", "")
    if base is not None and uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        rel = uri[len("sqlite:///") :]
        if rel and rel != ":memory:":
            props["uri"] = f"sqlite:///{(base / rel).resolve()}"
    wh = props.get("warehouse", "")
    if base is not None and wh and "://" not in wh and not Path(wh).is_absolute():
        props["warehouse"] = (base / wh).resolve().as_uri()
    if cfg.endpoint_url:
        props.setdefault("s3.endpoint", cfg.endpoint_url)
    props.setdefault("s3.region", cfg.region)
    for key, value in s3_credentials(cfg.credentials_block).items():
        props.setdefault(_S3_KEYS[key], value)
    return props


class IcebergSource:
    def __init__(self, mapping: Mapping):
        from pyiceberg.catalog import load_catalog

        self.mapping = mapping
        cfg = mapping.source.iceberg
        assert cfg is not None  # source.type iceberg: the config requires the iceberg section
        props = catalog_properties(mapping)
        self.name = cfg.table or _located(cfg.location or "", mapping)
        try:
            if cfg.table is not None:
                self.table = load_catalog(cfg.catalog_name, **props).load_table(cfg.table)
            else:
                from pyiceberg.table import StaticTable

                self.table = StaticTable.from_metadata(newest_metadata(self.name, props), properties=props)
        except SourceError:
            raise
        except Exception as exc:  # pyiceberg's and the catalog's errors: no catalog, no table, no access
            raise SourceError(
                mapping.source.name, self.name, f"cannot open as an Iceberg table: {first_line(exc)}"
            ) from None
        current = self.table.current_snapshot()
        self.snapshot: int | None = current.snapshot_id if current is not None else None
        self.high_water: Any = self.snapshot  # the cursor a complete nightly run leaves
        self._tasks: dict[str, Any] = {}  # unit name -> its FileScanTask in the current snapshot
        self._removed: list[Any] = []  # S's tasks whose rows may have been deleted since
        self._added: list[Any] = []  # the current snapshot's tasks not in S's plan
        self.note: str | None = None

    @property
    def label(self) -> str:
        return f"{self.name} snapshot {self.snapshot}"

    # ---- what to read

    def units(self, part: Slice) -> list[Unit]:
        """The current snapshot's data files in the slice (by partition folder or name; a
        row-level slice filters their rows later)."""
        if self.snapshot is None:
            self.note = f"Iceberg table {self.name} has no snapshot yet: nothing to read"
            return []
        return table_slice([self._file_unit(t) for t in self._plan(self.snapshot)], part, self.mapping, self.label)

    def units_after(self, loaded: int | None) -> list[Unit]:
        """A nightly run's units: everything when nothing was loaded, else the changes since."""
        name = self.mapping.source.name
        if loaded is None:
            return self.units(Slice())
        if loaded == self.snapshot:
            self.note = f"Iceberg table at snapshot {loaded}: no commit since the last run, nothing read"
            return []
        if self.snapshot is None or self.table.snapshot_by_id(loaded) is None:
            raise TableReadError(
                name,
                self.name,
                f"snapshot {loaded}, the last one loaded, is no longer in the table's metadata (expired, "
                f"or the table was created again). {_WAY_OUT.format(source=name)}",
            )
        if loaded not in self._ancestors():
            raise TableReadError(
                name,
                self.name,
                f"the current snapshot {self.snapshot} does not descend from snapshot {loaded}, the last one "
                f"loaded (a rollback or a branch made current): the changes between them are not appends "
                f"and deletes. {_WAY_OUT.format(source=name)}",
            )
        before = {_identity(t): t for t in self._plan(loaded)}
        now = {_identity(t): t for t in self._plan(self.snapshot)}
        self._added = [t for k, t in now.items() if k not in before]
        self._removed = [t for k, t in before.items() if k not in now]
        units = [self._file_unit(t) for t in self._added]
        if self._removed:
            units.append(Unit(rel=f"deleted rows s{loaded}-s{self.snapshot}", lo=loaded, hi=self.snapshot))
        self.note = (
            f"Iceberg snapshots {loaded} and {self.snapshot} compared: {len(self._added)} data files added, "
            f"{len(self._removed)} removed or given deletes (their rows in no added file: deleted in source)"
        )
        return units

    def _ancestors(self) -> set[int]:
        seen: set[int] = set()
        snap = self.table.current_snapshot()
        while snap is not None and snap.snapshot_id not in seen:
            seen.add(snap.snapshot_id)
            parent = snap.parent_snapshot_id
            snap = self.table.snapshot_by_id(parent) if parent is not None else None
        return seen

    def _plan(self, snapshot_id: int) -> list[Any]:
        try:
            tasks = list(self.table.scan(snapshot_id=snapshot_id).plan_files())
        except Exception as exc:  # a manifest that is gone or unreadable
            raise TableReadError(
                self.mapping.source.name,
                f"{self.name} snapshot {snapshot_id}",
                f"cannot list its data files ({first_line(exc)}). {_WAY_OUT.format(source=self.mapping.source.name)}",
            ) from None
        return sorted(tasks, key=lambda t: t.file.file_path)

    def _file_unit(self, task) -> Unit:
        rel = _relative(task.file.file_path, self.table.location())
        self._tasks[rel] = task
        return Unit(rel=rel, size=int(task.file.file_size_in_bytes), version=f"s{self.snapshot}", path=rel)

    # ---- reading

    def _schema(self) -> pa.Schema:
        from pyiceberg.io.pyarrow import schema_to_pyarrow

        arrow = schema_to_pyarrow(self.table.schema(), include_field_ids=False)
        return plain_schema(arrow).append(pa.field(ICEBERG_DELETED, pa.bool_()))

    def schema(self, unit: Unit) -> pa.Schema:
        return self._schema()

    def iter_batches(self, unit: Unit, bad: list | None = None) -> Iterator[tuple[int, pa.RecordBatch]]:
        if unit.lo is not None:
            yield from self._deleted_rows(unit)
            return
        task = self._tasks.get(unit.path)
        if task is None:
            raise TableReadError(self.mapping.source.name, f"{self.label} {unit.rel}", "data file not in the table")
        yield from self._read([task], unit, deleted=False)

    def _read(self, tasks: list, unit: Unit, deleted: bool, keep=None) -> Iterator[tuple[int, pa.RecordBatch]]:
        """The rows of `tasks` (their delete files applied) in the source's schema, re-cut to
        source.batch_rows; `keep`, when given, picks the rows of each batch."""
        target = self._schema()
        offset = 0
        for rb in self._scan(tasks, unit, self.table.schema()):
            flag = pa.array(np.full(rb.num_rows, deleted, dtype=bool))
            out = pa.RecordBatch.from_arrays([*rb.columns, flag], names=[*rb.schema.names, ICEBERG_DELETED])
            out = out.select(target.names).cast(target)
            if keep is not None:
                out = out.filter(keep(out))
            for piece in pa.Table.from_batches([out]).to_batches(max_chunksize=self.mapping.source.batch_rows):
                if piece.num_rows:
                    yield offset, piece
                    offset += piece.num_rows

    def _scan(self, tasks: list, unit: Unit, projected) -> Iterator[pa.RecordBatch]:
        from pyiceberg.expressions import AlwaysTrue
        from pyiceberg.io.pyarrow import ArrowScan

        scan = ArrowScan(self.table.metadata, self.table.io, projected, AlwaysTrue())
        try:
            for rb in scan.to_record_batches(tasks):
                if rb.num_rows:
                    yield rb
        except (OSError, pa.ArrowException, ValueError) as exc:
            raise TableReadError(
                self.mapping.source.name,
                f"{self.label} {unit.rel}",
                f"cannot read: {first_line(exc)}. {_WAY_OUT.format(source=self.mapping.source.name)}",
            ) from None

    def _deleted_rows(self, unit: Unit) -> Iterator[tuple[int, pa.RecordBatch]]:
        """Rows of the removed files (as S had them) whose key no added file holds: deleted.
        The added files' keys are read alone (their columns only) and held in memory."""
        tpl = self.mapping.template("source_key")
        assert tpl is not None  # source.type iceberg: the config requires fields.source_key
        keys = list(tpl.names)
        target = self._schema()
        key_schema = pa.schema([target.field(k) for k in keys])
        projected = self.table.schema().select(*keys)
        found = [rb.select(keys).cast(key_schema) for rb in self._scan(self._added, unit, projected)]
        present = pa.Table.from_batches(found, schema=key_schema)
        if len(keys) == 1:
            values = present.column(keys[0]).combine_chunks()

            def keep(rb: pa.RecordBatch) -> pa.Array:
                return pc.invert(pc.fill_null(pc.is_in(rb.column(keys[0]), value_set=values), False))
        else:
            marks = present.group_by(keys, use_threads=False).aggregate([])
            marks = marks.append_column("_present", pa.array(np.ones(marks.num_rows, dtype=bool)))

            def keep(rb: pa.RecordBatch) -> pa.Array:
                probe = pa.Table.from_batches([rb.select(keys)])
                probe = probe.append_column("_pos", pa.array(np.arange(rb.num_rows)))
                hit = probe.join(marks, keys, join_type="left outer").sort_by("_pos").column("_present")
                return pc.is_null(hit)

        yield from self._read(self._removed, unit, deleted=True, keep=keep)


def _located(location: str, mapping: Mapping) -> str:
    """The table's folder as a URI: s3:// as given, a local path absolute (relative: to the mapping)."""
    if "://" in location:
        return location.rstrip("/")
    path = Path(location)
    if not path.is_absolute() and mapping.path_ is not None:
        path = mapping.path_.parent / path
    return path.resolve().as_uri()


def newest_metadata(location: str, props: dict[str, str]) -> str:
    """The newest metadata file of a table folder: the one `metadata/version-hint.text` names,
    else the highest-numbered `metadata/*.metadata.json` (`v3.metadata.json` or
    `00003-<uuid>.metadata.json`, as writers name them)."""
    import re

    import pyarrow.fs as pafs

    if location.startswith("s3://"):
        creds = {key: props[prop] for key, prop in _S3_KEYS.items() if prop in props}
        fs: pafs.FileSystem = s3_filesystem(props.get("s3.endpoint"), props.get("s3.region"), creds)
        root = location[len("s3://") :] + "/metadata"
    else:
        fs, root = pafs.LocalFileSystem(), location.removeprefix("file://") + "/metadata"
    try:
        infos = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    except OSError as exc:
        raise OSError(f"cannot list {root}: {exc}") from None
    names = [i.base_name for i in infos if i.base_name.endswith(".metadata.json")]
    number = re.compile(r"^v?(\d+)[-.]")
    versions = [(int(m.group(1)), n) for n in names if (m := number.match(n))]
    if not versions:
        raise OSError(f"no metadata/*.metadata.json under {location}: not an Iceberg table folder")
    prefix = "s3://" if location.startswith("s3://") else "file://"
    hint = [i for i in infos if i.base_name == "version-hint.text"]
    if hint:
        with fs.open_input_stream(hint[0].path) as f:
            wanted = f.read().decode().strip()
        for v, n in versions:
            if str(v) == wanted or n.startswith(f"v{wanted}."):
                return f"{prefix}{root}/{n}"
    return f"{prefix}{root}/{max(versions)[1]}"


def _identity(task) -> tuple[str, frozenset[str]]:
    """A planned data file with the delete files that apply to it: a new delete file makes it
    another file for the comparison (some of its rows went)."""
    return task.file.file_path, frozenset(d.file_path for d in task.delete_files)


def _relative(path: str, root: str) -> str:
    root = root.rstrip("/") + "/"
    return path[len(root) :] if path.startswith(root) else path


#: source.type iceberg: the table's versions after the cursor; no table stops the source
KIND = Kind(IcebergSource, plan="versions", connected=True)
