"""The sync pipeline as plain functions: settle, stage every file, check quality, load.

`run` takes two `map` callables so the same code runs under Prefect (each file and each
bucket a task run, see flows/sync.py) or on a plain thread pool (tests, benchmarks, CLI
--no-prefect). Order of a run:

1. settle requests an earlier run left unconfirmed (crash, no answer): ask the target;
2. stage every file: extract, map, validate, quarantine, split by conversation bucket;
3. stop before sending anything when too many rows failed validation;
4. load the buckets in parallel, conversations strictly in order, under one rate limiter;
5. optionally poll MemOS for the outcome of asynchronous extraction.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa

from core import shutdown
from core.client import make_target
from core.config import Mapping, RunConfig
from core.errors import (
    FatalTargetError,
    LedgerError,
    MemosEtlError,
    QualityThresholdError,
    SchemaDrift,
    SourceError,
    TargetIdentityError,
)
from core.ledger import Ledger, unit_hash
from core.limiter import RateLimiter, fleet_limiter
from core.report import Counts, RunReport
from tasks import cursor
from tasks.cursor import behind
from tasks.datadocs import localise
from tasks.extract import Slice, open_source
from tasks.load import LoadContext, load_bucket
from tasks.quarantine import quarantine_dir
from tasks.redact import DEFAULT_ENTITIES, redaction_secret, redactor_for
from tasks.settle import resolve_unconfirmed
from tasks.stage import StageResult, stage_file
from tasks.track import track_extraction
from tasks.validate import Validator

log = logging.getLogger("memos_etl")

#: map(fn, items, on_done) -> results in the order of items; on_done(result) is called as each finishes
Mapper = Callable[..., list]


def serial_map(fn: Callable, items: Iterable[tuple], on_done: Callable | None = None) -> list:
    out = []
    for args in items:
        out.append(fn(*args))
        if on_done:
            on_done(out[-1])
    return out


def thread_map(workers: int) -> Mapper:
    def run_all(fn: Callable, items: Iterable[tuple], on_done: Callable | None = None) -> list:
        def one(args):
            r = fn(*args)
            if on_done:
                on_done(r)
            return r

        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="memos-etl") as pool:
            return list(pool.map(one, items))

    return run_all


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


def preflight(mapping: Mapping, source=None) -> list:
    """Open the source and check the mapping against its first unit, before anything is read."""
    source = source or open_source(mapping)
    units = source.units(Slice())
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
            if mapping.source.type == "sql":
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


def check_nested_columns(mapping: Mapping, source, unit) -> bool:
    """A nested source: the columns the required fields name must appear in the first batch
    of records once exploded (a key absent from every record is a typo, not optional data).
    False when the unit has no records to check against."""
    from core.errors import ConfigError
    from tasks.extract import ROW_COLUMN
    from tasks.nest import explode

    for offset, rb in source.iter_batches(unit, []):  # records that cannot be read are staging's to quarantine
        ex = explode(rb, mapping.nest, offset, ROW_COLUMN)
        if ex.table.num_rows == 0:
            return True  # nothing well-formed to check against: the records are quarantined with reasons
        names = ex.table.schema.names
        for field in ("user_id", "conversation_id", "role", "content"):
            for tpl in mapping.templates(field):
                for col in tpl.names:
                    if col not in names and col not in mapping.constants:
                        raise ConfigError(
                            str(mapping.path_ or "mapping"),
                            f"fields.{field}",
                            f"column {col!r} is in no record of {unit.rel}'s first batch after nest "
                            f"(columns: {', '.join(n for n in names if n != ROW_COLUMN)})",
                        )
        return True
    return False


def _plan(mapping: Mapping, source, ledger: Ledger, target: str, part: Slice | None, report: RunReport):
    """The units this run reads, whether it is the nightly run that may move the cursor, its
    baseline column types, and the units it reads again after they changed (their delivered
    messages are checked for deletions)."""
    nightly = part is None or not part.bounded
    cursor_text, baseline = ledger.source_state(mapping.source.name, target)
    report.cursor_before = cursor_text
    if mapping.source.type == "sql":
        sql = mapping.source.sql
        if nightly:
            start = behind(cursor.decode(cursor_text), sql.lag)
            if start is None and sql.initial_value is not None:
                start = cursor.parse_bound(str(sql.initial_value))
            part = Slice(since=start)
        return source.units(part), nightly, baseline, set()
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


def _drift(mapping: Mapping, staged: list[StageResult], baseline: dict, report: RunReport) -> dict:
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


def run(
    mapping: Mapping,
    cfg: RunConfig,
    *,
    run_id: str | None = None,
    stage_map: Mapper | None = None,
    load_map: Mapper | None = None,
    resend_in_doubt: bool = False,
    flow: str = "sync",
    target=None,
    part: Slice | None = None,
    source=None,
    outbox: Path | None = None,
    progress=None,
) -> RunReport:
    """Sync one source. `part` reads a bounded slice (backfill, replay) and never moves the
    cursor; `source` replaces the mapping's own (re-drive), and then no source state moves
    either. With `outbox` it is a dry run: the requests are written there, nothing is sent and
    the ledger keeps no trace but the run's report. `progress` gets (phase, done, total)."""
    run_id = run_id or new_run_id()
    progress = progress or (lambda phase, done, total: None)
    started, started_at = time.monotonic(), time.time()
    ctx = None
    stage_map = stage_map or thread_map(min(cfg.load.concurrency, 4))
    load_map = load_map or thread_map(cfg.load.concurrency)
    work = Path(cfg.state.work_dir)
    stage_dir = work / "runs" / run_id / "stage"
    qdir = quarantine_dir(cfg.state.work_dir, mapping.source.name, run_id)
    if outbox is not None:  # a dry run's rejects are shown, not kept for re-drive
        qdir = Path(outbox).with_name(Path(outbox).stem + "-quarantine")
        shutil.rmtree(qdir, ignore_errors=True)
    target_cfg = cfg.target
    name = mapping.source.name
    bounded = part is not None and part.bounded
    kind = "plan" if outbox is not None else ("backfill" if flow == "sync" and bounded else flow)
    report = RunReport(
        run_id=run_id,
        source=name,
        target=target_cfg.ledger_name,
        flow=kind,
        slice=part.spec() if bounded else None,
        outbox=str(outbox) if outbox is not None else None,
    )
    stateless = source is not None
    source = source or open_source(mapping)
    work.mkdir(parents=True, exist_ok=True)
    ledger = Ledger(cfg.state.ledger())
    for dead in ledger.dead_runs():  # killed runs leave their staging behind
        shutil.rmtree(work / "runs" / dead, ignore_errors=True)
    own_target = target is None
    target = target or make_target(cfg.target, pool_size=cfg.load.concurrency + 2)
    ledger.start_run(run_id, kind, name, target_cfg.ledger_name, {"slice": report.slice})
    counts = report.counts
    stop = threading.Event()
    shutdown.subscribe(stop)  # SIGTERM / Ctrl-C drain this run
    try:
        redactor = secret = None
        if mapping.redact is not None:  # a missing hash secret stops the run here, before anything else
            secret = redaction_secret(mapping)
            report.redacting = mapping.redact.entity_list(DEFAULT_ENTITIES)
        if stateless:
            units, nightly, baseline, reread = source.units(Slice()), False, {}, set()
        else:
            units, nightly, baseline, reread = _plan(mapping, source, ledger, target_cfg.ledger_name, part, report)
        report.files = len(units)
        if mapping.redact is not None and units:  # Presidio (seconds of imports) only when there is a file to read;
            redactor = redactor_for(mapping, secret)  # an unknown entity or missing model stops it here
        check_first_readable(mapping, source, units)  # a missing mapped column stops it here
        if outbox is None:
            check_target_identity(ledger, name, target_cfg)
            resolve_unconfirmed(target, ledger, target_cfg.ledger_name, name, counts)
        validator = Validator(mapping, cfg.load, data_docs=cfg.state.data_docs) if units else None
        erased = ledger.tombstones()

        def delivered_of(unit):  # what the ledger delivered from a unit read again
            return ledger.unit_delivered(target_cfg.ledger_name, unit_hash(name, unit.rel))

        done = _Ticker(progress, "extract", len(units))
        staged: list[StageResult] = stage_map(
            stage_file,
            [
                (
                    mapping,
                    source,
                    u,
                    i,
                    validator,
                    run_id,
                    stage_dir,
                    qdir,
                    bucket_count(mapping, cfg, units),
                    part,
                    erased,
                    delivered_of if u.rel in reread else None,
                    redactor,
                )
                for i, u in enumerate(units)
            ],
            done,
        )
        buckets = sorted({b for s in staged for b in s.buckets})
        for s in staged:
            counts.add(s.counts)
        dropped_after_delivery(ledger, target_cfg.ledger_name, mapping, staged, report)
        if validator is not None and cfg.state.data_docs:
            page = validator.publish_docs(work / "data-docs" / name)
            if page:
                report.data_docs = str(page)
                try:  # the site's CSS/JS shipped with it: it opens where nothing public is reachable
                    localise(page.parent)
                except OSError as exc:
                    report.notes.append(f"Data Docs load their CSS and JavaScript from public CDNs: {exc}")
        columns = {} if stateless else _drift(mapping, [s for s in staged if not s.failed], baseline, report)
        if counts.read and counts.quarantined / counts.read > cfg.load.max_failed_share:
            raise QualityThresholdError(
                name, counts.quarantined, counts.read, cfg.load.max_failed_share, counts.reasons.most_common(5)
            )
        limiter = RateLimiter(
            cfg.load.requests_per_second, cfg.load.tokens_per_minute, token_window_s=cfg.load.token_window_s
        )
        ctx = LoadContext(
            mapping=mapping,
            load=cfg.load,
            target_cfg=target_cfg,
            client=target,
            ledger=ledger,
            run_id=run_id,
            quarantine_dir=qdir,
            resend_in_doubt=resend_in_doubt,
            limiter=limiter,
            stop=stop,
            outbox=Outbox(outbox) if outbox is not None else None,
            fleet=fleet_limiter(cfg.load) if outbox is None else None,
            erased=erased,
            rewriting=flow == "rewrite",
        )
        done = _Ticker(progress, "load", len(buckets))
        try:
            for c in load_map(load_bucket, [(ctx, stage_dir, b) for b in buckets], done):
                counts.add(_without_read(c))
        finally:
            if ctx.outbox is not None:
                ctx.outbox.close()
        if ctx.fatal:
            first = ctx.fatal[0]
            raise first if isinstance(first, Exception) else FatalTargetError(first)
        gone_from_files(ledger, target_cfg.ledger_name, [s for s in staged if s.gone is not None], counts)
        if rewrite_kinds(mapping) and outbox is None and flow != "rewrite":
            # the intent is durable before any state moves: a killed run's rewrites are finished
            # by the next run, even if the files that showed the change are never read again
            ledger.plan_rewrites(target_cfg.ledger_name, name, run_id, counts.changed_pairs(rewrite_kinds(mapping)))
        if target_cfg.track_extraction and not stop.is_set() and outbox is None:
            counts.extraction = track_extraction(target, ledger, run_id, target_cfg.extraction_wait_s, stop)
        keeps_state = not stateless and outbox is None and not (part is not None and part.filters_rows)
        if keeps_state:
            ledger.record_units(name, target_cfg.ledger_name, run_id, [s.unit for s in staged if s.failed], "failed")
        if shutdown.requested.is_set():
            report.status = "interrupted"
        elif outbox is not None:
            report.status = "planned"
        elif counts.pending - counts.held_for_rewrite == 0 and counts.in_doubt == 0:
            report.status = "completed"  # held messages are sent by the rewrite that follows
            if keeps_state:  # state moves only with a complete load: files done, cursor, schema
                _save_state(ledger, name, target_cfg.ledger_name, run_id, staged, columns, nightly)
                report.cursor_after = ledger.source_state(name, target_cfg.ledger_name)[0]
        else:
            report.status = "incomplete"
    except Exception as exc:
        report.status = "failed"
        report.error = str(exc)
        exc.report = report  # callers print what happened before the failure
        raise
    finally:
        stop.set()
        shutdown.unsubscribe(stop)
        report.duration_s = time.monotonic() - started
        if ctx is not None and ctx.first_request_at is not None:
            report.first_request_at = ctx.first_request_at
            report.first_request_s = round(ctx.first_request_at - started_at, 3)
        if qdir.exists():
            report.quarantine_path = str(qdir)
        try:
            ledger.finish_run(run_id, report.status, report.to_dict())
        except LedgerError as exc:  # the ledger is gone: the report is still printed; the next
            # run on this host marks this one crashed and frees its conversations
            log.error("%s", exc)
            report.notes.append(
                "the run's end could not be recorded in the ledger (it is down); the next run "
                "marks this run crashed and frees its conversations"
            )
        ledger.close()
        if own_target:
            target.close()
        shutil.rmtree(work / "runs" / run_id, ignore_errors=True)
    if rewrite_kinds(mapping) and outbox is None and flow != "rewrite" and report.status in ("completed", "incomplete"):
        rewrite_conversations(mapping, cfg, report, progress=progress)
    return report


