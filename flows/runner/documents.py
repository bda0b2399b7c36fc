"""A documents source's run: files (a folder, S3, a zip) uploaded to a MemOS knowledge base,
each version once.

The steps, in order, each recorded in the ledger before the next (core/ledger/documents.py):

1. settle: uploads a killed or cut-off run left unanswered (`sent`) are looked for in the
   knowledge base (a file of that name and size that no other version holds) and take its id;
   the ones not there are forgotten and sent again below. Nothing is sent before this.
2. list and compare: a file whose listing version (size and mtime, an ETag, a zip member's CRC)
   is unchanged since a complete run is not read; the others are read and hashed, and a file
   whose bytes MemOS already holds (same path, same sha256) is not sent again.
3. check (tasks/documents/check.py): what MemOS reads and within its limits is uploaded, an
   empty file is skipped (counted), anything else is quarantined with its reason.
4. upload, at most 20 files and 300 MB a request, under the run's rate limiter: `sent` before
   the request, MemOS's file ids after it.
5. replace and delete: a path's older version is deleted in MemOS once its new one is accepted
   (`on_change: replace`); a path gone from the source is deleted there (`on_delete: delete`),
   or reported (`report`).
6. poll parse status with backoff for up to `documents.parse_wait_s`: `completed` or `failed`
   per file (failed parses are listed in the report).

The report counts files: `read` (files read), `delivered` (uploaded), `quarantined` (skipped
with a reason), `already_delivered` (read, MemOS holds those bytes), `units_skipped` (not read:
unchanged), plus `documents` details in the notes."""

from __future__ import annotations

import hashlib
import logging
import posixpath
import time
import uuid
from pathlib import Path

from core import shutdown
from core.client import knowledge, make_target
from core.config import Mapping, RunConfig
from core.errors import SourceError, TerminalBatchError, TransientError
from core.ledger import Ledger
from core.limiter import RateLimiter
from core.report import RunReport
from flows.runner.knowledge import erased_paths, erasure_scope, open_knowledgebase
from tasks.documents.check import Limits, check
from tasks.extract import Slice, open_source
from tasks.extract.streams import MEMBER_SEP, open_bytes
from tasks.quarantine import BadRow, QuarantineWriter, Reason, bad_rows_table, quarantine_dir

log = logging.getLogger(__name__)

#: the lease that keeps two runs of one documents source from uploading at once
LEASE_USER = "~documents"


def run(
    mapping: Mapping,
    cfg: RunConfig,
    *,
    run_id: str | None = None,
    target=None,
    flow: str = "sync",
    part: Slice | None = None,
    outbox: Path | None = None,
    progress=None,
    **_ignored,
) -> RunReport:
    """Sync one documents source (see the module docstring); a RunReport counting files."""
    assert mapping.documents is not None  # format documents: the mapping requires its section
    started = time.monotonic()
    run_id = run_id or f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
    name, target_name = mapping.source.name, cfg.target.ledger_name
    report = RunReport(run_id=run_id, source=name, target=target_name, flow="plan" if outbox else flow)
    ledger = Ledger(cfg.state.ledger())
    ledger.dead_runs()  # a killed run of this host: marked crashed, its lease freed
    own_target = target is None
    target = target or make_target(cfg.target)
    ledger.start_run(run_id, report.flow, name, target_name, {})
    qdir = quarantine_dir(cfg.state.work_dir, name, run_id)
    held = False
    try:
        held = bool(ledger.acquire(target_name, run_id, [(LEASE_USER, name)], ttl_s=cfg.load.lease_ttl_s))
        if not held:
            raise SourceError(name, "documents", "another run of this source is uploading now; try again after it")
        _sync(mapping, cfg, ledger, target, report, qdir, outbox is not None, progress)
    except Exception as exc:
        report.status = "failed"
        report.error = str(exc)
        exc.report = report  # type: ignore[attr-defined]  # callers print what happened before the failure
        raise
    finally:
        if held:
            ledger.release(target_name, run_id, [(LEASE_USER, name)])
        report.duration_s = time.monotonic() - started
        if qdir.exists():
            report.quarantine_path = str(qdir)
        ledger.finish_run(run_id, report.status, report.to_dict())
        ledger.close()
        if own_target:
            target.close()
    return report


