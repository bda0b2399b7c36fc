"""The sync pipeline as plain functions: settle, stage every file, check quality, load.

`run` takes two `map` callables so the same code runs under Prefect (each file and each
bucket a task run, see flows/sync.py) or on a plain thread pool (tests, benchmarks, CLI
--no-prefect). Order of a run:

1. settle requests an earlier run left unconfirmed (crash, no answer): ask the target;
2. stage every file: extract, map, validate, quarantine, split by conversation bucket;
3. stop before sending anything when too many rows failed validation;
4. load the buckets in parallel, conversations strictly in order, under one rate limiter;
5. optionally poll MemOS for the outcome of asynchronous extraction.

Why one module of this size: the phases share one RunState, and the two runs built on a run
(rewrite_conversations, redrive) call back into `run`, so they live beside it rather than in
a module that `run` and they would import in a circle.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core import shutdown
from core.client import Target, make_target
from core.collector import tune as tune_collector
from core.config import Mapping, RunConfig
from core.errors import FatalTargetError, LedgerError, MemosEtlError, QualityThresholdError
from core.ledger import Ledger, unit_hash
from core.limiter import RateLimiter, fleet_limiter
from core.report import Counts, RunReport
from flows.runner.checks import (
    check_first_readable,
    check_target_identity,
    drift,
    dropped_after_delivery,
    gone_from_files,
    plan,
)
from flows.runner.fanout import FanOut, thread_fanout
from tasks import cursor
from tasks.datadocs import localise
from tasks.extract import Slice, kind_of, open_source
from tasks.load import LoadContext, load_bucket
from tasks.quarantine import quarantine_dir
from tasks.redact import DEFAULT_ENTITIES, redaction_secret, redactor_for
from tasks.settle import resolve_unconfirmed
from tasks.stage import StagePlan, StageResult, stage_file
from tasks.track import track_extraction
from tasks.validate import Validator

log = logging.getLogger("memos_etl")


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


@dataclass
class RunState:
    """One run as it goes through its phases: what it was asked, what it opened, what it found."""

    mapping: Mapping
    cfg: RunConfig
    report: RunReport
    ledger: Ledger
    target: Target
    source: Any
    part: Slice | None
    outbox: Path | None
    flow: str
    resend_in_doubt: bool
    stage_fanout: FanOut
    load_fanout: FanOut
    progress: Callable
    work: Path
    qdir: Path
    stateless: bool  # a re-drive's source: no source state moves
    own_target: bool  # opened here, closed here
    stop: threading.Event = field(default_factory=threading.Event)
    started: float = field(default_factory=time.monotonic)
    started_at: float = field(default_factory=time.time)
    units: list = field(default_factory=list)
    nightly: bool = False
    baseline: dict = field(default_factory=dict)
    reread: set = field(default_factory=set)
    redactor: Any = None
    validator: Validator | None = None
    erased: tuple = (frozenset(), frozenset())
    staged: list[StageResult] = field(default_factory=list)
    columns: dict = field(default_factory=dict)
    ctx: LoadContext | None = None

    @property
    def name(self) -> str:
        return self.mapping.source.name

    @property
    def target_name(self) -> str:
        return self.cfg.target.ledger_name

    @property
    def stage_dir(self) -> Path:
        return self.work / "runs" / self.report.run_id / "stage"

    @property
    def keeps_state(self) -> bool:
        """Whether this run moves the source's state (manifest, cursor, schema) when complete."""
        return not self.stateless and self.outbox is None and not (self.part is not None and self.part.filters_rows)

    @property
    def rewrites(self) -> bool:
        """Whether the source's policies have this run plan (and then finish) conversation rewrites."""
        return bool(rewrite_kinds(self.mapping)) and self.outbox is None and self.flow != "rewrite"