def rewrite_kinds(mapping: Mapping) -> set[str]:
    """The changes a source's policies rewrite conversations for (empty: report only)."""
    return ({"changed"} if mapping.on_change == "replace" else set()) | (
        {"deleted", "gone"} if mapping.on_delete == "delete" else set()
    )


def rewrite_conversations(mapping: Mapping, cfg: RunConfig, report: RunReport, progress=None) -> None:
    """Finish every planned rewrite of the source (this run's and any a killed run left):
    delete each conversation's memories on the target, forget its requests, then send the
    conversations again as the source now holds them, in order, with their original
    chat_times (a run of flow `rewrite` over just those conversations). Adds a summary to
    `report` (and makes it incomplete when the rewrite could not finish)."""
    target_name = cfg.target.ledger_name
    name = mapping.source.name
    ledger = Ledger(cfg.state.ledger())
    client = make_target(cfg.target, pool_size=cfg.load.concurrency + 2)
    summary = {"conversations": 0, "memories_deleted": 0, "messages_forgotten": 0}
    try:
        todo = ledger.pending_rewrites(target_name, name)
        if not todo:
            return
        summary["conversations"] = len(todo)
        for r in todo:
            if r["status"] != "planned":
                continue  # its memories are gone already: only the resend is left
            keys = [
                b["batch_key"]
                for b in ledger.delivered_batches(
                    target_name, users=[r["user_id"]], conversations=[r["conversation_id"]]
                )
            ]
            deleted = client.delete_conversation_memories(r["user_id"], r["conversation_id"], keys)
            summary["memories_deleted"] += deleted or 0
            summary["messages_forgotten"] += ledger.forget_for_rewrite(target_name, r["user_id"], r["conversation_id"])
        part = Slice(
            users=tuple(sorted({r["user_id"] for r in todo})),
            conversations=tuple(sorted({r["conversation_id"] for r in todo})),
        )
        again = run(mapping, cfg, part=part, flow="rewrite", target=client, progress=progress)
        summary.update(
            run_id=again.run_id,
            status=again.status,
            resent=again.counts.delivered,
            pending=again.counts.pending,
            in_doubt=again.counts.in_doubt,
        )
        if again.status == "completed":
            ledger.finish_rewrites(target_name, [(r["user_id"], r["conversation_id"]) for r in todo])
    except MemosEtlError as exc:
        summary.update(status="failed", error=str(exc))
    finally:
        client.close()
        ledger.close()
        if summary["conversations"]:
            report.rewrite = summary
            if summary.get("status") != "completed":
                report.status = "incomplete"
                report.notes.append(
                    f"conversation rewrites not finished ({summary.get('error') or summary.get('status')}):"
                    " the next run of this source finishes them; their messages wait until then"
                )


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
        lo, hi = s.gone
        if len(lo):
            counts.gone_from_source += len(lo)
            counts.note_change("gone", ledger.conversations_of(target, lo, hi))