def _sync(mapping, cfg, ledger: Ledger, target, report: RunReport, qdir: Path, dry: bool, progress) -> None:
    docs = mapping.documents
    name, target_name, counts = mapping.source.name, cfg.target.ledger_name, report.counts
    source = open_source(mapping)
    units = source.units(Slice())
    report.files = len(units)
    kb = None if dry else open_knowledgebase(cfg, ledger, target, mapping, create=True)
    manifest = ledger.manifest(name, target_name)
    listed = {u.rel for u in units}
    todo = [u for u in units if manifest.get(u.rel) != (u.version, "done")]  # the rest: unchanged, not read
    erased = erased_paths(ledger, name)
    if erased:  # files `memos-etl erase --document` took out: never uploaded again
        gone_for_good = [u for u in todo if erasure_scope(name, u.rel)[1] in erased]
        counts.read += len(gone_for_good)
        counts.erased += len(gone_for_good)
        todo = [u for u in todo if erasure_scope(name, u.rel)[1] not in erased]
    counts.units_skipped = len(units) - len(todo)
    # the versions MemOS holds are read only when something may have changed: a file listed anew
    # or changed, a file gone (every held version's path was in the manifest), an upload in doubt
    vanished = any(rel not in listed for rel in manifest)
    in_doubt = ledger.documents_count(target_name, name).get("sent", 0)
    held = ledger.documents(target_name, name) if todo or vanished or in_doubt else []
    if kb is not None and in_doubt:
        held = _settle(ledger, kb, target_name, name, held, report)
    current = {}  # path -> its newest version MemOS holds (or may: running, completed, failed)
    for row in held:
        current[row["path"]] = row  # oldest first: the newest wins
    limits = Limits(file_bytes=docs.max_file_bytes, pages=docs.max_pages)
    uploads: list[dict] = []
    done_units, failed_units = (gone_for_good if erased else []), []
    quarantine = QuarantineWriter(qdir, "documents")
    try:
        for u in todo:
            try:
                data = _read(source, u)
            except (OSError, SourceError) as exc:
                counts.read += 1
                counts.units_failed += 1
                _skip(quarantine, report, name, u.rel, f"cannot read: {exc}", "unreadable file")
                failed_units.append(u)
                continue
            doc = check(u.rel, data, limits, mapping.source.encoding)
            if doc.outcome == "empty":  # nothing to upload: counted apart, not read
                counts.skipped["empty file"] += 1
                done_units.append(u)
                continue
            counts.read += 1
            if doc.outcome == "skip":
                _skip(quarantine, report, name, u.rel, doc.reason or "skipped", "not uploaded")
                done_units.append(u)
                continue
            sha = hashlib.sha256(doc.data).hexdigest()
            old = current.get(u.rel)
            if old is not None and old["sha256"] == sha:
                counts.already_delivered += 1
                done_units.append(u)
                continue
            if old is not None and mapping.on_change != "replace":
                counts.changed_after_delivery += 1  # on_change: report: MemOS keeps the old version
                counts.note_change("changed", [(name, u.rel)])
                done_units.append(u)
                continue
            uploads.append({"unit": u, "path": u.rel, "sha256": sha, "size": len(doc.data), **_file(u.rel, doc)})
    finally:
        quarantine.close()
    gone = [row for path, row in current.items() if path not in listed]
    if dry:
        counts.planned = len(uploads)
        report.status = "planned"
        report.notes.append(f"documents: {len(uploads)} to upload, {len(gone)} gone from the source")
        return
    assert kb is not None  # not a dry run: the knowledge base is known
    limiter = RateLimiter(cfg.load.requests_per_second, 0.0)
    quarantine = QuarantineWriter(qdir, "documents-refused")
    try:
        sent_ok = _upload(
            ledger, kb, target_name, name, report.run_id, uploads, limiter, report, cfg.load.lease_ttl_s, quarantine
        )
    finally:
        quarantine.close()
    stale = [current[f["path"]] for f in sent_ok if f["path"] in current]
    _remove(ledger, kb, target_name, name, stale, "replaced", report)
    if gone:
        if mapping.on_delete == "delete":
            _remove(ledger, kb, target_name, name, gone, "deleted", report)
        else:
            counts.gone_from_source += len(gone)
            counts.note_change("gone", [(name, row["path"]) for row in gone])
    ledger.record_units(name, target_name, report.run_id, [u for u in done_units], "done")
    ledger.record_units(name, target_name, report.run_id, [f["unit"] for f in sent_ok], "done")
    if failed_units:
        ledger.record_units(name, target_name, report.run_id, failed_units, "failed")
    # a path no longer listed leaves the manifest once nothing of it is held (deleted there, or
    # never uploaded: empty, skipped); under on_delete: report it stays, and is reported again
    still = {row["path"] for row in gone} if mapping.on_delete != "delete" else set()
    ledger.forget_units(name, target_name, [rel for rel in manifest if rel not in listed and rel not in still])
    _poll(ledger, kb, target_name, name, mapping.documents.parse_wait_s, report)
    if shutdown.requested.is_set():
        report.status = "interrupted"
    else:
        report.status = "completed" if counts.pending == 0 and counts.in_doubt == 0 else "incomplete"


