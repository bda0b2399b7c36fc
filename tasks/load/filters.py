"""Which rows of a bucket are sent: filters applied before requests are cut (held
conversations, erasures, source deletes, what the ledger already has, late arrivals, the
checks a conversation's order needs). Each returns the rows left and counts the others."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.ledger import erased_mask
from core.report import Counts
from tasks.batch import (
    conversation_runs,
    fingerprints,
    order_values,
)
from tasks.load.context import LoadContext, log
from tasks.load.send import quarantine_rows
from tasks.nest.rows import ABANDONED_SKIPPED, off_path_flag


def drop_busy(table: pa.Table, runs: tuple, held: set, counts: Counts, seen: set) -> pa.Table:
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
    """Rows of users or conversations `memos-etl erase` erased: counted, never sent."""
    hit = erased_mask(table, *erased)
    if hit is None:
        return table
    counts.erased += int(hit.sum())
    return table.filter(pa.array(~hit))


def split_deleted(ctx: LoadContext, table: pa.Table, counts: Counts) -> tuple[pa.Table, set]:
    """Rows the source marks deleted (fields.deleted): never sent; the delivered ones are
    listed per conversation. Returns the rest, and the conversations on_delete: delete will
    rewrite (their other messages wait for the rewrite). Rows the flag puts off the path an
    app shows (nest.abandoned mark) are no deletes: a delivered one is changed after
    delivery (on_change: replace rewrites), one never delivered is skipped, not read."""
    if table.num_rows == 0 or ctx.mapping.fields.deleted is None:
        return table, set()
    gone = pc.fill_null(table.column("deleted"), False).to_numpy(zero_copy_only=False)
    if not gone.any():
        return table, set()
    rows = table.filter(pa.array(gone))
    off_path = off_path_flag(ctx.mapping)
    if not off_path:
        counts.deleted_in_source += rows.num_rows
    status = ctx.ledger.message_status(ctx.target, rows.column("key_lo").to_numpy(), rows.column("key_hi").to_numpy())
    was = np.flatnonzero(status == "delivered")
    pairs: list = []
    if len(was):
        idx = pa.array(was)
        pairs = list(
            zip(rows.column("user_id").take(idx).to_pylist(), rows.column("conversation_id").take(idx).to_pylist())
        )
    if off_path:  # the path shown moved (a regenerated answer, an edited prompt)
        counts.changed_after_delivery += len(pairs)
        if unsent := rows.num_rows - len(pairs):  # never part of what MemOS was sent: not a message
            counts.read -= unsent
            counts.skipped[ABANDONED_SKIPPED] += unsent
    counts.note_change("changed" if off_path else "deleted", pairs)
    policy = ctx.mapping.on_change == "replace" if off_path else ctx.mapping.on_delete == "delete"
    rewrite = set(pairs) if policy and not ctx.rewriting else set()
    return table.filter(pa.array(~gone)), rewrite


def drop_known(
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


def drop_late(
    ctx: LoadContext, table: pa.Table, counts: Counts, bucket: int, marks: dict, warn: bool = True
) -> pa.Table:
    """Messages ordered before what their conversation already delivered: append or quarantine."""
    late = late_mask(table, marks)
    if late is None or not late.any():
        return table
    n_late = int(late.sum())
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
    quarantine_rows(
        ctx,
        bad,
        ["late: older than messages already delivered to this conversation (load.late_messages=quarantine)"],
        counts,
        None,
        "late",
    )
    return table.filter(pa.array(~late))


def late_mask(table: pa.Table, marks: dict) -> np.ndarray | None:
    """Per row: ordered before the last message its conversation delivered (`marks`)."""
    if table.num_rows == 0 or not marks:
        return None
    conv, convs = conversation_runs(table)
    last = np.array(
        [marks.get(k) if marks.get(k) is not None else np.iinfo(np.int64).min for k in convs], dtype=np.int64
    )[conv]
    order = pc.fill_null(order_values(table), np.iinfo(np.int64).max).to_numpy()
    return order < last


def conversation_checks(
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
    # rows without seq are in chat_time order here: staging counted them in source order
    back &= table.column("seq").is_valid().to_numpy(zero_copy_only=False)
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
    quarantine_rows(
        ctx,
        table.filter(pa.array(bad)),
        ["conversation has no user message (checks.conversation_needs_user_message)"],
        counts,
        None,
        "checks",
    )
    return table.filter(pa.array(~bad))
