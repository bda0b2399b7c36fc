"""The Prefect-free runner: one run of a source into a target (run.py), replay built on it
(replay.py). The Prefect flows and `--no-prefect` call the same functions."""

from __future__ import annotations

from flows.runner.pipeline import (
    BUCKET_ROWS,
    Outbox,
    bucket_count,
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
    "new_run_id",
    "preflight",
    "redrive",
    "rewrite_conversations",
    "run",
    "serial_map",
    "thread_map",
]


def make_target(cfg):  # TEMPORARY: the CLI moves to core.client.make_target (removed before commit)
    from core.client import make_target as _mt

    return _mt(cfg.target, pool_size=cfg.load.concurrency + 2)
