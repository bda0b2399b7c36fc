"""The sync pipeline as plain functions: stage every file, check quality, load every bucket.

`run` takes two `map` callables so the same code runs under Prefect (each file and each
bucket a task run, see flows/sync.py) or as direct calls (tests, benchmarks).
"""

from __future__ import annotations

import logging
import shutil
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable

from memos_etl.client import CloudTarget, resolve_api_key
from memos_etl.config import Mapping, RunConfig
from memos_etl.errors import FatalTargetError, QualityThresholdError
from memos_etl.report import Counts, RunReport
from tasks.checkpoint import Ledger
from tasks.extract import list_files, read_schema
from tasks.load import LoadContext, load_bucket
from tasks.quarantine import quarantine_dir
from tasks.stage import StageResult, stage_file
from tasks.validate import Validator

log = logging.getLogger("memos_etl")

Mapper = Callable[[Callable, Iterable[tuple]], list]


def serial_map(fn: Callable, items: Iterable[tuple]) -> list:
    return [fn(*args) for args in items]


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


def make_target(cfg: RunConfig):
    return CloudTarget(cfg.target, resolve_api_key(cfg.target), pool_size=cfg.load.concurrency + 2)


def preflight(mapping: Mapping) -> list:
    """The source's files; fails before anything is read when a mapped column is missing."""
    files = list_files(mapping)
    mapping.check_columns(read_schema(mapping, files[0]).names, f"file {files[0].rel}")
    return files


def run(mapping: Mapping, cfg: RunConfig, *, run_id: str | None = None, stage_map: Mapper = serial_map,
        load_map: Mapper = serial_map, resend_in_doubt: bool = False, flow: str = "sync",
        target=None) -> RunReport:
    run_id = run_id or new_run_id()
    started = time.monotonic()
    work = Path(cfg.state.work_dir)
    stage_dir = work / "runs" / run_id / "stage"
    qdir = quarantine_dir(cfg.state.work_dir, mapping.source.name, run_id)
    target_cfg = cfg.target
    report = RunReport(run_id=run_id, source=mapping.source.name, target=target_cfg.ledger_name)
    files = preflight(mapping)
    work.mkdir(parents=True, exist_ok=True)
    ledger = Ledger(cfg.state.ledger())
    own_target = target is None
    target = target or make_target(cfg)
    ledger.start_run(run_id, flow, mapping.source.name, target_cfg.ledger_name)
    report.files = len(files)
    counts = report.counts
    try:
        validator = Validator(mapping, cfg.load)
        staged: list[StageResult] = stage_map(stage_file, [
            (mapping, f, i, validator, run_id, stage_dir, qdir, cfg.load.buckets) for i, f in enumerate(files)])
        buckets = sorted({b for s in staged for b in s.buckets})
        for s in staged:
            counts.add(s.counts)
        if counts.read and counts.quarantined / counts.read > cfg.load.max_failed_share:
            raise QualityThresholdError(mapping.source.name, counts.quarantined, counts.read,
                                        cfg.load.max_failed_share, counts.reasons.most_common(5))
        ctx = LoadContext(mapping=mapping, load=cfg.load, target_cfg=target_cfg, client=target, ledger=ledger,
                          run_id=run_id, quarantine_dir=qdir, resend_in_doubt=resend_in_doubt)
        for c in load_map(load_bucket, [(ctx, stage_dir, b) for b in buckets]):
            counts.add(_without_read(c))
        if ctx.fatal:
            raise FatalTargetError(ctx.fatal[0])
        report.status = "completed" if counts.pending == 0 and counts.in_doubt == 0 else "incomplete"
    except Exception as exc:
        report.status = "failed"
        report.error = str(exc)
        exc.report = report  # callers print what happened before the failure
        raise
    finally:
        report.duration_s = time.monotonic() - started
        if qdir.exists():
            report.quarantine_path = str(qdir)
        ledger.finish_run(run_id, report.status, report.to_dict())
        ledger.close()
        if own_target:
            target.close()
        shutil.rmtree(work / "runs" / run_id, ignore_errors=True)
    return report


def _without_read(c: Counts) -> Counts:
    c.read = 0  # rows were counted as read when staged
    return c