def run(
    mapping: Mapping,
    cfg: RunConfig,
    *,
    run_id: str | None = None,
    stage_fanout: FanOut | None = None,
    load_fanout: FanOut | None = None,
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
    the ledger keeps no trace but the run's report. `progress` gets (phase, done, total).

    The phases, each a function of the run's state: open, prepare (plan, checks, settle),
    stage, check quality, load, finish; close whatever happened. A documents source's files go
    to a knowledge base instead (flows/runner/documents.py)."""
    if mapping.documents is not None:
        from flows.runner import documents

        return documents.run(mapping, cfg, run_id=run_id, target=target, flow=flow, outbox=outbox, progress=progress)
    tune_collector()
    started, started_at = time.monotonic(), time.time()
    st = _open(
        mapping,
        cfg,
        run_id or new_run_id(),
        stage_fanout,
        load_fanout,
        resend_in_doubt,
        flow,
        target,
        part,
        source,
        outbox,
        progress,
        started,
        started_at,
    )
    try:
        _prepare(st)
        _stage(st)
        _check_quality(st)
        _load(st)
        _finish(st)
    except Exception as exc:
        st.report.status = "failed"
        st.report.error = str(exc)
        exc.report = st.report  # type: ignore[attr-defined]  # callers print what happened before the failure
        raise
    finally:
        _close(st)
    if st.rewrites and st.report.status in ("completed", "incomplete"):
        rewrite_conversations(mapping, cfg, st.report, progress=st.progress)
    return st.report


def _open(
    mapping: Mapping,
    cfg: RunConfig,
    run_id: str,
    stage_fanout,
    load_fanout,
    resend_in_doubt: bool,
    flow: str,
    target,
    part: Slice | None,
    source,
    outbox: Path | None,
    progress,
    started: float,
    started_at: float,
) -> RunState:
    """The run's report, ledger record, target and source; killed runs' staging removed."""
    work = Path(cfg.state.work_dir)
    qdir = quarantine_dir(cfg.state.work_dir, mapping.source.name, run_id)
    if outbox is not None:  # a dry run's rejects are shown, not kept for re-drive
        qdir = Path(outbox).with_name(Path(outbox).stem + "-quarantine")
        shutil.rmtree(qdir, ignore_errors=True)
    bounded = part is not None and part.bounded
    kind = "plan" if outbox is not None else ("backfill" if flow == "sync" and bounded else flow)
    report = RunReport(
        run_id=run_id,
        source=mapping.source.name,
        target=cfg.target.ledger_name,
        flow=kind,
        slice=part.spec() if part is not None and bounded else None,
        outbox=str(outbox) if outbox is not None else None,
    )
    if mapping.preset_detected:
        report.notes.append(f"preset auto chose {mapping.preset_detected}")
    if mapping.attachments.mode == "parts" and cfg.target.kind == "self-hosted":
        report.notes.append(
            "attachments.mode parts to a self-hosted MemOS: its image and file parsers ask its LLM to read "
            "them; MemOS 2.0.33 with an LLM that cannot stored no memory for such a message, its text "
            "included (docs/chat-exports.md#attachments)"
        )
    stateless = source is not None
    source = source or open_source(mapping)
    work.mkdir(parents=True, exist_ok=True)
    ledger = Ledger(cfg.state.ledger())
    for dead in ledger.dead_runs():  # killed runs leave their staging behind
        shutil.rmtree(work / "runs" / dead, ignore_errors=True)
    own_target = target is None
    target = target or make_target(cfg.target, pool_size=cfg.load.concurrency + 2)
    ledger.start_run(run_id, kind, mapping.source.name, cfg.target.ledger_name, {"slice": report.slice})
    st = RunState(
        started=started,
        started_at=started_at,
        mapping=mapping,
        cfg=cfg,
        report=report,
        ledger=ledger,
        target=target,
        source=source,
        part=part,
        outbox=outbox,
        flow=flow,
        resend_in_doubt=resend_in_doubt,
        stage_fanout=stage_fanout or thread_fanout(min(cfg.load.concurrency, 4)),
        load_fanout=load_fanout or thread_fanout(cfg.load.concurrency),
        progress=progress or (lambda phase, done, total: None),
        work=work,
        qdir=qdir,
        stateless=stateless,
        own_target=own_target,
    )
    shutdown.subscribe(st.stop)  # SIGTERM / Ctrl-C drain this run
    return st


def _prepare(st: RunState) -> None:
    """What to read, and every check that can stop the run before a row is read or sent."""
    mapping, report = st.mapping, st.report
    secret = None
    if mapping.redact is not None:  # a missing hash secret stops the run here, before anything else
        secret = redaction_secret(mapping)
        report.redacting = mapping.redact.entity_list(DEFAULT_ENTITIES)
    if st.stateless:
        st.units = st.source.units(Slice())
    else:
        st.units, st.nightly, st.baseline, st.reread = plan(
            mapping, st.source, st.ledger, st.target_name, st.part, report
        )
    report.files = len(st.units)
    if mapping.redact is not None and st.units:  # Presidio (seconds of imports) only when there is a file to read;
        st.redactor = redactor_for(mapping, secret)  # an unknown entity or missing model stops it here
    check_first_readable(mapping, st.source, st.units)  # a missing mapped column stops it here
    if st.outbox is None:
        check_target_identity(st.ledger, st.name, st.cfg.target)
        resolve_unconfirmed(st.target, st.ledger, st.target_name, st.name, report.counts)
    st.validator = Validator(mapping, st.cfg.load, data_docs=st.cfg.state.data_docs) if st.units else None
    st.erased = st.ledger.erased()


def _stage(st: RunState) -> None:
    """Every unit extracted, mapped, validated and staged by conversation bucket."""
    ledger, name, target_name = st.ledger, st.name, st.target_name

    def delivered_of(unit):  # what the ledger delivered from a unit read again
        return ledger.unit_delivered(target_name, unit_hash(name, unit.rel))

    plan = StagePlan(
        mapping=st.mapping,
        source=st.source,
        validator=st.validator,  # type: ignore[arg-type]  # None only when there is no unit to stage
        run_id=st.report.run_id,
        stage_dir=st.stage_dir,
        quarantine_dir=st.qdir,
        buckets=bucket_count(st.mapping, st.cfg, st.units),
        part=st.part,
        erased=st.erased,
        redactor=st.redactor,
        load=st.cfg.load,
    )
    done = _Ticker(st.progress, "extract", len(st.units))
    jobs = [(plan, u, i, delivered_of if u.rel in st.reread else None) for i, u in enumerate(st.units)]
    st.staged = st.stage_fanout(stage_file, jobs, done)
    for s in st.staged:
        st.report.counts.add(s.counts)
    dropped_after_delivery(ledger, target_name, st.mapping, st.staged, st.report)


def _check_quality(st: RunState) -> None:
    """Data Docs published, column drift checked, and the run stopped before sending anything
    when more rows failed than load.max_failed_share allows."""
    report, counts, cfg = st.report, st.report.counts, st.cfg
    if st.validator is not None and cfg.state.data_docs:
        page = st.validator.publish_docs(st.work / "data-docs" / st.name)
        if page:
            report.data_docs = str(page)
            try:  # the site's CSS/JS shipped with it: it opens where nothing public is reachable
                localise(page.parent)
            except OSError as exc:
                report.notes.append(f"Data Docs load their CSS and JavaScript from public CDNs: {exc}")
    if not st.stateless:
        st.columns = drift(st.mapping, [s for s in st.staged if not s.failed], st.baseline, report)
    if counts.read and counts.quarantined / counts.read > cfg.load.max_failed_share:
        # the valid rows are staged and not sent: pending, for the run after the fix (read = outcomes)
        counts.pending += max(0, counts.read - counts.outcomes())
        raise QualityThresholdError(
            st.name, counts.quarantined, counts.read, cfg.load.max_failed_share, counts.reasons.most_common(5)
        )


def _load(st: RunState) -> None:
    """The staged buckets sent, conversations in order, under one rate limiter."""
    cfg, counts = st.cfg, st.report.counts
    limiter = RateLimiter(
        cfg.load.requests_per_second, cfg.load.tokens_per_minute, token_window_s=cfg.load.token_window_s
    )
    st.ctx = ctx = LoadContext(
        mapping=st.mapping,
        load=cfg.load,
        target_cfg=cfg.target,
        client=st.target,
        ledger=st.ledger,
        run_id=st.report.run_id,
        quarantine_dir=st.qdir,
        resend_in_doubt=st.resend_in_doubt,
        limiter=limiter,
        stop=st.stop,
        outbox=Outbox(st.outbox) if st.outbox is not None else None,
        fleet=fleet_limiter(cfg.load, st.ledger) if st.outbox is None else None,
        erased=st.erased,
        rewriting=st.flow == "rewrite",
        read_attachment=getattr(st.source, "attachment_bytes", None),
    )
    buckets = sorted({b for s in st.staged for b in s.buckets})
    done = _Ticker(st.progress, "load", len(buckets))
    try:
        for c in st.load_fanout(load_bucket, [(ctx, st.stage_dir, b) for b in buckets], done):
            counts.add(_without_read(c))
    finally:
        if ctx.outbox is not None:
            ctx.outbox.close()
    if ctx.fatal:
        first = ctx.fatal[0]
        raise first if isinstance(first, Exception) else FatalTargetError(first)


def _finish(st: RunState) -> None:
    """Deletions found, rewrites planned, extraction tracked, the status decided and, with a
    complete load only, the source's state moved (files done, cursor, schema)."""
    ledger, report, counts, target_cfg = st.ledger, st.report, st.report.counts, st.cfg.target
    gone_from_files(ledger, st.target_name, [s for s in st.staged if s.gone is not None], counts)
    if st.rewrites:
        # the intent is durable before any state moves: a killed run's rewrites are finished
        # by the next run, even if the files that showed the change are never read again
        ledger.plan_rewrites(st.target_name, st.name, report.run_id, counts.changed_pairs(rewrite_kinds(st.mapping)))
    if target_cfg.track_extraction and not st.stop.is_set() and st.outbox is None:
        counts.extraction = track_extraction(st.target, ledger, report.run_id, target_cfg.extraction_wait_s, st.stop)
    if st.keeps_state:
        ledger.record_units(st.name, st.target_name, report.run_id, [s.unit for s in st.staged if s.failed], "failed")
    if shutdown.requested.is_set():
        report.status = "interrupted"
    elif st.outbox is not None:
        report.status = "planned"
    elif counts.pending - counts.held_for_rewrite == 0 and counts.in_doubt == 0:
        report.status = "completed"  # held messages are sent by the rewrite that follows
        if st.keeps_state:  # state moves only with a complete load: files done, cursor, schema
            _save_state(ledger, st.name, st.target_name, report.run_id, st.staged, st.columns, st.nightly)
            report.cursor_after = ledger.source_state(st.name, st.target_name)[0]
    else:
        report.status = "incomplete"


def _close(st: RunState) -> None:
    """Whatever happened: the drain released, the report's timings and the run's end recorded,
    the ledger and target closed, the run's staging removed."""
    report, ctx = st.report, st.ctx
    st.stop.set()
    shutdown.unsubscribe(st.stop)
    report.duration_s = time.monotonic() - st.started
    if ctx is not None and ctx.first_request_at is not None:
        report.first_request_at = ctx.first_request_at
        report.first_request_s = round(ctx.first_request_at - st.started_at, 3)
    if st.qdir.exists():
        report.quarantine_path = str(st.qdir)
    try:
        st.ledger.finish_run(report.run_id, report.status, report.to_dict())
    except LedgerError as exc:  # the ledger is gone: the report is still printed; the next
        # run on this host marks this one crashed and frees its conversations
        log.error("%s", exc)
        report.notes.append(
            "the run's end could not be recorded in the ledger (it is down); the next run "
            "marks this run crashed and frees its conversations"
        )
    st.ledger.close()
    if st.own_target:
        st.target.close()
    shutil.rmtree(st.work / "runs" / report.run_id, ignore_errors=True)


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
    summary: dict[str, Any] = {"conversations": 0, "memories_deleted": 0, "messages_forgotten": 0}
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
    rows = total // (kind_of(mapping).bytes_per_row or _BYTES_PER_ROW.get(mapping.source.format or "", 100))
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
    # rows were counted as read when staged; the load only takes back the ones it finds were
    # no messages (rows off the path an app shows that were never delivered: skipped)
    c.read = min(c.read, 0)
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
