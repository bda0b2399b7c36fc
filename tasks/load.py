"""Load: send one bucket of conversations to MemOS, in order, recording each request.

Per request the protocol is: ledger `sent` -> POST -> ledger `delivered` (or `failed` and
quarantined when the target refuses it for good). A request that got no answer is in doubt:
before sending it again we ask the target what the conversation holds (`/get/message`) and
resend only when the messages are not there. Conversations of a bucket are loaded one after
another; buckets are loaded in parallel by the flow.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from memos_etl.client import TerminalBatchError, TransientError
from memos_etl.config import LoadConfig, Mapping, TargetConfig
from memos_etl.errors import FatalTargetError
from memos_etl.limiter import RateLimiter
from memos_etl.memory import release_unused
from memos_etl.report import Counts
from tasks.batch import (RequestBatch, conversation_runs, drop_duplicates, fingerprints, make_batches,
                         order_values, sort_conversations)
from tasks.ledger import BatchRecord, Ledger, LedgerError, erased_mask
from tasks.ledger.deliveries import unit_hashes
from tasks.quarantine import QuarantineWriter, rows_table
from tasks.reconcile import check
from tasks.stage import read_bucket

log = logging.getLogger("memos_etl.load")


@dataclass
class LoadContext:
    mapping: Mapping
    load: LoadConfig
    target_cfg: TargetConfig
    client: object  # CloudTarget or any adapter with add() and get_messages()
    ledger: Ledger
    run_id: str
    quarantine_dir: Path
    resend_in_doubt: bool = False
    limiter: RateLimiter = field(default_factory=RateLimiter)
    stop: threading.Event = field(default_factory=threading.Event)
    fatal: list = field(default_factory=list)
    outbox: object = None  # dry run: pipeline.Outbox that takes the requests instead of the target
    fleet: object = None  # limiter.FleetLimiter shared by all workers, or None
    failures_in_a_row: int = 0  # across all senders; a breaker for a target that is down
    # tombstones of `memos-etl forget`, read once per run: (erased users, erased (user, conversation))
    erased: tuple = (frozenset(), frozenset())
    rewriting: bool = False  # this run sends conversations being rewritten; other runs hold them back
    first_request_at: float | None = None  # time.time() of the run's first request to the target
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def failed(self, exc: Exception) -> None:
        with self._lock:
            self.failures_in_a_row += 1
            if self.failures_in_a_row >= self.load.max_consecutive_failures and not self.fatal:
                self.fatal.append(f"MemOS at {self.target_cfg.base_url} looks down: {self.failures_in_a_row} "
                                  f"requests failed in a row (last: {exc}). Nothing is lost; re-run when it is back.")
                self.stop.set()

    def succeeded(self) -> None:
        self.failures_in_a_row = 0

    @property
    def target(self) -> str:
        return self.target_cfg.ledger_name


def backoff_delay(attempt: int, base: float, cap: float, retry_after: float | None) -> float:
    """Exponential backoff with full jitter; never shorter than the server's Retry-After."""
    delay = random.uniform(0, min(cap, base * (2 ** attempt)))
    return max(delay, retry_after or 0.0)


