"""Erasure: `memos-etl erase` removes a user (or one conversation) from MemOS and from every
later run, and leaves an erasure log of ids and times, never content.

Order, so that a crash at any point leaves nothing loaded again and a re-run finishes it:
1. the erasure record (ledger `erasures`, status started): from here on no sync, backfill, replay,
   re-drive or reset stages or sends those messages (they are counted as `erased`);
2. wait for runs that hold a lease on those conversations (a bucket in flight) to let go:
   a bucket re-reads the erasure records after taking its leases, so one of the two sees the other;
3. delete the memories on the target: a whole user through MemOS's delete by user_id, one
   conversation through the provenance of each request the ledger recorded (info.batch_key);
4. forget those requests in the ledger, purge local copies (quarantine rows, dry-run
   outboxes, leftover staging), mark the erasure done.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from core.config import RunConfig
from core.errors import CannotTell, TransientError
from core.ledger import Ledger

log = logging.getLogger("memos_etl.erase")


def erase(
    cfg: RunConfig, client, user_id: str, conversation_id: str | None = None, *, lease_wait_s: float = 120.0
) -> dict:
    """Erase `user_id` (or one of its conversations) from the configured target and from every
    later run. Returns a summary; `complete` is False when the target could not delete."""
    target = cfg.target.ledger_name
    ledger = Ledger(cfg.state.ledger())
    try:
        erasure = ledger.start_erasure(user_id, conversation_id, target)
        busy = _wait_for_leases(ledger, target, user_id, conversation_id, lease_wait_s)
        if busy:
            return {
                "erasure_id": erasure,
                "complete": False,
                "problem": f"{busy} of these conversations are still leased by a run after {lease_wait_s:.0f}s; "
                "nothing more was sent to them (erasure record), run erase again when it ends",
            }
        batches = ledger.delivered_batches(
            target, users=[user_id], conversations=[conversation_id] if conversation_id else None
        )
        try:
            if conversation_id is None:
                deleted = client.delete_user_memories(user_id)
            else:
                deleted = client.delete_conversation_memories(
                    user_id, conversation_id, [b["batch_key"] for b in batches]
                )
        except (CannotTell, TransientError) as exc:
            return {
                "erasure_id": erasure,
                "complete": False,
                "requests": len(batches),
                "problem": f"{exc}: the memories on {target} were NOT deleted; no later run loads this "
                "user again (erasure record), and the ledger still lists what the target holds",
            }
        forgotten = ledger.forget_batches(target, [b["batch_key"] for b in batches])
        purged = purge_local(cfg.state.work_dir, ledger, user_id, conversation_id, cfg)
        ledger.finish_erasure(erasure, -1 if deleted is None else deleted, forgotten)
        return {
            "erasure_id": erasure,
            "complete": True,
            "requests": len(batches),
            "memories_deleted": deleted,
            "messages_forgotten": forgotten,
            **purged,
        }
    finally:
        ledger.close()


def _wait_for_leases(ledger: Ledger, target: str, user_id: str, conversation_id: str | None, wait_s: float) -> int:
    """Wait until no live run holds a lease on the erased conversations; returns how many still do."""
    deadline = time.monotonic() + wait_s
    while True:
        ledger.dead_runs()  # leases of runs that are over do not count
        n = ledger.live_leases(target, user_id, conversation_id)
        if not n or time.monotonic() >= deadline:
            return n
        time.sleep(1.0)


def _matches(values: dict, user_id: str, conversation_id: str | None) -> bool:
    return values.get("user_id") == user_id and (
        conversation_id is None or values.get("conversation_id") == conversation_id
    )


def _mentions(record, user_id: str, conversation_id: str | None) -> bool:
    """The id (and conversation id) appear as values anywhere in a raw record: for rows whose
    user the mapping cannot tell (a record nest could not explode, an unreadable file)."""
    seen: set[str] = set()

    def walk(v):
        if isinstance(v, dict):
            for x in v.values():
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)
        elif v is not None:
            seen.add(str(v))

    walk(record)
    return user_id in seen and (conversation_id is None or conversation_id in seen)


def _mapped_ids(mapping, records: list[dict]) -> list[dict | None]:
    """user_id / conversation_id of raw quarantined records through the source's mapping."""
    from tasks.map import map_batch

    out: list[dict | None] = [None] * len(records)
    try:
        table = map_batch(pa.RecordBatch.from_pylist(records), mapping, "", 0)
    except Exception:  # noqa: BLE001 - a record the mapping cannot read: the value scan decides
        return out
    for i, (u, c) in enumerate(zip(table.column("user_id").to_pylist(), table.column("conversation_id").to_pylist())):
        out[i] = {"user_id": u, "conversation_id": c}
    return out


