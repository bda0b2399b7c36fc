"""Sending one request: ledger `sent` -> POST -> ledger `delivered` (or `failed` and
quarantined), retries with backoff, in-doubt checks before a resend."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import pyarrow as pa

from core.errors import FatalTargetError, TerminalBatchError, TransientError
from core.ledger import BatchRecord
from core.memory import release_unused
from core.report import Counts
from tasks.attachments import count_parts, inline
from tasks.batch import (
    RequestBatch,
    conversation_slices,
    make_batches,
)
from tasks.load.context import LoadContext, backoff_delay, log
from tasks.quarantine import QuarantineWriter, rows_table
from tasks.settle import check

#: rows, and conversations, a table is cut into requests at a time (Sending.send_all). Each
#: request is a Python object of its own (its message JSON, info, keys): cutting a whole bucket
#: at once held one per conversation of the bucket, ~7 KB each, so a bucket of short
#: conversations took several times the memory of its rows (25,000 rows in 6,000
#: conversations of 4: +44 MiB of requests for ~10 MiB of rows)
SLICE_ROWS = 4096
SLICE_CONVERSATIONS = 512


class Sending:
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

    def send_all(self, table: pa.Table, counts: Counts) -> None:
        """Every request of `table` (sorted, whole conversations), cut and sent a slice of
        conversations at a time (SLICE_ROWS, SLICE_CONVERSATIONS): the requests and their
        order are those of cutting the whole table; memory follows a slice."""
        for start, stop in conversation_slices(table, SLICE_ROWS, SLICE_CONVERSATIONS):
            part = table.slice(start, stop - start)
            self.send(cut_requests(self.ctx, part), part, counts)

    def renew(self) -> None:
        ctx = self.ctx
        if ctx.outbox is None and time.monotonic() - self.renewed > ctx.load.lease_ttl_s / 3:
            ctx.ledger.renew(ctx.target, ctx.run_id, ctx.load.lease_ttl_s)
            self.renewed = time.monotonic()

    def close(self) -> None:
        self.quarantine.close()
        release_unused()


def cut_requests(ctx: LoadContext, table: pa.Table) -> list[RequestBatch]:
    provenance = {"source": ctx.mapping.source.name, "run_id": ctx.run_id, "loader": "memos-etl"}
    # a dry run writes no ledger rows, so it needs no message hashes
    return make_batches(table, ctx.load, ctx.target, provenance, ctx.mapping.tags, hashes=ctx.outbox is None)


def with_files(ctx: LoadContext, b: RequestBatch, counts: Counts) -> RequestBatch:
    """The request as it goes out: the files its attachments name read into their parts. A
    file that cannot be read now (moved, changed since staging) leaves its part out and its
    note in the text, counted and logged; the request is sent."""
    if not b.has_parts:
        return b
    text, missing = inline(b.messages_json, ctx.read_attachment)
    for why in missing:
        log.warning("%s/%s: attachment not sent, its note stays in the text: %s", b.user_id, b.conversation_id, why)
    if missing:
        counts.attachments["noted: unreadable when sent"] += len(missing)
    counts.attachments["sent as parts"] += count_parts(b.messages_json) - len(missing)
    return replace(b, messages_json=text)


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
    sending = with_files(ctx, b, counts)  # attachments' data, read now (the ledger keeps b's key)
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
            counts.throttle_wait_s += ctx.fleet.acquire(b.n_tokens, ctx.stop)
        if ctx.stop.is_set():
            break
        if sends:
            counts.retries += 1
        sends += 1
        counts.requests += 1
        if ctx.first_request_at is None:
            ctx.first_request_at = time.time()
        try:
            reply = ctx.client.add(sending)
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
            quarantine_rows(ctx, rows, [f"target refused the request: {exc}"], counts, quarantine, "load")
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


def quarantine_rows(
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
