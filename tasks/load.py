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

from core.client import Target
from core.config import LoadConfig, Mapping, TargetConfig
from core.errors import FatalTargetError, LedgerError, TerminalBatchError, TransientError
from core.identity import unit_hashes
from core.ledger import BatchRecord, Ledger, erased_mask
from core.limiter import RateLimiter
from core.memory import release_unused
from core.report import Counts
from tasks.batch import (
    RequestBatch,
    conversation_runs,
    drop_duplicates,
    fingerprints,
    make_batches,
    order_values,
    sort_conversations,
)
from tasks.order import SortedRuns, bucket_parts, sort_runs
from tasks.quarantine import QuarantineWriter, rows_table
from tasks.settle import check
from tasks.stage import read_bucket

log = logging.getLogger("memos_etl.load")

#: rows a bucket ordered on disk is loaded in at a time, at most: about what a bucket loaded in
#: memory holds (pipeline.BUCKET_ROWS), so both paths need about the same memory (fewer when
#: a quarter of load.sort_in_memory_bytes holds fewer)
STREAM_ROWS = 20_000


@dataclass
class LoadContext:
    mapping: Mapping
    load: LoadConfig
    target_cfg: TargetConfig
    client: Target
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
                self.fatal.append(
                    f"MemOS at {self.target_cfg.base_url} looks down: {self.failures_in_a_row} "
                    f"requests failed in a row (last: {exc}). Nothing is lost; re-run when it is back."
                )
                self.stop.set()

    def succeeded(self) -> None:
        self.failures_in_a_row = 0

    @property
    def target(self) -> str:
        return self.target_cfg.ledger_name


def backoff_delay(attempt: int, base: float, cap: float, retry_after: float | None) -> float:
    """Exponential backoff with full jitter; never shorter than the server's Retry-After."""
    delay = random.uniform(0, min(cap, base * (2**attempt)))
    return max(delay, retry_after or 0.0)


def load_bucket(ctx: LoadContext, stage_dir: Path, bucket: int) -> Counts:
    counts = Counts()
    hold: set = set()  # conversations whose messages wait for a rewrite
    parts = bucket_parts(stage_dir, bucket)
    staged = sum(p.stat().st_size for p in parts)
    if staged > ctx.load.sort_in_memory_bytes:
        # too big to sort in memory (one long conversation, say): ordered from sorted runs on
        # disk and loaded in slices, with the same requests
        runs = sort_runs(
            parts,
            stage_dir.parent / "order" / f"bucket={bucket:04d}",
            ctx.load.sort_in_memory_bytes,
            lambda part: _prepare(ctx, part, counts, hold),
        )
        log.info(
            "bucket %d: %.1f MiB staged (load.sort_in_memory_bytes: %.1f MiB), ordered from %d sorted runs on disk",
            bucket,
            staged / 2**20,
            ctx.load.sort_in_memory_bytes / 2**20,
            len(runs.runs),
        )
        try:
            return _with_leases(
                ctx,
                runs.conversations,
                runs.rows,
                counts,
                hold,
                lambda held, erased: _load_stream(ctx, runs, held, erased, counts, bucket, hold),
            )
        finally:
            runs.close()
    table = _prepare(ctx, sort_conversations(read_bucket(stage_dir, bucket)), counts, hold)
    if ctx.outbox is None and table.num_rows:  # what the ledger keeps of each message it sends
        table = table.append_column("fp", pa.array(fingerprints(table))).append_column(
            "unit", pa.array(unit_hashes(ctx.mapping.source.name, table.column("source_file")))
        )
    runs = conversation_runs(table)

    def leased(held: set, erased: tuple | None) -> Counts:
        nonlocal table, runs
        if erased is not None:
            before = table.num_rows
            table = drop_erased(table, erased, counts)
            if table.num_rows != before:
                runs = conversation_runs(table)
        return _load_leased(ctx, table, runs, held, counts, bucket, hold)

    return _with_leases(ctx, runs[1], table.num_rows, counts, hold, leased)


