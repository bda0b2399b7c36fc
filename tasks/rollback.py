"""Rollback: undo one run. Its memories are found on the target through the provenance every
request carries in `info` (run_id) and deleted, and the run's requests dropped from the ledger;
files it completed are forgotten and the cursor it moved is put back, so a later run loads the
same data again."""

from __future__ import annotations

from core.config import RunConfig
from core.errors import OperationError
from core.ledger import Ledger


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
            raise OperationError(
                f"run {run_id} is still running (or crashed without being noticed: a sync on its host marks it)"
            )
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
        if (
            report.get("cursor_after") is not None
            and now == report.get("cursor_after")
            and report.get("cursor_before") != now
        ):
            ledger.set_cursor(run["source"], target, report.get("cursor_before"))
            cursor_note = "cursor put back to where the run found it"
        ledger.set_run_status(run_id, "rolled_back")
        return {
            "run_id": run_id,
            "source": run["source"],
            "users": len(users),
            "requests": len(sent),
            "messages_forgotten": forgotten,
            "memories_deleted": deleted,
            "files_forgotten": files,
            "cursor": cursor_note,
        }
    finally:
        ledger.close()