def load_bucket(ctx: LoadContext, stage_dir: Path, bucket: int) -> Counts:
    counts = Counts()
    table = sort_conversations(read_bucket(stage_dir, bucket))
    table = drop_erased(table, ctx.erased, counts)  # staging dropped them already, unless erased since
    table, hold = _split_deleted(ctx, table, counts)
    table, dups = drop_duplicates(table)
    counts.duplicates += dups.num_rows
    if ctx.outbox is None and table.num_rows:  # what the ledger keeps of each message it sends
        table = table.append_column("fp", pa.array(fingerprints(table))).append_column(
            "unit", pa.array(unit_hashes(ctx.mapping.source.name, table.column("source_file"))))
    # lease the bucket's conversations first, then ask the ledger what is delivered: a run
    # that held them before us has recorded everything it sent by the time we get them
    runs = conversation_runs(table)
    if ctx.outbox is not None:  # a dry run sends nothing, so it takes no leases either
        return _load_leased(ctx, table, runs, set(runs[1]), counts, bucket, hold)
    settled, left = counts.outcomes(), table.num_rows
    try:
        held = ctx.ledger.acquire(ctx.target, ctx.run_id, runs[1], ctx.load.lease_ttl_s)
        try:
            # tombstones again, now that the leases are ours: `forget` writes its tombstone, then
            # waits for leases, so either it waits for this bucket or this bucket sees the tombstone
            erased = ctx.ledger.tombstones()
            if erased != ctx.erased:
                before = table.num_rows
                table = drop_erased(table, erased, counts)
                if table.num_rows != before:
                    runs = conversation_runs(table)
            if not ctx.rewriting:  # conversations a rewrite is replacing get their messages from it
                hold |= ctx.ledger.rewrite_pairs(ctx.target)
            return _load_leased(ctx, table, runs, held, counts, bucket, hold)
        finally:
            ctx.ledger.release(ctx.target, ctx.run_id, sorted(held))
    except LedgerError as exc:
        # the ledger is gone: every sender stops (nothing is sent unrecorded) and the run ends
        # with this one error; what this bucket had not settled waits for the next run
        with ctx._lock:
            if not ctx.fatal:
                ctx.fatal.append(exc)
        ctx.stop.set()
        counts.pending += max(0, left - (counts.outcomes() - settled))
        return counts


def _load_leased(ctx: LoadContext, table: pa.Table, runs: tuple, held: set, counts: Counts, bucket: int,
                 hold: set) -> Counts:
    conv, convs = runs  # of `table` as given: each row's conversation number, the conversations
    busy_conv = np.fromiter((p not in held for p in convs), dtype=bool, count=len(convs))
    if busy_conv.any():
        busy = busy_conv[conv]
        counts.pending += int(busy.sum())  # another run is sending to these conversations now
        counts.leased_elsewhere += int(busy_conv.sum())
        table = table.filter(pa.array(~busy))
    table = _drop_known(ctx, table, counts, hold)
    # what each conversation already delivered, read once for both checks below
    marks = ctx.ledger.last_orders(ctx.target, table.column("conversation_id").to_pylist()) if table.num_rows else {}
    table = _late(ctx, table, counts, bucket, marks)
    table = _conversation_checks(ctx, table, counts, marks)
    provenance = {"source": ctx.mapping.source.name, "run_id": ctx.run_id, "loader": "memos-etl"}
    # a dry run writes no ledger rows, so it needs no message hashes
    batches = make_batches(table, ctx.load, ctx.target, provenance, ctx.mapping.tags, hashes=ctx.outbox is None)
    quarantine = QuarantineWriter(ctx.quarantine_dir, f"load-{bucket:04d}")
    renewed = time.monotonic()
    try:
        i = 0
        while i < len(batches):
            if time.monotonic() - renewed > ctx.load.lease_ttl_s / 3 and ctx.outbox is None:
                ctx.ledger.renew(ctx.target, ctx.run_id, ctx.load.lease_ttl_s)
                renewed = time.monotonic()
            conv = (batches[i].user_id, batches[i].conversation_id)
            j = i
            while j < len(batches) and (batches[j].user_id, batches[j].conversation_id) == conv:
                j += 1
            for k in range(i, j):
                if ctx.stop.is_set():  # the run is stopping: what is left waits for the next run
                    counts.pending += batches[k].n_messages
                    outcome = "pending"
                else:
                    outcome = _send(ctx, batches[k], table, counts, quarantine)
                if outcome in ("pending", "in_doubt"):
                    # later requests of this conversation must wait: order inside it is the contract
                    for b in batches[k + 1:j]:
                        counts.pending += b.n_messages
                    break
            i = j
    finally:
        quarantine.close()
        release_unused()
    return counts