def _prepare(ctx: LoadContext, table: pa.Table, counts: Counts, hold: set) -> pa.Table:
    """A sorted table's rows that are candidates to send: erased, deleted-in-source and
    repeated rows counted and dropped. Row by row and key by key, so it gives the same on a
    bucket's hash partition of keys (tasks/order.py) as on the whole bucket."""
    table = drop_erased(table, ctx.erased, counts)  # staging dropped them already, unless erased since
    table, rewrite = _split_deleted(ctx, table, counts)
    hold |= rewrite
    table, dups = drop_duplicates(table)
    counts.duplicates += dups.num_rows
    return table


def _with_leases(ctx: LoadContext, convs: list, left: int, counts: Counts, hold: set, load) -> Counts:
    """Lease the bucket's conversations `convs` first, then `load(held, erased)`: `held` the
    conversations this run got, `erased` the tombstones if they changed since the run began
    (else None). A run that held them before us has recorded everything it sent by the time
    we get them. `left`: the rows to settle, pending if the ledger goes away."""
    if ctx.outbox is not None:  # a dry run sends nothing, so it takes no leases either
        return load(set(convs), None)
    settled = counts.outcomes()
    try:
        held = ctx.ledger.acquire(ctx.target, ctx.run_id, convs, ctx.load.lease_ttl_s)
        try:
            # tombstones again, now that the leases are ours: `forget` writes its tombstone, then
            # waits for leases, so either it waits for this bucket or this bucket sees the tombstone
            erased = ctx.ledger.tombstones()
            if not ctx.rewriting:  # conversations a rewrite is replacing get their messages from it
                hold |= ctx.ledger.rewrite_pairs(ctx.target)
            return load(held, erased if erased != ctx.erased else None)
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


def _load_leased(
    ctx: LoadContext, table: pa.Table, runs: tuple, held: set, counts: Counts, bucket: int, hold: set
) -> Counts:
    table = _drop_busy(table, runs, held, counts, set())
    table = _drop_known(ctx, table, counts, hold)
    # what each conversation already delivered, read once for both checks below
    marks = ctx.ledger.last_orders(ctx.target, table.column("conversation_id").to_pylist()) if table.num_rows else {}
    table = _late(ctx, table, counts, bucket, marks)
    table = _conversation_checks(ctx, table, counts, marks)
    sending = _Sending(ctx, bucket)
    try:
        sending.send(_requests(ctx, table), table, counts)
    finally:
        sending.close()
    return counts


def _load_stream(
    ctx: LoadContext, runs: SortedRuns, held: set, erased: tuple | None, counts: Counts, bucket: int, hold: set
) -> Counts:
    """_load_leased for a bucket as sorted runs on disk, in slices of its order, with the same
    requests. What _load_leased reads of the whole table first is read for the whole bucket
    before the first request: the ledger's requests in doubt and last orders per conversation
    (sending changes both), and, when a policy needs it, which conversations change (on_change:
    replace holds them whole) and which have a user message (checks), in one pass over the runs.
    A request that could grow into the next slice waits for it."""
    ids = [c for _, c in runs.conversations]
    blocked = set() if ctx.resend_in_doubt else ctx.ledger.in_doubt_conversations(ctx.target, ids)
    marks = ctx.ledger.last_orders(ctx.target, ids) if runs.rows else {}
    sending = _Sending(ctx, bucket)
    with_user = None
    try:
        if (
            ctx.mapping.on_change == "replace" and not ctx.rewriting
        ) or ctx.mapping.checks.conversation_needs_user_message:
            with_user = _survey(ctx, runs, held, erased, hold, blocked, marks, sending)
        late, done, prev, carry = counts.late, 0, [None, None], None
        rows = max(16, min(STREAM_ROWS, int(ctx.load.sort_in_memory_bytes / 4 / runs.row_bytes)))
        for part in runs.ordered(rows):
            if ctx.stop.is_set():  # the run is stopping: what is left waits for the next run
                break
            done += part.num_rows
            if erased is not None:
                part = drop_erased(part, erased, counts)
            part = _drop_busy(part, conversation_runs(part), held, counts, sending.busy)
            if ctx.outbox is None and part.num_rows:
                part = part.append_column("fp", pa.array(fingerprints(part))).append_column(
                    "unit", pa.array(unit_hashes(ctx.mapping.source.name, part.column("source_file")))
                )
            part = _drop_known(ctx, part, counts, hold, blocked)
            part = _late(ctx, part, counts, bucket, marks, warn=False)
            part = _conversation_checks(ctx, part, counts, marks, prev, with_user)
            if part.num_rows == 0:
                continue
            table = part if carry is None else pa.concat_tables([carry, part]).combine_chunks()
            batches = _requests(ctx, table)
            if batches:
                sending.send(batches[:-1], table, counts)
                carry = table.slice(batches[-1].rows[0])  # the last request may go on in the next slice
        counts.pending += runs.rows - done
        if carry is not None:
            sending.send(_requests(ctx, carry), carry, counts)
        if counts.late > late and ctx.load.late_messages == "append":
            log.warning(
                "bucket %d: %d messages are older than what their conversations already hold; "
                "appending them (load.late_messages=append)",
                bucket,
                counts.late - late,
            )
    finally:
        sending.close()
    return counts