def purge_quarantine(work_dir: str, user_id: str, conversation_id: str | None, mappings: dict) -> int:
    """Remove the erased rows from every quarantine file (rewritten in place, atomically)."""
    root = Path(work_dir) / "quarantine"
    removed = 0
    for f in sorted(root.rglob("*.parquet")) if root.exists() else []:
        table = pq.read_table(f)
        if "record" not in table.schema.names or table.num_rows == 0:
            continue
        source = next((p.split("=", 1)[1] for p in f.parts if p.startswith("source=")), None)
        records = [json.loads(r) if r else {} for r in table.column("record").to_pylist()]
        stages = table.column("stage").to_pylist() if "stage" in table.schema.names else [""] * len(records)
        mapped: list[dict | None] = [None] * len(records)
        validate_rows = [i for i, s in enumerate(stages) if s == "validate"]
        if source in mappings and validate_rows:
            ids = _mapped_ids(mappings[source], [records[i] for i in validate_rows])
            for i, v in zip(validate_rows, ids):
                mapped[i] = v
        drop = []
        for i, rec in enumerate(records):
            if stages[i] == "load" and isinstance(rec, dict):  # a mapped message: its ids are fields
                drop.append(_matches(rec, user_id, conversation_id))
            elif (values := mapped[i]) is not None:
                drop.append(_matches(values, user_id, conversation_id))
            else:
                drop.append(_mentions(rec, user_id, conversation_id))
        n = sum(drop)
        if not n:
            continue
        removed += n
        keep = table.filter(pa.array([not d for d in drop]))
        if keep.num_rows == 0:
            f.unlink()
            continue
        tmp = f.with_suffix(".parquet.tmp")
        pq.write_table(keep, tmp)
        os.replace(tmp, f)
    return removed


def purge_outboxes(work_dir: str, user_id: str, conversation_id: str | None) -> int:
    """Drop the erased conversations' requests from the dry-run outboxes under work_dir/outbox."""
    root = Path(work_dir) / "outbox"
    removed = 0
    for f in sorted(root.glob("*.jsonl")) if root.exists() else []:
        lines = f.read_text(encoding="utf-8").splitlines(keepends=True)
        keep = []
        for line in lines:
            try:
                body = json.loads(line).get("body") or {}
            except ValueError:
                keep.append(line)
                continue
            conv = body.get("conversation_id", body.get("session_id"))
            if _matches({"user_id": body.get("user_id"), "conversation_id": conv}, user_id, conversation_id):
                removed += 1
            else:
                keep.append(line)
        if len(keep) != len(lines):
            tmp = f.with_suffix(".jsonl.tmp")
            tmp.write_text("".join(keep), encoding="utf-8")
            os.replace(tmp, f)
    return removed


def purge_staging(work_dir: str, ledger: Ledger) -> int:
    """Staging left by runs that are over (crashed): removed. A running run's staging stays;
    its buckets re-read the erasure records before sending."""
    root = Path(work_dir) / "runs"
    removed = 0
    for d in sorted(root.iterdir()) if root.exists() else []:
        rec = ledger.run_record(d.name)
        if rec is None or rec["status"] != "running":
            shutil.rmtree(d, ignore_errors=True)
            removed += 1
    return removed


def purge_local(work_dir: str, ledger: Ledger, user_id: str, conversation_id: str | None, cfg: RunConfig) -> dict:
    mappings = {}
    for name in cfg.sources:
        try:
            m = cfg.mapping(name)
            mappings[m.source.name] = m
        except Exception as exc:  # noqa: BLE001 - a broken mapping must not stop an erasure
            log.warning("forget: mapping %s unreadable (%s); its quarantine is scanned by value", name, exc)
    ledger.dead_runs()
    return {
        "quarantine_rows_removed": purge_quarantine(work_dir, user_id, conversation_id, mappings),
        "outbox_requests_removed": purge_outboxes(work_dir, user_id, conversation_id),
        "staging_dirs_removed": purge_staging(work_dir, ledger),
    }
