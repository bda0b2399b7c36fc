"""Replay and rollback: forget on purpose what the ledger says a target holds.

* replay: re-send some users' or conversations' messages, e.g. after they were deleted in
  MemOS or the target was reset. Their delivered requests are dropped from the ledger and
  a run over the whole source, restricted to those conversations, sends them again in order.
* rollback: undo one run. Its memories are found on the target through the provenance every
  request carries in `info` (run_id), deleted, and the run's requests dropped from the
  ledger; files it completed are forgotten and the cursor it moved is put back, so a later
  run loads the same data again.

Both refuse while a request of theirs is in doubt (sent, not confirmed): settle it first.
"""

from __future__ import annotations

import logging

from memos_etl import pipeline
from memos_etl.config import Mapping, RunConfig
from memos_etl.errors import MemosEtlError
from memos_etl.report import RunReport
from tasks.ledger import Ledger
from tasks.extract import Slice

log = logging.getLogger("memos_etl.replay")


class OperationError(MemosEtlError):
    pass


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
        batches = [b for b in ledger.delivered_batches(target, users=users or None,
                                                       conversations=conversations or None)
                   if b["source"] == mapping.source.name]
        if any(b["status"] == "sent" for b in batches):
            raise OperationError("some of these conversations have requests in doubt (sent, never confirmed): "
                                 "run a sync first to settle them, then replay")
        forgotten = 0
        if resumed is None:
            forgotten = ledger.forget_batches(target, [b["batch_key"] for b in batches if b["status"] == "delivered"])
    finally:
        ledger.close()
    report = pipeline.run(mapping, cfg, part=part, flow="replay", **run_kw)
    if resumed:
        report.notes.append(f"resumed the unfinished replay {resumed}: sent what it had not")
    else:
        report.notes.append(f"replay: {forgotten} delivered messages forgotten by the ledger and read again")
    return report


def rollback(cfg: RunConfig, run_id: str, client) -> dict:
    """Delete what run `run_id` loaded from the target and from the ledger. Returns a summary."""
    target = cfg.target.ledger_name
    ledger = Ledger(cfg.state.ledger())
    try:
        run = ledger.run_record(run_id)
        if run is None:
            raise OperationError(f"no run {run_id} in the ledger {cfg.state.ledger()}")
        if run["target"] != target:
            raise OperationError(f"run {run_id} loaded into {run['target']}, not into the configured target {target}")
        if run["status"] == "running":
            raise OperationError(f"run {run_id} is still running (or crashed without being noticed: "
                                 "a sync on its host marks it)")
        if run["status"] == "rolled_back":
            raise OperationError(f"run {run_id} was already rolled back")
        batches = ledger.delivered_batches(target, run_id=run_id)
        sent = [b for b in batches if b["status"] in ("delivered", "sent")]
        users = sorted({b["user_id"] for b in sent})
        memory_ids: list[str] = []
        for user in users:
            memory_ids += client.find_memories(user, {"info.run_id": run_id})
        deleted = client.delete_memories(memory_ids) if memory_ids else 0
        forgotten = ledger.forget_batches(target, [b["batch_key"] for b in sent])
        files = ledger.forget_units_of_run(run["source"], target, run_id)
        report = run["report"] or {}
        cursor_note = "cursor unchanged"
        now, _ = ledger.source_state(run["source"], target)
        if report.get("cursor_after") is not None and now == report.get("cursor_after") \
                and report.get("cursor_before") != now:
            ledger.set_cursor(run["source"], target, report.get("cursor_before"))
            cursor_note = "cursor put back to where the run found it"
        ledger.set_run_status(run_id, "rolled_back")
        return {"run_id": run_id, "source": run["source"], "users": len(users), "requests": len(sent),
                "messages_forgotten": forgotten, "memories_deleted": deleted, "files_forgotten": files,
                "cursor": cursor_note}
    finally:
        ledger.close()
