"""The Prefect-free runner: one run of a source into a target, as plain functions. The Prefect
flows and `--no-prefect` call the same functions.

* pipeline.py  one run in phases over its RunState; the rewrite and re-drive runs built on it
* checks.py    what a run plans and checks around staging (units, columns, drift, deletions)
* fanout.py      how a phase runs its items (serially, on threads; the flows: a task run)
* replay.py    replay: forget some conversations' deliveries and run them again
* backfill.py  a backfill's parts: planned in the ledger, each claimed, run and recorded
"""

from __future__ import annotations

from flows.runner.checks import preflight
from flows.runner.fanout import serial_fanout, thread_fanout
from flows.runner.pipeline import (
    BUCKET_ROWS,
    Outbox,
    bucket_count,
    new_run_id,
    redrive,
    rewrite_conversations,
    run,
)

__all__ = [
    "BUCKET_ROWS",
    "Outbox",
    "bucket_count",
    "new_run_id",
    "preflight",
    "redrive",
    "rewrite_conversations",
    "run",
    "serial_fanout",
    "thread_fanout",
]