def _settle(ledger: Ledger, kb, target_name: str, name: str, held: list[dict], report) -> list[dict]:
    """Unanswered uploads (`sent`): the ones the knowledge base holds take its file ids; the
    others are forgotten (sent again)."""
    doubt = [r for r in held if r["status"] == "sent"]
    if not doubt:
        return held
    taken = {r["file_id"] for r in held if r["file_id"]}
    found = kb.find(doubt, taken)
    changes = [
        {"path": r["path"], "sha256": r["sha256"], "file_id": found[i]["id"], "status": found[i]["status"]}
        for i, r in enumerate(doubt)
        if i in found
    ]
    forget = [(r["path"], r["sha256"]) for i, r in enumerate(doubt) if i not in found]
    ledger.documents_update(target_name, name, changes)
    ledger.documents_forget(target_name, name, forget)
    report.counts.reconciled_landed += len(changes)
    report.counts.reconciled_missing += len(forget)
    report.notes.append(
        f"documents in doubt settled: {len(changes)} found in the knowledge base, {len(forget)} not there (sent again)"
    )
    return ledger.documents(target_name, name)


def _read(source, unit) -> bytes:
    """A file's bytes (a zip member's, out of its archive; a compressed file's, decompressed)."""
    with open_bytes(source.fs, unit.path, unit.member) as fh:
        return fh.read()


def _file(rel: str, doc) -> dict:
    """What is uploaded: named by the file's path under the source (a zip member's path in its
    archive), so two files of one name in two folders stay two names in the knowledge base."""
    inner = rel.split(MEMBER_SEP, 1)[-1]
    name = posixpath.join(posixpath.dirname(inner), doc.name)
    return {"name": name, "media_type": doc.media_type, "data": doc.data}


def _skip(quarantine, report: RunReport, source: str, rel: str, reason: str, kind: str) -> None:
    """A file not uploaded, with its reason: one quarantined row."""
    report.counts.quarantined += 1
    report.counts.reasons[f"{kind} ({reason.split(':')[0].split(' (')[0]})"] += 1
    quarantine.write(bad_rows_table(report.run_id, source, rel, [BadRow(0, "file", Reason(kind, reason))]))


def _batches(files: list[dict]) -> list[list[dict]]:
    """Uploads of at most UPLOAD_FILES files and UPLOAD_BYTES bytes, in order."""
    out: list[list[dict]] = []
    size = 0
    for f in files:
        if not out or len(out[-1]) >= knowledge.UPLOAD_FILES or size + f["size"] > knowledge.UPLOAD_BYTES:
            out.append([])
            size = 0
        out[-1].append(f)
        size += f["size"]
    return out


