"""Stage: one source file -> mapped, validated rows, split by conversation bucket on disk.

This is the per-file unit of work. Bad rows go to quarantine with their reasons; good rows
are written as Arrow IPC files under `<run dir>/stage/bucket=NNNN/`, one per (file, bucket).
Every message of a conversation lands in the same bucket, so a bucket can later be loaded
on its own, in order, while other buckets load in parallel; and memory stays bounded by a
record batch here and by a bucket when loading. The bucket files themselves: tasks/buckets.py.

Why one module of this size: stage_file's steps (read with isolation, explode, map, redact,
skip what was delivered unchanged, validate, write) are its own helpers, each used once, in
the order the docstring of stage_file gives; split apart they would be read together anyway.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc

from core.config import LoadConfig, Mapping
from core.errors import SchemaDrift, SourceError, SourceUnavailable, TableReadError
from core.ledger import erased_mask
from core.memory import release_unused
from core.report import Counts
from tasks.attachments import Located, locate
from tasks.backwards import Backwards
from tasks.batch import fingerprints
from tasks.buckets import bucket_of, write_buckets
from tasks.extract import ROW_COLUMN, Slice, Unit
from tasks.map import map_batch
from tasks.nest import explode
from tasks.quarantine import BadRow, QuarantineWriter, bad_rows_table, rows_table
from tasks.skip import skip_mask
from tasks.validate import Validator, split


@dataclass
class StageResult:
    unit: Unit
    counts: Counts
    buckets: list[int]
    columns: dict[str, str] = field(default_factory=dict)  # column -> type kind, for drift checks
    high_water: Any = None  # SQL: largest cursor value read
    failed: str | None = None  # the unit could not be read: quarantined as a whole
    # a re-read unit: keys (lo, hi) of the messages delivered from it that it no longer holds;
    # None when the unit was not checked (not re-read, or not all of it became messages)
    gone: tuple[np.ndarray, np.ndarray] | None = None
    # messages redaction dropped whole (drop_message): user_id, conversation_id, key_lo, key_hi,
    # for the ledger to tell which were delivered before (their conversations changed)
    dropped: pa.Table | None = None


def type_kind(t: pa.DataType) -> str | None:
    """Coarse type of a column: widths and string flavours are not a schema change."""
    if pa.types.is_null(t):
        return None
    for kind, test in (
        ("int", pa.types.is_integer),
        ("float", pa.types.is_floating),
        ("decimal", pa.types.is_decimal),
        ("bool", pa.types.is_boolean),
        ("timestamp", pa.types.is_timestamp),
        ("date", pa.types.is_date),
        ("list", lambda x: pa.types.is_list(x) or pa.types.is_large_list(x)),
        ("struct", pa.types.is_struct),
    ):
        if test(t):
            return kind
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_dictionary(t):
        return "string"
    return str(t)


def in_slice(mapped: pa.Table, part: Slice | None) -> np.ndarray | None:
    """Rows of a mapped batch inside a row-level slice (hash buckets, users, conversations);
    None when the slice keeps every row."""
    if part is None or not part.filters_rows:
        return None
    keep = np.ones(mapped.num_rows, dtype=bool)
    if part.buckets:
        keep &= np.isin(bucket_of(mapped, part.of_buckets), np.array(part.buckets, dtype=np.int64))
    if part.users:
        keep &= pc.fill_null(pc.is_in(mapped.column("user_id"), pa.array(part.users)), False).to_numpy(
            zero_copy_only=False
        )
    if part.conversations:
        keep &= pc.fill_null(pc.is_in(mapped.column("conversation_id"), pa.array(part.conversations)), False).to_numpy(
            zero_copy_only=False
        )
    return keep


@dataclass(frozen=True)
class StagePlan:
    """What every unit of one run is staged with."""

    mapping: Mapping
    source: Any
    validator: Validator
    run_id: str
    stage_dir: Path
    quarantine_dir: Path
    buckets: int  # conversation hash buckets the staged rows are split into
    part: Slice | None = None
    erased: tuple = (frozenset(), frozenset())  # the ledger's erasures: (users, (user, conversation))
    redactor: Any = None
    load: LoadConfig = field(default_factory=LoadConfig)  # attachments' byte budget


def stage_file(plan: StagePlan, unit: Unit, index: int, delivered: Callable | None = None) -> StageResult:
    """Extract, map, validate and stage one unit; a unit that cannot be read is quarantined whole.
    Rows outside a row-level slice (`part`) are not this run's: not counted, not staged. Rows
    of erased users (`erased`, the ledger's erasures) are counted, never staged or
    quarantined. Rows the source marks deleted skip validation and are staged flagged, for
    the loader to count. `delivered` (a unit read again after it changed) gives what the
    ledger delivered from it: rows delivered and unchanged (same key, same fingerprint) are
    counted `already delivered` here, without validating or staging them, and the delivered
    keys the unit no longer holds are returned (StageResult.gone). `plan.redactor` (tasks/redact/)
    removes personal data from the content before anything below sees it: the fingerprints
    compared with the ledger's, validation (and its Data Docs), staging; quarantine rows keep
    the raw source row."""
    mapping, source, validator, run_id = plan.mapping, plan.source, plan.validator, plan.run_id
    stage_dir, quarantine_dir, buckets, part = plan.stage_dir, plan.quarantine_dir, plan.buckets, plan.part
    erased, redactor = plan.erased, plan.redactor
    counts = Counts()
    known = delivered(unit) if delivered is not None else None
    seen: list[np.ndarray] = []
    dropped: list[pa.Table] = []
    shape = {"complete": True}  # every record of the unit became messages (nothing quarantined whole by nest)
    columns: dict[str, str] = {}
    writers: dict[int, ipc.RecordBatchFileWriter] = {}
    quarantine = QuarantineWriter(quarantine_dir, f"extract-{index:05d}")
    located = Located(getattr(source, "fs", None), unit)
    backwards = Backwards()  # time running back in source order, where there is no seq
    try:
        # the columns are checked on the unit's first batch (_message_batches): a unit without
        # rows (an empty file, a CSV header alone) has nothing to check and nothing to stage
        for offset, rb in _message_batches(mapping, source, unit, columns, run_id, quarantine, counts, shape, part):
            mapped = map_batch(rb, mapping, unit.rel, offset)
            keep = in_slice(mapped, part)
            if keep is not None:
                mask = pa.array(keep)
                mapped, rb = mapped.filter(mask), rb.filter(mask)
            drop = skip_mask(mapping, rb, counts.skipped)
            if drop is not None:  # not messages (the mapping's skip rules): counted by kind, not read
                mapped, rb = mapped.filter(pa.array(~drop)), rb.filter(pa.array(~drop))
            counts.read += rb.num_rows
            hit = erased_mask(mapped, *erased)
            if hit is not None:  # forgotten on purpose: not staged, not even quarantined
                counts.erased += int(hit.sum())
                mapped, rb = mapped.filter(pa.array(~hit)), rb.filter(pa.array(~hit))
            counts.out_of_order += backwards.count(mapped)
            if mapped.column("attachments").null_count != mapped.num_rows:  # parts mode: found next to the file
                mapped = locate(mapped, located, plan.load, counts.attachments)
            if redactor is not None:
                mapped, rb = _redact(redactor, mapped, rb, counts, dropped)
            if known is not None:
                mapped, rb = _skip_delivered(mapped, rb, known, seen, counts, mapping.fields.deleted is not None)
            if mapping.fields.deleted is not None:
                gone = mapped.column("deleted").to_numpy(zero_copy_only=False)
                if gone.any():  # deleted in the source: not validated (an emptied row is not bad data)
                    write_buckets(mapped.filter(pa.array(gone)), buckets, stage_dir, index, writers)
                    mapped, rb = mapped.filter(pa.array(~gone)), rb.filter(pa.array(~gone))
            reasons = validator.reasons(mapped, rb)
            good, bad = split(mapped, reasons)
            if len(bad):
                raw_table = pa.Table.from_batches([rb]).take(pa.array(bad))
                if ROW_COLUMN in raw_table.schema.names:
                    raw_table = raw_table.drop_columns([ROW_COLUMN])
                raw = raw_table.to_pylist()
                quarantine.write(
                    rows_table(
                        run_id,
                        mapping.source.name,
                        "validate",
                        [unit.rel] * len(bad),
                        mapped.column("source_row").take(pa.array(bad)).to_pylist(),
                        mapped.column("source_key").take(pa.array(bad)).to_pylist(),
                        [reasons[int(i)] for i in bad],
                        raw,
                    )
                )
                counts.quarantined += len(bad)
                for i in bad:
                    counts.reasons.update(reasons[int(i)])
            write_buckets(good, buckets, stage_dir, index, writers)
    except SourceError as exc:
        if isinstance(exc, (SchemaDrift, TableReadError, SourceUnavailable)):
            raise  # the source, not this object: the run stops (an unreachable store: retried)
        # a corrupt or truncated object: drop what was staged from it, quarantine it whole
        for w in writers.values():
            w.close()
        for b in writers:
            (stage_dir / f"bucket={b:04d}" / f"part-{index:05d}.arrow").unlink(missing_ok=True)
        writers.clear()
        quarantine.close()
        quarantine.path.unlink(missing_ok=True)
        writer = QuarantineWriter(quarantine_dir, f"extract-{index:05d}")
        writer.write(
            rows_table(
                run_id,
                mapping.source.name,
                "extract",
                [unit.rel],
                [-1],
                [None],
                [[f"unreadable: {exc}"]],
                [{"object": unit.rel, "version": unit.version, "rows_read_before_error": counts.read}],
            )
        )
        writer.close()
        failed = Counts()
        failed.units_failed = 1
        failed.reasons[f"unreadable object ({exc.problem.split(':')[0]})"] += 1
        return StageResult(unit, failed, [], columns, None, str(exc))
    finally:
        for w in writers.values():
            w.close()
        quarantine.close()
        release_unused()
    gone = None
    if known is not None and shape["complete"]:
        empty = np.empty(0, dtype=np.int64)
        gone = known.missing(
            np.concatenate([x[0] for x in seen]) if seen else empty,
            np.concatenate([x[1] for x in seen]) if seen else empty,
        )
    return StageResult(
        unit,
        counts,
        sorted(writers),
        columns,
        getattr(source, "high_water", None),
        gone=gone,
        dropped=pa.concat_tables(dropped) if dropped else None,
    )


def sample_messages(mapping: Mapping, source, limit: int, quarantine_dir: Path, run_id: str = "sample"):
    """Mapped messages of the first units, `limit` at most, in source order: what a check on a
    sample reads (nested records exploded the way a run does; nothing validated or staged)."""
    taken = 0
    counts = Counts()
    for index, unit in enumerate(source.units(Slice())):
        quarantine = QuarantineWriter(quarantine_dir, f"sample-{index:05d}")
        try:
            for offset, rb in _message_batches(
                mapping, source, unit, {}, run_id, quarantine, counts, {"complete": True}
            ):
                mapped = map_batch(rb, mapping, unit.rel, offset)
                drop = skip_mask(mapping, rb, counts.skipped)
                if drop is not None:
                    mapped = mapped.filter(pa.array(~drop))
                if taken + mapped.num_rows > limit:
                    mapped = mapped.slice(0, limit - taken)
                taken += mapped.num_rows
                yield mapped
                if taken >= limit:
                    return
        finally:
            quarantine.close()


def _message_batches(
    mapping: Mapping,
    source,
    unit: Unit,
    columns: dict,
    run_id: str,
    quarantine: QuarantineWriter,
    counts: Counts,
    shape: dict,
    part: Slice | None = None,
):
    """(row offset, batch of message rows) of a unit. Nested records are exploded (records of
    the wrong shape quarantined whole) and their messages gathered into batches of about
    `source.batch_rows` messages: a batch is bounded by the messages it holds, not by records,
    and validation runs on full batches whatever the records' sizes."""
    nested = mapping.nest is not None and not getattr(source, "exploded", False)
    pending: list[pa.RecordBatch] = []
    held = 0
    bad: list[BadRow] = []
    for offset, rb in _drained(
        source.iter_batches(unit, bad), bad, mapping, unit, run_id, quarantine, counts, shape, part
    ):
        if mapping.nest is None:
            mapping.check_columns(rb.schema.names, f"{unit.rel} at row {offset}")
        for f in rb.schema:
            kind = type_kind(f.type) or "null"  # all-null so far: present, type unknown
            if columns.get(f.name, "null") == "null":
                columns[f.name] = kind
            elif (
                kind != "null"
                and columns[f.name] != kind
                and mapping.referenced_columns().get(f.name, "fields.deleted") != "fields.deleted"
            ):
                raise SchemaDrift(
                    mapping.source.name,
                    unit.rel,
                    f"column {f.name!r} changed type within the unit: {columns[f.name]} -> {kind}",
                )
        if not nested:
            yield offset, rb
            continue
        before = counts.quarantined
        rows = _explode(mapping, rb, offset, unit, run_id, quarantine, counts, shape)
        shape["complete"] &= counts.quarantined == before
        if rows is None:
            continue
        pending.append(rows)
        held += rows.num_rows
        if held >= mapping.source.batch_rows:
            yield 0, _concat(pending)
            pending, held = [], 0
    if pending:
        yield 0, _concat(pending)


def _drained(
    batches,
    bad: list[BadRow],
    mapping: Mapping,
    unit: Unit,
    run_id: str,
    quarantine: QuarantineWriter,
    counts: Counts,
    shape: dict,
    part: Slice | None,
):
    """`batches`, with the records the reader could not read quarantined as they come: read,
    quarantined, and the unit no longer whole (its keys are not all known: nothing delivered
    from it counts as gone). In a backfill cut by conversation (buckets, users) only the part
    with bucket 0 takes them, so each is quarantined once: a bad record has no conversation."""
    mine = (
        part is None
        or not part.filters_rows
        or (bool(part.buckets) and 0 in part.buckets and not part.users and not part.conversations)
    )

    def drain() -> None:
        if not bad:
            return
        shape["complete"] = False
        if mine:
            quarantine.write(bad_rows_table(run_id, mapping.source.name, unit.rel, bad))
            for b in bad:
                counts.read += b.rows
                counts.quarantined += b.rows
                counts.reasons[f"unreadable record ({b.kind})"] += b.rows
        bad.clear()

    for item in batches:
        drain()
        yield item
    drain()


def _concat(batches: list[pa.RecordBatch]) -> pa.RecordBatch:
    """One batch of exploded rows. Columns some batches lack are nulls; a column typed
    differently by different batches (all-null text in one, numbers in another; numbers
    here, text there) takes the type of its values, or text when they disagree."""
    if len(batches) == 1:
        return batches[0]
    types: dict[str, set] = {}
    for b in batches:
        for f, col in zip(b.schema, b.columns):
            if col.null_count < len(col):
                types.setdefault(f.name, set()).add(f.type)
            else:
                types.setdefault(f.name, set())
    tables = []
    for b in batches:
        cols, names = [], []
        for f, col in zip(b.schema, b.columns):
            seen = types[f.name]
            want = next(iter(seen)) if len(seen) == 1 else pa.string() if seen else f.type
            if col.type != want:
                col = pa.nulls(len(col), want) if col.null_count == len(col) else col.cast(want)
            cols.append(col)
            names.append(f.name)
        tables.append(pa.Table.from_arrays(cols, names=names))
    # the types now agree column by column: a column some batches lack is all the default fills
    table = pa.concat_tables(tables, promote_options="default")
    return table.combine_chunks().to_batches()[0]


def count_redaction(counts: Counts, out) -> None:
    """Add one batch's redaction (tasks.redact.Redacted) to the run's counts."""
    counts.redaction_candidates += out.candidates
    counts.redacted += int((out.changed & ~out.drop).sum())
    counts.redaction_dropped += int(out.drop.sum())
    for entity, n in out.found.items():
        counts.note_redaction(entity, n, out.messages[entity])


def _redact(
    redactor, mapped: pa.Table, rb: pa.RecordBatch, counts: Counts, dropped: list
) -> tuple[pa.Table, pa.RecordBatch]:
    """Content with personal data replaced; messages whose entities say drop_message counted
    and left out (they are read, never sent: an outcome of their own), their keys kept in
    `dropped`."""
    out = redactor.redact(mapped.column("content"))
    count_redaction(counts, out)
    if out.changed.any():
        mapped = mapped.set_column(mapped.schema.get_field_index("content"), "content", out.content)
    if out.drop.any():
        dropped.append(mapped.filter(pa.array(out.drop)).select(["user_id", "conversation_id", "key_lo", "key_hi"]))
        keep = pa.array(~out.drop)
        mapped, rb = mapped.filter(keep), rb.filter(keep)
    return mapped, rb


def _skip_delivered(
    mapped: pa.Table, rb: pa.RecordBatch, known, seen: list, counts: Counts, soft_delete: bool
) -> tuple[pa.Table, pa.RecordBatch]:
    """Rows of a re-read unit that were delivered as they are now: counted, dropped before
    validation (most of a re-read file, usually). Changed rows (another fingerprint) and rows
    flagged deleted go on, for the loader to count and the policies to act on."""
    lo, hi = mapped.column("key_lo").to_numpy(), mapped.column("key_hi").to_numpy()
    seen.append((lo, hi))
    hit, pos = known.match(lo, hi)
    if not hit.any():
        return mapped, rb
    rows = np.flatnonzero(hit)
    now = fingerprints(mapped.take(pa.array(rows)))
    at = pos[rows]
    same = np.zeros(len(hit), dtype=bool)
    # no fingerprint recorded (delivered before ledger revision 0002): not compared, as in load
    same[rows] = ~known.has_fp[at] | (now == known.fp[at])
    if soft_delete:
        same &= ~pc.fill_null(mapped.column("deleted"), False).to_numpy(zero_copy_only=False)
    n = int(same.sum())
    if not n:
        return mapped, rb
    counts.already_delivered += n
    keep = pa.array(~same)
    return mapped.filter(keep), rb.filter(keep)


def _explode(
    mapping: Mapping,
    rb: pa.RecordBatch,
    offset: int,
    unit: Unit,
    run_id: str,
    quarantine: QuarantineWriter,
    counts: Counts,
    shape: dict,
) -> pa.RecordBatch | None:
    """Nested records -> one row per message; records of the wrong shape are quarantined
    whole (one row each, with the reason). None when no message is left in the batch. A
    unit whose first two batches needed the walk is walked from then on, without trying the
    columnar explode first (`shape["walked"]`: batches walked in a row)."""
    assert mapping.nest is not None  # called for nested sources only
    ex = explode(
        rb,
        mapping.nest,
        offset,
        ROW_COLUMN,
        mapping.skip,
        mapping.perspective_ids(),
        mapping.walked_columns(),
        columnar=shape.get("walked", 0) < 2,
    )
    shape["walked"] = shape.get("walked", 0) + 1 if ex.walked else 0
    if ex.bad:
        quarantine.write(
            rows_table(
                run_id,
                mapping.source.name,
                "nest",
                [unit.rel] * len(ex.bad),
                [b[0] for b in ex.bad],
                [None] * len(ex.bad),
                [[b[1]] for b in ex.bad],
                [b[2] if isinstance(b[2], dict) else {"record": b[2]} for b in ex.bad],
            )
        )
        counts.read += len(ex.bad)
        counts.quarantined += len(ex.bad)
        for b in ex.bad:
            counts.reasons[": ".join(b[1].split(": ")[:2])] += 1  # "nest: not JSON", without the detail
    counts.empty_skipped += ex.skipped
    counts.skipped.update(ex.kinds)  # tool traffic and hidden context the walk left out (nest/traffic.py)
    table = with_columns(ex.table, mapping)
    if table.num_rows == 0:
        return None
    return table.combine_chunks().to_batches()[0]


def with_columns(table: pa.Table, mapping: Mapping) -> pa.Table:
    """Add the mapped columns no record of this batch had (a key absent everywhere) as nulls:
    in nested data an absent key is a value, not a schema error; validation says which rows
    then lack a required field."""
    for col in mapping.referenced_columns():
        if col not in table.schema.names and col not in mapping.constants:
            table = table.append_column(col, pa.nulls(table.num_rows, pa.string()))
    return table
