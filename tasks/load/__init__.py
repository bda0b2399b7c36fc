"""Load: send one bucket of conversations to MemOS, in order, recording each request.

Per request the protocol is: ledger `sent` -> POST -> ledger `delivered` (or `failed` and
quarantined when the target refuses it for good). A request that got no answer is in doubt:
before sending it again we ask the target what the conversation holds (`/get/message`) and
resend only when the messages are not there. Conversations of a bucket are loaded one after
another; buckets are loaded in parallel by the flow.

* context.py  what a run's loader holds
* filters.py  which rows of a bucket are sent
* send.py     one request, from the ledger's `sent` to `delivered`"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from core.errors import LedgerError
from core.identity import unit_hashes
from core.report import Counts
from tasks.batch import conversation_runs, conversation_starts, drop_duplicates, fingerprints, sort_conversations
from tasks.buckets import read_bucket
from tasks.load.context import STREAM_ROWS, LoadContext, backoff_delay, log
from tasks.load.filters import (
    conversation_checks,
    drop_busy,
    drop_erased,
    drop_known,
    drop_late,
    late_mask,
    split_deleted,
)
from tasks.load.send import Sending, cut_requests
from tasks.order import SortedRuns, bucket_parts, sort_runs

__all__ = ["STREAM_ROWS", "LoadContext", "backoff_delay", "drop_erased", "load_bucket"]


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
    conv_runs = conversation_runs(table)

    def leased(held: set, erased: tuple | None) -> Counts:
        nonlocal table, conv_runs
        if erased is not None:
            before = table.num_rows
            table = drop_erased(table, erased, counts)
            if table.num_rows != before:
                conv_runs = conversation_runs(table)
        return _load_leased(ctx, table, conv_runs, held, counts, bucket, hold)

    return _with_leases(ctx, conv_runs[1], table.num_rows, counts, hold, leased)


def _prepare(ctx: LoadContext, table: pa.Table, counts: Counts, hold: set) -> pa.Table:
    """A sorted table's rows that are candidates to send: erased, deleted-in-source and
    repeated rows counted and dropped. Row by row and key by key, so it gives the same on a
    bucket's hash partition of keys (tasks/order.py) as on the whole bucket."""
    table = drop_erased(table, ctx.erased, counts)  # staging dropped them already, unless erased since
    table, rewrite = split_deleted(ctx, table, counts)
    hold |= rewrite
    table, dups = drop_duplicates(table)
    counts.duplicates += dups.num_rows
    return table


def _with_leases(ctx: LoadContext, convs: list, left: int, counts: Counts, hold: set, load) -> Counts:
    """Lease the bucket's conversations `convs` first, then `load(held, erased)`: `held` the
    conversations this run got, `erased` the erasures if they changed since the run began
    (else None). A run that held them before us has recorded everything it sent by the time
    we get them. `left`: the rows to settle, pending if the ledger goes away."""
    if ctx.outbox is not None:  # a dry run sends nothing, so it takes no leases either
        return load(set(convs), None)
    settled = counts.outcomes()
    try:
        held = ctx.ledger.acquire(ctx.target, ctx.run_id, convs, ctx.load.lease_ttl_s)
        try:
            # erasures again, now that the leases are ours: `forget` writes its erasure record, then
            # waits for leases, so either it waits for this bucket or this bucket sees the erasure record
            erased = ctx.ledger.erased()
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
    table = drop_busy(table, runs, held, counts, set())
    table = drop_known(ctx, table, counts, hold)
    # what each conversation already delivered, read once for both checks below
    marks = ctx.ledger.last_orders(ctx.target, table.column("conversation_id").to_pylist()) if table.num_rows else {}
    table = drop_late(ctx, table, counts, bucket, marks)
    table = conversation_checks(ctx, table, counts, marks)
    sending = Sending(ctx, bucket)
    try:
        sending.send_all(table, counts)
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
    sending = Sending(ctx, bucket)
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
            part = drop_busy(part, conversation_runs(part), held, counts, sending.busy)
            if ctx.outbox is None and part.num_rows:
                part = part.append_column("fp", pa.array(fingerprints(part))).append_column(
                    "unit", pa.array(unit_hashes(ctx.mapping.source.name, part.column("source_file")))
                )
            part = drop_known(ctx, part, counts, hold, blocked)
            part = drop_late(ctx, part, counts, bucket, marks, warn=False)
            part = conversation_checks(ctx, part, counts, marks, prev, with_user)
            if part.num_rows == 0:
                continue
            table = part if carry is None else pa.concat_tables([carry, part]).combine_chunks()
            last = int(conversation_starts(table)[-1])  # the last conversation may go on in the next slice
            sending.send_all(table.slice(0, last), counts)
            tail = table.slice(last)
            batches = cut_requests(ctx, tail)
            sending.send(batches[:-1], tail, counts)
            carry = tail.slice(batches[-1].rows[0])  # the last request may go on in the next slice
        counts.pending += runs.rows - done
        if carry is not None:
            sending.send(cut_requests(ctx, carry), carry, counts)
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
    sending: Sending,
) -> set:
    """One pass over a bucket's runs, before anything is sent, for what needs whole
    conversations: adds to `hold` the conversations on_change: replace will rewrite (as
    drop_known does), and returns the conversations with a user message among the rows
    that would be sent. Counts nothing (the slices count) and quarantines nothing."""
    scratch = Counts()
    with_user: set = set()
    for chunk in runs.chunks():
        sending.renew()
        if erased is not None:
            chunk = drop_erased(chunk, erased, scratch)
        chunk = drop_busy(chunk, conversation_runs(chunk), held, scratch, set())
        chunk = drop_known(ctx, chunk, scratch, hold, blocked)
        late = late_mask(chunk, marks)
        if late is not None and ctx.load.late_messages == "quarantine":
            chunk = chunk.filter(pa.array(~late))
        users = chunk.filter(pc.fill_null(pc.equal(chunk.column("role"), "user"), False))
        if users.num_rows:
            with_user.update(conversation_runs(users)[1])
    return with_user