def _survey(
    ctx: LoadContext,
    runs: SortedRuns,
    held: set,
    erased: tuple | None,
    hold: set,
    blocked: set,
    marks: dict,
    sending: _Sending,
) -> set:
    """One pass over a bucket's runs, before anything is sent, for what needs whole
    conversations: adds to `hold` the conversations on_change: replace will rewrite (as
    _drop_known does), and returns the conversations with a user message among the rows
    that would be sent. Counts nothing (the slices count) and quarantines nothing."""
    scratch = Counts()
    with_user: set = set()
    for chunk in runs.chunks():
        sending.renew()
        if erased is not None:
            chunk = drop_erased(chunk, erased, scratch)
        chunk = _drop_busy(chunk, conversation_runs(chunk), held, scratch, set())
        chunk = _drop_known(ctx, chunk, scratch, hold, blocked)
        late = _late_mask(chunk, marks)
        if late is not None and ctx.load.late_messages == "quarantine":
            chunk = chunk.filter(pa.array(~late))
        users = chunk.filter(pc.fill_null(pc.equal(chunk.column("role"), "user"), False))
        if users.num_rows:
            with_user.update(conversation_runs(users)[1])
    return with_user


class _Sending:
    """Sends a bucket's requests in order, a list (a slice's) at a time: a conversation whose
    request did not settle sends nothing more; the leases are renewed as it goes."""

    def __init__(self, ctx: LoadContext, bucket: int):
        self.ctx = ctx
        self.quarantine = QuarantineWriter(ctx.quarantine_dir, f"load-{bucket:04d}")
        self.renewed = time.monotonic()
        self.stopped: tuple | None = None  # (user, conversation) whose later requests wait
        self.busy: set = set()  # conversations leased elsewhere, counted once

    def send(self, batches: list[RequestBatch], table: pa.Table, counts: Counts) -> None:
        ctx = self.ctx
        for b in batches:
            conv = (b.user_id, b.conversation_id)
            if conv == self.stopped:
                # later requests of this conversation must wait: order inside it is the contract
                counts.pending += b.n_messages
                continue
            self.renew()
            if ctx.stop.is_set():  # the run is stopping: what is left waits for the next run
                counts.pending += b.n_messages
                outcome = "pending"
            else:
                outcome = _send(ctx, b, table, counts, self.quarantine)
            if outcome in ("pending", "in_doubt"):
                self.stopped = conv

    def renew(self) -> None:
        ctx = self.ctx
        if ctx.outbox is None and time.monotonic() - self.renewed > ctx.load.lease_ttl_s / 3:
            ctx.ledger.renew(ctx.target, ctx.run_id, ctx.load.lease_ttl_s)
            self.renewed = time.monotonic()

    def close(self) -> None:
        self.quarantine.close()
        release_unused()


