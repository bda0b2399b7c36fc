"""What a run checks and plans before and around staging: the units it reads, the first
readable unit against the mapping, the target's identity, column drift, and deletions found
in files read again."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from core.config import Mapping
from core.errors import SchemaDrift, SourceError, TargetIdentityError
from core.ledger import Ledger
from core.report import RunReport
from tasks import cursor
from tasks.extract import Slice, kind_of, open_source
from tasks.stage import StageResult


def preflight(mapping: Mapping, source=None) -> list:
    """Open the source and check the mapping against its first unit, before anything is read."""
    source = source or open_source(mapping)
    units = source.units(Slice())
    if mapping.documents is None:  # documents are files uploaded whole: no columns to check
        check_first_readable(mapping, source, units)
    return units


def check_first_readable(mapping: Mapping, source, units: list) -> None:
    """Check the mapping's columns against the first unit that can be read (an unreadable
    one is quarantined when staged, it does not stop the source)."""
    if getattr(source, "exploded", False):
        return  # re-driven messages of a nested source: their record was checked when first read
    for u in units:
        try:
            schema = source.schema(u)
        except SourceError:
            if kind_of(mapping).connected:
                raise  # no connection or no table: the whole source is unreadable
            continue
        if not schema.names:
            continue  # no rows (an empty file, a CSV header alone): the next unit is checked
        if mapping.nest is not None:
            if check_nested_columns(mapping, source, u):
                return
            continue
        mapping.check_columns(schema.names, u.rel)
        return


#: records of a nested source's first batch the column check explodes (all their fields)
CHECKED_RECORDS = 200


def check_nested_columns(mapping: Mapping, source, unit) -> bool:
    """A nested source: the columns the required fields name must appear in the first
    CHECKED_RECORDS records of its first batch once exploded (a key absent from every record
    is a typo, not optional data).
    False when the unit has no records to check against."""
    from core.errors import ConfigError
    from tasks.extract import ROW_COLUMN
    from tasks.nest import explode

    for offset, rb in source.iter_batches(unit, []):  # records that cannot be read are staging's to quarantine
        assert mapping.nest is not None  # checked above: a nested source
        ex = explode(rb.slice(0, CHECKED_RECORDS), mapping.nest, offset, ROW_COLUMN)
        if ex.table.num_rows == 0:
            return True  # nothing well-formed to check against: the records are quarantined with reasons
        names = ex.table.schema.names
        for key in ("user_id", "conversation_id", "role", "content"):
            # a list of templates (content: parts, then text) needs one of them whole
            missing = [
                [col for col in tpl.names if col not in names and col not in mapping.constants]
                for tpl in mapping.templates(key)
            ]
            if missing and all(missing):
                raise ConfigError(
                    str(mapping.path_ or "mapping"),
                    f"fields.{key}",
                    f"column {missing[0][0]!r} is in none of the first {CHECKED_RECORDS} records of "
                    f"{unit.rel} after nest "
                    f"(columns: {', '.join(n for n in names if n != ROW_COLUMN)})",
                )
        return True
    return False


def plan(mapping: Mapping, source, ledger: Ledger, target: str, part: Slice | None, report: RunReport):
    """The units this run reads, whether it is the nightly run that may move the cursor, its
    baseline column types, and the units it reads again after they changed (their delivered
    messages are checked for deletions)."""
    nightly = part is None or not part.bounded
    cursor_text, baseline = ledger.source_state(mapping.source.name, target)
    report.cursor_before = cursor_text
    style = kind_of(mapping).style(mapping)
    if style == "cursor":
        if nightly:
            part = Slice(since=source.start(cursor.decode(cursor_text)))
        return source.units(part), nightly, baseline, set()
    if style == "versions":
        units = source.units_after(cursor.decode(cursor_text)) if nightly else source.units(part or Slice())
        if source.note:
            report.notes.append(source.note)
        return units, nightly, baseline, set()
    units = source.units(part or Slice())
    if part is not None and part.filters_rows:
        return units, nightly, baseline, set()  # some rows of every file: the manifest (whole files) does not apply
    manifest = ledger.manifest(mapping.source.name, target)
    todo, reread = [], set()
    for u in units:
        seen = manifest.get(u.rel)
        if seen and seen[0] == u.version:
            report.counts.units_skipped += 1  # unchanged since it was fully processed: not read
            if seen[1] == "failed":
                report.notes.append(f"{u.rel}: still unreadable (unchanged since it failed); fix or replace it")
        else:
            todo.append(u)
            if seen and seen[1] == "done":
                reread.add(u.rel)
    return todo, nightly, baseline, reread


def drift(mapping: Mapping, staged: list[StageResult], baseline: dict, report: RunReport) -> dict:
    """Columns seen now vs the last completed run: new ones noted, mapped type changes fatal."""
    mapped = mapping.referenced_columns()
    now: dict[str, str] = dict(baseline)
    for s in staged:
        for col, kind in s.columns.items():
            before = now.get(col)
            if before is None:
                now[col] = kind
                if baseline:
                    report.notes.append(f"new column {col!r} ({kind}) in {s.unit.rel}: not mapped, ignored")
            elif "null" in (before, kind):  # a column that was all null tells no type
                now[col] = kind if before == "null" else before
            elif before != kind:
                # a soft-delete column is read whatever its type (null until the first delete,
                # then a bool, a timestamp or text): its type changing is not drift
                if col in mapped and mapped[col] != "fields.deleted":
                    raise SchemaDrift(
                        mapping.source.name,
                        s.unit.rel,
                        f"mapped column {col!r} changed type: {before} -> {kind} "
                        f"({mapped[col]}); nothing was sent. Fix the source or the mapping.",
                    )
                report.notes.append(f"column {col!r} changed type {before} -> {kind} in {s.unit.rel}: not mapped")
                now[col] = kind
    return now


def dropped_after_delivery(
    ledger: Ledger, target: str, mapping: Mapping, staged: list[StageResult], report: RunReport
) -> None:
    """Messages redaction now drops (drop_message) that were delivered before redaction said
    so: their conversations changed on the target's side of things, like an edited message
    (listed; on_change: replace rewrites them without these messages)."""
    tables = [s.dropped for s in staged if s.dropped is not None and s.dropped.num_rows]
    if not tables:
        return
    t = pa.concat_tables(tables)
    status = ledger.message_status(target, t.column("key_lo").to_numpy(), t.column("key_hi").to_numpy())
    was = np.flatnonzero(status == "delivered")
    if not len(was):
        return
    idx = pa.array(was)
    report.counts.note_change(
        "changed",
        list(zip(t.column("user_id").take(idx).to_pylist(), t.column("conversation_id").take(idx).to_pylist())),
    )
    report.notes.append(
        f"{len(was)} messages delivered before are now dropped by redaction (drop_message): "
        + (
            "their conversations are rewritten (on_change: replace)"
            if mapping.on_change == "replace"
            else "MemOS still holds them; set on_change: replace to rewrite their conversations"
        )
    )


def check_target_identity(ledger: Ledger, source: str, target_cfg) -> None:
    """Stop before sending when the source delivered elsewhere and never to this target name."""
    delivered = ledger.targets_of(source)
    here = target_cfg.ledger_name
    others = {t: n for t, n in delivered.items() if t != here and n}
    if others and not delivered.get(here) and not target_cfg.new_target:
        raise TargetIdentityError(source, here, others)


def gone_from_files(ledger: Ledger, target: str, staged: list[StageResult], counts) -> None:
    """Delivered messages of re-read files that the files no longer hold: deleted in the
    source. Counted and listed per conversation (they were not read, so not in `read`)."""
    for s in staged:
        assert s.gone is not None  # the caller passes the staged units that were read again
        lo, hi = s.gone
        if len(lo):
            counts.gone_from_source += len(lo)
            counts.note_change("gone", ledger.conversations_of(target, lo, hi))