def drop_erased(table: pa.Table, erased: tuple, counts: Counts) -> pa.Table:
    """Rows of users or conversations `memos-etl forget` erased: counted, never sent."""
    hit = erased_mask(table, *erased)
    if hit is None:
        return table
    counts.erased += int(hit.sum())
    return table.filter(pa.array(~hit))


def _split_deleted(ctx: LoadContext, table: pa.Table, counts: Counts) -> tuple[pa.Table, set]:
    """Rows the source marks deleted (fields.deleted): never sent; the delivered ones are
    listed per conversation. Returns the rest, and the conversations on_delete: delete will
    rewrite (their other messages wait for the rewrite)."""
    if table.num_rows == 0 or ctx.mapping.fields.deleted is None:
        return table, set()
    gone = pc.fill_null(table.column("deleted"), False).to_numpy(zero_copy_only=False)
    if not gone.any():
        return table, set()
    rows = table.filter(pa.array(gone))
    counts.deleted_in_source += rows.num_rows
    status = ctx.ledger.message_status(ctx.target, rows.column("key_lo").to_numpy(), rows.column("key_hi").to_numpy())
    was = np.flatnonzero(status == "delivered")
    pairs: list = []
    if len(was):
        idx = pa.array(was)
        pairs = list(zip(rows.column("user_id").take(idx).to_pylist(),
                         rows.column("conversation_id").take(idx).to_pylist()))
        counts.note_change("deleted", pairs)
    rewrite = set(pairs) if ctx.mapping.on_delete == "delete" and not ctx.rewriting else set()
    return table.filter(pa.array(~gone)), rewrite


def _drop_known(ctx: LoadContext, table: pa.Table, counts: Counts, hold: set | None = None) -> pa.Table:
    known = ctx.ledger.known_messages(ctx.target, table.column("key_lo").to_numpy(),
                                      table.column("key_hi").to_numpy())
    status = known.status
    delivered = status == "delivered"
    in_doubt = status == "sent"
    failed = status == "failed"
    # delivered before, but what the source says now is not what was sent: changed after delivery
    comparable = delivered & known.has_fp
    if comparable.any():
        idx = np.flatnonzero(comparable)
        if "fp" in table.schema.names:
            now_fp = table.column("fp").to_numpy()[idx]
        else:  # a dry run computes fingerprints only where there is something to compare
            now_fp = fingerprints(table.take(pa.array(idx)))
        changed_at = idx[now_fp != known.fp[idx]]
        if len(changed_at):
            counts.changed_after_delivery += len(changed_at)
            delivered[changed_at] = False
            rows = pa.array(changed_at)
            pairs = list(zip(table.column("user_id").take(rows).to_pylist(),
                             table.column("conversation_id").take(rows).to_pylist()))
            counts.note_change("changed", pairs)
            if ctx.mapping.on_change == "replace" and hold is not None and not ctx.rewriting:
                hold.update(pairs)
            status = status.copy()
            status[changed_at] = "changed"
    counts.already_delivered += int(delivered.sum())
    counts.previously_failed += int(failed.sum())
    if ctx.resend_in_doubt:
        keep = ~(delivered | failed) & (status != "changed")
    else:
        counts.in_doubt += int(in_doubt.sum())
        keep = status == ""
        # a conversation waiting on an unconfirmed request takes nothing new: sending its later
        # messages first would put them ahead of the ones that may still be missing
        blocked = ctx.ledger.in_doubt_conversations(ctx.target, table.column("conversation_id").to_pylist())
        if blocked:
            conv, convs = conversation_runs(table)
            waiting = keep & np.fromiter((p in blocked for p in convs), dtype=bool, count=len(convs))[conv]
            counts.pending += int(waiting.sum())
            keep &= ~waiting
    if hold and keep.any():  # conversations being rewritten: the rewrite sends them whole, in order
        conv, convs = conversation_runs(table)
        held = keep & np.fromiter((p in hold for p in convs), dtype=bool, count=len(convs))[conv]
        counts.pending += int(held.sum())
        counts.held_for_rewrite += int(held.sum())
        keep &= ~held
    return table if keep.all() else table.filter(pa.array(keep))