def _requests(ctx: LoadContext, table: pa.Table) -> list[RequestBatch]:
    provenance = {"source": ctx.mapping.source.name, "run_id": ctx.run_id, "loader": "memos-etl"}
    # a dry run writes no ledger rows, so it needs no message hashes
    return make_batches(table, ctx.load, ctx.target, provenance, ctx.mapping.tags, hashes=ctx.outbox is None)


def _drop_busy(table: pa.Table, runs: tuple, held: set, counts: Counts, seen: set) -> pa.Table:
    """Rows of conversations another run is sending to now (not in `held`): pending. Each
    such conversation is counted once (`seen`: the ones counted before)."""
    conv, convs = runs  # of `table` as given: each row's conversation number, the conversations
    busy_conv = np.fromiter((p not in held for p in convs), dtype=bool, count=len(convs))
    if not busy_conv.any():
        return table
    busy = busy_conv[conv]
    counts.pending += int(busy.sum())
    new = {p for p, b in zip(convs, busy_conv.tolist()) if b} - seen
    counts.leased_elsewhere += len(new)
    seen |= new
    return table.filter(pa.array(~busy))


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
        pairs = list(
            zip(rows.column("user_id").take(idx).to_pylist(), rows.column("conversation_id").take(idx).to_pylist())
        )
        counts.note_change("deleted", pairs)
    rewrite = set(pairs) if ctx.mapping.on_delete == "delete" and not ctx.rewriting else set()
    return table.filter(pa.array(~gone)), rewrite


def _drop_known(
    ctx: LoadContext, table: pa.Table, counts: Counts, hold: set | None = None, blocked: set | None = None
) -> pa.Table:
    """Rows the ledger knows (delivered, failed, in doubt, changed after delivery) counted and
    dropped; rows of conversations waiting on a request in doubt (`blocked`, else looked up)
    or held for a rewrite (`hold`, which conversations changed under on_change: replace join)
    pending."""
    known = ctx.ledger.known_messages(ctx.target, table.column("key_lo").to_numpy(), table.column("key_hi").to_numpy())
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
            pairs = list(
                zip(
                    table.column("user_id").take(rows).to_pylist(),
                    table.column("conversation_id").take(rows).to_pylist(),
                )
            )
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
        if blocked is None:
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


def _late(ctx: LoadContext, table: pa.Table, counts: Counts, bucket: int, marks: dict, warn: bool = True) -> pa.Table:
    """Messages ordered before what their conversation already delivered: append or quarantine."""
    late = _late_mask(table, marks)
    n_late = int(late.sum()) if late is not None else 0
    if not n_late:
        return table
    counts.late += n_late
    if ctx.load.late_messages == "append":
        if warn:
            log.warning(
                "bucket %d: %d messages are older than what their conversations already hold; "
                "appending them (load.late_messages=append)",
                bucket,
                n_late,
            )
        return table
    bad = table.filter(pa.array(late))
    _quarantine_rows(
        ctx,
        bad,
        ["late: older than messages already delivered to this conversation (load.late_messages=quarantine)"],
        counts,
        None,
        "late",
    )
    return table.filter(pa.array(~late))


def _late_mask(table: pa.Table, marks: dict) -> np.ndarray | None:
    """Per row: ordered before the last message its conversation delivered (`marks`)."""
    if table.num_rows == 0 or not marks:
        return None
    conv, convs = conversation_runs(table)
    last = np.array(
        [marks.get(k) if marks.get(k) is not None else np.iinfo(np.int64).min for k in convs], dtype=np.int64
    )[conv]
    order = pc.fill_null(order_values(table), np.iinfo(np.int64).max).to_numpy()
    return order < last