def _upload(ledger, kb, target_name, name, run_id, files, limiter, report, lease_ttl_s, quarantine) -> list[dict]:
    """Each batch `sent` in the ledger, then uploaded, then given its ids. A refused batch is
    quarantined file by file; an unanswered one stays `sent` (settled by the next run)."""
    counts, ok = report.counts, []
    for batch in _batches(files):
        if shutdown.requested.is_set():
            break
        ledger.renew(target_name, run_id, lease_ttl_s)  # the source stays this run's while it uploads
        rows = [{k: f[k] for k in ("path", "sha256", "size", "name")} for f in batch]
        counts.throttle_wait_s += limiter.acquire(0)
        ledger.documents_sent(target_name, name, run_id, kb.id, rows)
        before = kb.requests
        try:
            answer = _send(kb, batch, limiter, counts)
        except TransientError as exc:
            if exc.in_doubt:
                counts.in_doubt += len(batch)
                report.notes.append(f"upload of {len(batch)} files unanswered ({exc}): settled by the next run")
            else:
                ledger.documents_forget(target_name, name, [(f["path"], f["sha256"]) for f in batch])
                counts.pending += len(batch)
                report.notes.append(f"upload of {len(batch)} files not sent ({exc}): the next run sends them")
            continue
        except TerminalBatchError as exc:
            ledger.documents_forget(target_name, name, [(f["path"], f["sha256"]) for f in batch])
            counts.quarantined += len(batch)
            counts.quarantined_requests += 1
            counts.reasons[f"refused by MemOS ({str(exc).split(':')[0]})"] += len(batch)
            report.notes.append(f"upload of {len(batch)} files refused: {exc}")
            continue
        finally:
            counts.requests += kb.requests - before
        taken = [(f, a) for f, a in zip(batch, answer, strict=True) if not a.get("refused")]
        refused = [(f, a) for f, a in zip(batch, answer, strict=True) if a.get("refused")]
        ledger.documents_update(
            target_name,
            name,
            [{"path": f["path"], "sha256": f["sha256"], "file_id": a["id"], "status": a["status"]} for f, a in taken],
        )
        if refused:  # one file of the request refused, the others taken (a self-hosted add per file)
            ledger.documents_forget(target_name, name, [(f["path"], f["sha256"]) for f, _ in refused])
            for f, a in refused:
                _skip(quarantine, report, name, f["path"], f"refused by MemOS: {a['refused']}", "refused by MemOS")
        counts.delivered += len(taken)
        ok += [f for f, _ in taken]
    return ok


def _send(kb, batch: list[dict], limiter: RateLimiter, counts) -> list[dict]:
    """One upload, retried while MemOS says it was not taken (throttled, refused connection)."""
    for attempt in range(6):
        try:
            return kb.upload(batch)
        except TransientError as exc:
            if exc.in_doubt or attempt == 5:
                raise
            if exc.throttled:
                counts.throttled += 1
                limiter.on_throttled()
            time.sleep(min(exc.retry_after or 0.2 * 2**attempt, 10.0))
    raise AssertionError("unreachable")


def _remove(ledger, kb, target_name: str, name: str, rows: list[dict], status: str, report) -> None:
    """Versions deleted in MemOS (replaced by a newer one, or gone from the source)."""
    ids = [r["file_id"] for r in rows if r.get("file_id")]
    if not rows:
        return
    if ids:
        kb.delete(ids)
    ledger.documents_update(
        target_name, name, [{"path": r["path"], "sha256": r["sha256"], "status": status} for r in rows]
    )
    if status == "deleted":
        report.counts.gone_from_source += len(rows)
        report.counts.note_change("deleted", [(name, r["path"]) for r in rows])
    else:
        report.counts.note_change("changed", [(name, r["path"]) for r in rows])


def _poll(ledger, kb, target_name: str, name: str, wait_s: float, report) -> None:
    """Parse status of the uploads still running, polled with backoff for up to `wait_s`."""
    deadline, pause = time.monotonic() + wait_s, 0.05
    while True:
        running = [r for r in ledger.documents(target_name, name, ("running",)) if r["file_id"]]
        if not running:
            break
        now = kb.statuses([r["file_id"] for r in running])
        changes = [
            {"path": r["path"], "sha256": r["sha256"], "status": now[r["file_id"]]}
            for r in running
            if now.get(r["file_id"], "running") != "running"
        ]
        ledger.documents_update(target_name, name, changes)
        if len(changes) == len(running) or time.monotonic() + pause > deadline or shutdown.requested.is_set():
            break
        time.sleep(pause)
        pause = min(pause * 2, 5.0)
    by = ledger.documents_count(target_name, name)
    failed = sorted(r["path"] for r in ledger.documents(target_name, name, ("failed",)))
    report.notes.append(
        f"documents in the knowledge base: {by.get('completed', 0)} parsed, "
        f"{by.get('running', 0)} still parsing, {by.get('failed', 0)} failed to parse"
        + (f" ({', '.join(failed[:10])})" if failed else "")
    )