def _late(ctx: LoadContext, table: pa.Table, counts: Counts, bucket: int, marks: dict) -> pa.Table:
    """Messages ordered before what their conversation already delivered: append or quarantine."""
    if table.num_rows == 0 or not marks:
        return table
    conv, convs = conversation_runs(table)
    last = np.array([marks.get(k) if marks.get(k) is not None else np.iinfo(np.int64).min
                     for k in convs], dtype=np.int64)[conv]
    order = pc.fill_null(order_values(table), np.iinfo(np.int64).max).to_numpy()
    late = order < last
    n_late = int(late.sum())
    if not n_late:
        return table
    counts.late += n_late
    if ctx.load.late_messages == "append":
        log.warning("bucket %d: %d messages are older than what their conversations already hold; "
                    "appending them (load.late_messages=append)", bucket, n_late)
        return table
    bad = table.filter(pa.array(late))
    _quarantine_rows(ctx, bad, ["late: older than messages already delivered to this conversation "
                                "(load.late_messages=quarantine)"], counts, None, "late")
    return table.filter(pa.array(~late))


def _conversation_checks(ctx: LoadContext, table: pa.Table, counts: Counts, delivered: dict) -> pa.Table:
    """Checks that need a whole conversation: time going backwards (reported), no user message."""
    if table.num_rows == 0:
        return table
    conv, convs = conversation_runs(table)
    new_conv = np.r_[True, conv[1:] != conv[:-1]]
    times = table.column("chat_time").cast(pa.int64()).to_numpy(zero_copy_only=False)
    if len(times) > 1:
        back = np.zeros(len(times), dtype=bool)
        with np.errstate(invalid="ignore"):
            back[1:] = (~new_conv[1:]) & (times[1:] < times[:-1])
        counts.out_of_order += int(back.sum())  # ordered by seq anyway; chat_time is sent as it is
    if not ctx.mapping.checks.conversation_needs_user_message:
        return table
    is_user = pc.fill_null(pc.equal(table.column("role"), "user"), False).to_numpy(zero_copy_only=False)
    has_user = np.zeros(len(convs), dtype=bool)
    has_user[conv[is_user]] = True
    # a conversation that delivered messages before may go on without a user message
    bad_conv = np.fromiter((not u and p not in delivered for u, p in zip(has_user.tolist(), convs)), dtype=bool,
                           count=len(convs))
    bad = bad_conv[conv]
    if not bad.any():
        return table
    _quarantine_rows(ctx, table.filter(pa.array(bad)), ["conversation has no user message "
                                                         "(checks.conversation_needs_user_message)"],
                     counts, None, "checks")
    return table.filter(pa.array(~bad))