def _conversation_checks(
    ctx: LoadContext,
    table: pa.Table,
    counts: Counts,
    delivered: dict,
    prev: list | None = None,
    with_user: set | None = None,
) -> pa.Table:
    """Checks that need a whole conversation: time going backwards (reported), no user message.
    For a slice of a longer ordered stream: `prev` is [conversation, chat_time] of the row
    before the slice (updated to its last row), `with_user` the conversations that have a
    user message anywhere."""
    if table.num_rows == 0:
        return table
    conv, convs = conversation_runs(table)
    new_conv = np.r_[True, conv[1:] != conv[:-1]]
    times = table.column("chat_time").cast(pa.int64()).to_numpy(zero_copy_only=False)
    back = np.zeros(len(times), dtype=bool)
    with np.errstate(invalid="ignore"):
        back[1:] = (~new_conv[1:]) & (times[1:] < times[:-1])
        if prev is not None:
            back[0] = prev[0] == convs[0] and bool(times[0] < prev[1])
    counts.out_of_order += int(back.sum())  # ordered by seq anyway; chat_time is sent as it is
    if prev is not None:
        prev[:] = [convs[-1], times[-1]]
    if not ctx.mapping.checks.conversation_needs_user_message:
        return table
    if with_user is not None:
        has_user = np.fromiter((p in with_user for p in convs), dtype=bool, count=len(convs))
    else:
        is_user = pc.fill_null(pc.equal(table.column("role"), "user"), False).to_numpy(zero_copy_only=False)
        has_user = np.zeros(len(convs), dtype=bool)
        has_user[conv[is_user]] = True
    # a conversation that delivered messages before may go on without a user message
    bad_conv = np.fromiter(
        (not u and p not in delivered for u, p in zip(has_user.tolist(), convs)), dtype=bool, count=len(convs)
    )
    bad = bad_conv[conv]
    if not bad.any():
        return table
    _quarantine_rows(
        ctx,
        table.filter(pa.array(bad)),
        ["conversation has no user message (checks.conversation_needs_user_message)"],
        counts,
        None,
        "checks",
    )
    return table.filter(pa.array(~bad))


def _send(ctx: LoadContext, b: RequestBatch, table: pa.Table, counts: Counts, quarantine: QuarantineWriter) -> str:
    """Send one request with retries. Returns delivered | failed | pending | in_doubt."""
    if ctx.outbox is not None:
        ctx.outbox.write(ctx.client.route, ctx.client.add_payload(b))
        counts.planned += b.n_messages
        return "delivered"
    rec = BatchRecord(
        batch_key=b.batch_key,
        source=ctx.mapping.source.name,
        run_id=ctx.run_id,
        user_id=b.user_id,
        conversation_id=b.conversation_id,
        n_tokens=b.n_tokens,
        first_key=b.first_key,
        last_key=b.last_key,
        last_order=b.last_order,
        key_lo=b.key_lo,
        key_hi=b.key_hi,
        msg_hashes=b.msg_hashes,
        fp=b.fp,
        unit=b.unit,
    )
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
                log.warning(
                    "%s/%s: %s (attempt %d of %d)", b.user_id, b.conversation_id, exc, attempt, cfg.max_attempts
                )
            if attempt < cfg.max_attempts:
                delay = backoff_delay(
                    max(attempt, 1) - 1 if not exc.throttled else min(sends, 6),
                    cfg.backoff_base_s,
                    cfg.backoff_cap_s,
                    exc.retry_after,
                )
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


def _quarantine_rows(
    ctx: LoadContext, rows: pa.Table, reasons: list[str], counts: Counts, writer: QuarantineWriter | None, part: str
) -> None:
    records = rows.drop_columns(
        [c for c in ("key_lo", "key_hi", "fp", "unit", "deleted") if c in rows.schema.names]
    ).to_pylist()
    table = rows_table(
        ctx.run_id,
        ctx.mapping.source.name,
        "load",
        rows.column("source_file").to_pylist(),
        rows.column("source_row").to_pylist(),
        rows.column("source_key").to_pylist(),
        [reasons] * rows.num_rows,
        records,
    )
    if writer is None:
        writer = QuarantineWriter(ctx.quarantine_dir, f"{part}-{threading.get_ident()}-{time.time_ns()}")
        writer.write(table)
        writer.close()
    else:
        writer.write(table)
    counts.quarantined += rows.num_rows
    for r in reasons:
        counts.reasons[r.split(":")[0] if r.startswith("target refused") else r] += rows.num_rows