def _save_state(
    ledger: Ledger, source: str, target: str, run_id: str, staged: list[StageResult], columns: dict, nightly: bool
) -> None:
    ledger.record_units(source, target, run_id, [s.unit for s in staged if not s.failed], "done")
    high = None
    for s in staged:
        high = cursor.later(high, s.high_water)
    ledger.save_source_state(
        source,
        target,
        cursor.encode(high) if high is not None else ledger.source_state(source, target)[0],
        columns,
        move_cursor=nightly and high is not None,
    )


#: bytes per message, on the small side, by format: a guess at rows from sizes that errs
#: towards more (smaller) buckets
_BYTES_PER_ROW = {"parquet": 10, "jsonl": 100, "csv": 80}
BUCKET_ROWS = 20_000  # a bucket is loaded as one table: this bounds a loader's memory


def bucket_count(mapping: Mapping, cfg: RunConfig, units: list) -> int:
    """Conversation buckets for this run: at least load.buckets and load.concurrency, and more
    for big inputs so that no bucket holds much more than BUCKET_ROWS messages. Memory then
    stays flat whatever the input size."""
    total = sum(u.size or 0 for u in units)
    rows = total // _BYTES_PER_ROW.get(mapping.source.format or "", 100)
    return int(min(4096, max(cfg.load.buckets, cfg.load.concurrency, -(-rows // BUCKET_ROWS))))


class _Ticker:
    """Counts finished units of a phase and tells the progress callback."""

    def __init__(self, progress, phase: str, total: int):
        self.progress, self.phase, self.total, self.done = progress, phase, total, 0
        self._lock = threading.Lock()
        progress(phase, 0, total)

    def __call__(self, _result) -> None:
        with self._lock:
            self.done += 1
            done = self.done
        self.progress(self.phase, done, self.total)


class Outbox:
    """Dry run: the requests a run would send, one JSON line each (route and body)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "w", encoding="utf-8")
        self._lock = threading.Lock()

    def write(self, route: str, body: str) -> None:
        """One request: `body` is its JSON text, as it would be sent."""
        head = '{"route": ' + json.dumps(route) + ', "body": '
        with self._lock:
            self._fh.write(head)
            self._fh.write(body)
            self._fh.write("}\n")

    def close(self) -> None:
        with self._lock:
            if not self._fh.closed:
                self._fh.close()


def _without_read(c: Counts) -> Counts:
    c.read = 0  # rows were counted as read when staged
    return c


def redrive(mapping: Mapping, cfg: RunConfig, **kw) -> RunReport:
    """Re-validate this source's quarantined rows with the current mapping; load those that pass."""
    from tasks.quarantine import read_quarantine, row_key
    from tasks.redrive import mark_resolved, open_quarantine_source

    src = open_quarantine_source(mapping, cfg.state.work_dir)
    wanted = src.keys
    report = run(mapping, cfg, source=src, flow="redrive", **kw)
    if report.status == "completed":
        again = read_quarantine(cfg.state.work_dir, mapping.source.name, report.run_id)
        still = {row_key(r) for r in again.select(["source_file", "source_row", "record"]).to_pylist()}
        mark_resolved(cfg.state.work_dir, mapping.source.name, report.run_id, wanted - still)
        report.notes.append(f"re-drive: {len(wanted - still)} of {len(wanted)} quarantined rows now pass")
    for stage, n in sorted(src.not_redriven.items()):
        report.notes.append(
            f"re-drive: {n} rows quarantined at stage {stage!r} are not re-driven (there is no "
            f"mapped row to re-validate): fix the file and sync again (a changed file is read again, "
            f"its delivered rows are not sent twice); if the mapping was at fault, `memos-etl reset` "
            f"first"
        )
    return report