def _send(ctx: LoadContext, b: RequestBatch, table: pa.Table, counts: Counts,
          quarantine: QuarantineWriter) -> str:
    """Send one request with retries. Returns delivered | failed | pending | in_doubt."""
    if ctx.outbox is not None:
        ctx.outbox.write(ctx.client.route, ctx.client.add_payload(b))
        counts.planned += b.n_messages
        return "delivered"
    rec = BatchRecord(batch_key=b.batch_key, source=ctx.mapping.source.name, run_id=ctx.run_id,
                      user_id=b.user_id, conversation_id=b.conversation_id, n_tokens=b.n_tokens,
                      first_key=b.first_key, last_key=b.last_key, last_order=b.last_order,
                      key_lo=b.key_lo, key_hi=b.key_hi, msg_hashes=b.msg_hashes, fp=b.fp, unit=b.unit)
    ctx.ledger.record_sent(ctx.target, rec, replace=ctx.resend_in_doubt)
    cfg = ctx.target_cfg
    maybe_applied = False
    attempt, sends = 0, 0
    throttle_deadline = time.monotonic() + cfg.max_throttle_wait_s
    while attempt < cfg.max_attempts:
        if ctx.stop.is_set():
            break
        counts.throttle_wait_s += ctx.limiter.acquire(b.n_tokens, ctx.stop)
        if ctx.fleet is not None and not ctx.stop.is_set():
            counts.throttle_wait_s += ctx.fleet.acquire(b.n_tokens)
        if ctx.stop.is_set():
            break
        if sends:
            counts.retries += 1
        sends += 1
        counts.requests += 1
        if ctx.first_request_at is None:
            ctx.first_request_at = time.time()
        try:
            reply = ctx.client.add(b)
        except TransientError as exc:
            counts.failed_requests += 1
            if exc.throttled:
                counts.throttled += 1
                ctx.limiter.on_throttled()
            if not exc.throttled or time.monotonic() > throttle_deadline:
                attempt += 1  # a refusal to go faster is not a failure of the request
            if not exc.throttled:
                ctx.failed(exc)
            maybe_applied = exc.in_doubt
            if exc.in_doubt:
                if not exc.answered:
                    ctx.stop.wait(cfg.in_doubt_grace_s)
                found = check(ctx.client, ctx.ledger, ctx.target, rec)
                if found:
                    counts.reconciled_landed += 1
                    ctx.ledger.record_delivered(ctx.target, rec, None)
                    counts.delivered += b.n_messages
                    return "delivered"
                if found is None:
                    counts.reconciled_unknown += 1
                    break  # the target cannot tell us: never resend blindly
                counts.reconciled_missing += 1
                maybe_applied = False
            if not exc.throttled:
                log.warning("%s/%s: %s (attempt %d of %d)", b.user_id, b.conversation_id, exc,
                            attempt, cfg.max_attempts)
            if attempt < cfg.max_attempts:
                delay = backoff_delay(max(attempt, 1) - 1 if not exc.throttled else min(sends, 6),
                                      cfg.backoff_base_s, cfg.backoff_cap_s, exc.retry_after)
                counts.backoff_wait_s += delay
                ctx.stop.wait(delay)
            continue
        except TerminalBatchError as exc:
            counts.failed_requests += 1
            counts.quarantined_requests += 1
            ctx.ledger.record_failed(rec, exc.detail)
            rows = table.slice(b.rows[0], b.rows[1] - b.rows[0])
            _quarantine_rows(ctx, rows, [f"target refused the request: {exc}"], counts, quarantine, "load")
            return "failed"
        except FatalTargetError as exc:
            counts.failed_requests += 1
            ctx.ledger.forget_unsent(ctx.target, rec)  # refused, so not applied
            ctx.fatal.append(str(exc))
            ctx.stop.set()
            counts.pending += b.n_messages
            return "pending"
        ctx.limiter.on_success()
        ctx.succeeded()
        ctx.ledger.record_delivered(ctx.target, rec, reply.task_id)
        counts.delivered += b.n_messages
        return "delivered"
    if maybe_applied:
        counts.in_doubt += b.n_messages
        return "in_doubt"
    ctx.ledger.forget_unsent(ctx.target, rec)
    counts.pending += b.n_messages
    return "pending"


def _quarantine_rows(ctx: LoadContext, rows: pa.Table, reasons: list[str], counts: Counts,
                     writer: QuarantineWriter | None, part: str) -> None:
    records = rows.drop_columns([c for c in ("key_lo", "key_hi", "fp", "unit", "deleted")
                                 if c in rows.schema.names]).to_pylist()
    table = rows_table(ctx.run_id, ctx.mapping.source.name, "load", rows.column("source_file").to_pylist(),
                       rows.column("source_row").to_pylist(), rows.column("source_key").to_pylist(),
                       [reasons] * rows.num_rows, records)
    if writer is None:
        writer = QuarantineWriter(ctx.quarantine_dir, f"{part}-{threading.get_ident()}-{time.time_ns()}")
        writer.write(table)
        writer.close()
    else:
        writer.write(table)
    counts.quarantined += rows.num_rows
    for r in reasons:
        counts.reasons[r.split(":")[0] if r.startswith("target refused") else r] += rows.num_rows
