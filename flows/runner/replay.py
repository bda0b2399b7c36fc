"""Replay: forget on purpose what the ledger says a target holds, and send it again.

* replay: re-send some users' or conversations' messages, e.g. after they were deleted in
  MemOS or the target was reset. Their delivered requests are dropped from the ledger and
  a run over the whole source, restricted to those conversations, sends them again in order.

It refuses while a request of theirs is in doubt (sent, not confirmed): settle it first.
Rollback, which undoes one run, is a step of its own (tasks/rollback.py).
"""

from __future__ import annotations

import logging

from core.config import Mapping, RunConfig
from core.errors import OperationError
from core.ledger import Ledger
from core.report import RunReport
from flows.runner.pipeline import run as pipeline_run
from tasks.extract import Slice

log = logging.getLogger("memos_etl.replay")


def unfinished_replay(ledger: Ledger, source: str, target: str, part: Slice) -> str | None:
    """The run id of an earlier replay of exactly this selection that did not complete."""
    want = part.spec()
    for r in ledger.runs_of(source, target, flow="replay"):
        if r["report"].get("slice") == want:
            return None if r["status"] == "completed" else r["run_id"]
    return None


def replay(mapping: Mapping, cfg: RunConfig, users: list[str], conversations: list[str], **run_kw) -> RunReport:
    if not users and not conversations:
        raise OperationError("replay needs --user or --conversation (a whole source: use `reset` and sync)")
    target = cfg.target.ledger_name
    part = Slice(users=tuple(users), conversations=tuple(conversations))
    ledger = Ledger(cfg.state.ledger())
    try:
        resumed = unfinished_replay(ledger, mapping.source.name, target, part)
        batches = [
            b
            for b in ledger.delivered_batches(target, users=users or None, conversations=conversations or None)
            if b["source"] == mapping.source.name
        ]
        if any(b["status"] == "sent" for b in batches):
            raise OperationError(
                "some of these conversations have requests in doubt (sent, never confirmed): "
                "run a sync first to settle them, then replay"
            )
        forgotten = 0
        if resumed is None:
            forgotten = ledger.forget_batches(target, [b["batch_key"] for b in batches if b["status"] == "delivered"])
    finally:
        ledger.close()
    report = pipeline_run(mapping, cfg, part=part, flow="replay", **run_kw)
    if resumed:
        report.notes.append(f"resumed the unfinished replay {resumed}: sent what it had not")
    else:
        report.notes.append(f"replay: {forgotten} delivered messages forgotten by the ledger and read again")
    return report
