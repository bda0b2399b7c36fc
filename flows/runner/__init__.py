"""The Prefect-free runner: one run of a source into a target (run.py), replay built on it
(replay.py). The Prefect flows and `--no-prefect` call the same functions."""

from __future__ import annotations

from flows.runner.pipeline import (
    BUCKET_ROWS,
    Outbox,
    bucket_count,
    make_target,
    new_run_id,
    preflight,
    redrive,
    rewrite_conversations,
    run,
    serial_map,
    thread_map,
)

__all__ = [
    "BUCKET_ROWS",
    "Outbox",
    "bucket_count",
    "make_target",
    "new_run_id",
    "preflight",
    "redrive",
    "rewrite_conversations",
    "run",
    "serial_map",
    "thread_map",
]
