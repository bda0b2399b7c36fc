"""Run report: what happened to every message read, and how the run went."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field


@dataclass
class Counts:
    """Message counts; `read` always equals the sum of the outcome fields (see `accounted`)."""

    read: int = 0
    quarantined: int = 0  # failed validation, or refused by the target for good
    duplicates: int = 0  # same source key seen again in this run: loaded once
    already_delivered: int = 0  # the ledger says the target has it
    delivered: int = 0
    in_doubt: int = 0  # sent earlier with no answer; not resent without --resend-in-doubt
    pending: int = 0  # valid but not delivered this run (transient failures); the next run sends them
    planned: int = 0  # dry run: would be sent (written to the outbox), nothing sent
    previously_failed: int = 0  # refused by the target in an earlier run (quarantined then)
    late: int = 0  # subset of delivered/quarantined: older than what the conversation already had
    out_of_order: int = 0  # messages whose chat_time goes backwards in their conversation's order
    requests: int = 0
    failed_requests: int = 0
    retries: int = 0
    quarantined_requests: int = 0  # requests the target refused for good
    throttled: int = 0  # answers asking us to slow down (HTTP 429, 40300, 40309)
    throttle_wait_s: float = 0.0  # time senders waited for the client-side rate limiter
    backoff_wait_s: float = 0.0  # time spent in retry backoff
    reconciled_landed: int = 0  # unconfirmed requests found on the target (not resent)
    reconciled_missing: int = 0  # unconfirmed requests not on the target (sent again)
    reconciled_unknown: int = 0  # unconfirmed requests the target could not tell us about
    extraction: dict = field(default_factory=dict)  # async extraction task status -> count
    units_failed: int = 0  # files/objects that could not be read: quarantined whole
    leased_elsewhere: int = 0  # conversations another run was sending to: left pending
    units_skipped: int = 0  # unchanged files/objects the manifest says are done: not read
    empty_skipped: int = 0  # nested elements with no text, left out by nest.skip_empty: not messages, not read
    # "<kind>: <value>" -> rows the mapping's `skip` rules left out (joins, service lines): not read
    skipped: Counter = field(default_factory=Counter)
    # attachments (attachments.mode parts) by what happens to them: "to send as parts",
    # "noted: <why not>" (not in the export, too large, a type MemOS does not read)
    attachments: Counter = field(default_factory=Counter)
    changed_after_delivery: int = 0  # delivered before, read again with other content/time/ids: not resent
    deleted_in_source: int = 0  # read with the source's deleted flag (fields.deleted): never sent
    gone_from_source: int = 0  # delivered earlier, no longer in their re-read file: not read, not an outcome
    erased: int = 0  # of a user or conversation `memos-etl erase` erased: never sent
    redaction_dropped: int = 0  # held personal data whose operator is drop_message: never sent
    redacted: int = 0  # messages whose text redaction changed (not an outcome: they go on)
    redaction_candidates: int = 0  # messages the pre-filter passed to Presidio
    # entity -> {"found": occurrences, "messages": messages holding it}
    redaction: dict = field(default_factory=dict)
    reasons: Counter = field(default_factory=Counter)
    # "user_id/conversation_id" -> {"changed": n, "deleted": n, "gone": n}: delivered messages
    # the source changed or removed, per conversation (what on_change/on_delete act on)
    changes: dict = field(default_factory=dict)

    held_for_rewrite: int = 0  # subset of pending: of conversations being rewritten (on_change/on_delete)

    def note_change(self, kind: str, pairs: list[tuple[str, str]]) -> None:
        """Count `kind` (changed | deleted | gone) for each (user, conversation) in `pairs`."""
        for (u, c), n in Counter(pairs).items():
            entry = self.changes.setdefault(f"{u}/{c}", {"user_id": u, "conversation_id": c})
            entry[kind] = entry.get(kind, 0) + n

    def note_redaction(self, entity: str, found: int, messages: int) -> None:
        """Count `found` occurrences of `entity` redacted, in `messages` messages."""
        entry = self.redaction.setdefault(entity, {"found": 0, "messages": 0})
        entry["found"] += found
        entry["messages"] += messages

    def changed_pairs(self, kinds: set[str]) -> dict[tuple[str, str], str]:
        """(user, conversation) -> the first of `kinds` it has, for conversations that have any."""
        out = {}
        for e in self.changes.values():
            hit = [k for k in ("changed", "deleted", "gone") if k in kinds and e.get(k)]
            if hit:
                out[(e["user_id"], e["conversation_id"])] = hit[0]
        return out

    def add(self, other: Counts) -> Counts:
        for k, v in asdict(other).items():
            if k in ("reasons", "skipped", "attachments"):  # Counters (asdict turns them into counts of pairs)
                getattr(self, k).update(getattr(other, k))
            elif k == "redaction":
                for entity, n in other.redaction.items():
                    self.note_redaction(entity, n["found"], n["messages"])
            elif k == "extraction":
                for status, n in other.extraction.items():
                    self.extraction[status] = self.extraction.get(status, 0) + n
            elif k == "changes":
                for conv, kinds in other.changes.items():
                    entry = self.changes.setdefault(conv, {})
                    for kind, n in kinds.items():
                        entry[kind] = n if kind in ("user_id", "conversation_id") else entry.get(kind, 0) + n
            else:
                setattr(self, k, getattr(self, k) + v)
        return self

    def outcomes(self) -> int:
        return (
            self.quarantined
            + self.duplicates
            + self.already_delivered
            + self.delivered
            + self.in_doubt
            + self.pending
            + self.previously_failed
            + self.planned
            + self.changed_after_delivery
            + self.deleted_in_source
            + self.erased
            + self.redaction_dropped
        )

    @property
    def accounted(self) -> bool:
        return self.read == self.outcomes()


CHANGES_SHOWN = 50  # conversations listed in the markdown report; the JSON has them all


@dataclass
class RunReport:
    run_id: str
    source: str
    target: str
    status: str = "running"
    files: int = 0
    counts: Counts = field(default_factory=Counts)
    notes: list = field(default_factory=list)  # schema drift and other things worth a look
    duration_s: float = 0.0
    # when the first request went out: epoch seconds, and seconds after the run started
    # (what a user waits before anything reaches MemOS: imports, listing, reading, validating)
    first_request_at: float | None = None
    first_request_s: float | None = None
    quarantine_path: str | None = None
    data_docs: str | None = None  # Great Expectations Data Docs index page, when built
    error: str | None = None
    flow: str = "sync"  # sync | backfill | replay | redrive | plan
    slice: dict | None = None  # the bounded part read (backfill partition, replay), see Slice.spec
    cursor_before: str | None = None  # the source cursor when the run started, and after it
    cursor_after: str | None = None
    outbox: str | None = None  # dry run: where the requests that would be sent were written
    # conversations rewritten after this run (on_change: replace / on_delete: delete): counts,
    # the rewrite run's id and status (see pipeline.rewrite_conversations)
    rewrite: dict | None = None
    redacting: list | None = None  # the entities redacted (the mapping's redact section), None: off

    def to_dict(self) -> dict:
        d = asdict(self)
        d["counts"]["reasons"] = dict(self.counts.reasons.most_common())
        d["counts"]["skipped"] = dict(Counter(self.counts.skipped).most_common())
        d["counts"]["attachments"] = dict(Counter(self.counts.attachments).most_common())
        d["counts"]["accounted"] = self.counts.accounted
        return d

    def rows(self) -> list[tuple[str, str]]:
        c = self.counts
        return [
            ("run", self.run_id),
            ("source", self.source),
            ("target", self.target),
            ("status", self.status),
            ("files", f"{self.files} read, {c.units_skipped} unchanged (skipped), {c.units_failed} unreadable"),
            ("read", str(c.read)),
            *(
                [("not messages (skipped)", ", ".join(f"{k} {v}" for k, v in Counter(c.skipped).most_common()))]
                if c.skipped
                else []
            ),
            ("delivered", str(c.delivered)),
            *(
                [("attachments", ", ".join(f"{k} {v}" for k, v in Counter(c.attachments).most_common()))]
                if c.attachments
                else []
            ),
            *([("planned (dry run)", f"{c.planned} messages -> {self.outbox}")] if self.outbox else []),
            ("quarantined", str(c.quarantined)),
            ("duplicates", str(c.duplicates)),
            ("already delivered", str(c.already_delivered)),
            (
                "changed after delivery",
                str(c.changed_after_delivery)
                + (
                    f" (in {sum(1 for v in c.changes.values() if v.get('changed'))} conversations)"
                    if c.changed_after_delivery
                    else ""
                ),
            ),
            (
                "deleted in source",
                f"{c.deleted_in_source + c.gone_from_source}"
                + (
                    f" ({c.deleted_in_source} marked deleted, {c.gone_from_source} gone from re-read files)"
                    if c.deleted_in_source or c.gone_from_source
                    else ""
                ),
            ),
            *([("erased (forgotten)", str(c.erased))] if c.erased else []),
            *(
                [
                    (
                        "personal data",
                        f"{c.redacted} messages redacted, {c.redaction_dropped} dropped "
                        f"({c.redaction_candidates} read by Presidio): "
                        + (
                            ", ".join(f"{e} {v['found']} in {v['messages']}" for e, v in sorted(c.redaction.items()))
                            or "none found"
                        ),
                    )
                ]
                if self.redacting or c.redaction
                else []
            ),
            ("in doubt", str(c.in_doubt)),
            (
                "pending",
                str(c.pending)
                + (f" ({c.leased_elsewhere} conversations busy in another run)" if c.leased_elsewhere else "")
                + (f" ({c.held_for_rewrite} held for conversation rewrites)" if c.held_for_rewrite else ""),
            ),
            ("previously failed", str(c.previously_failed)),
            *(
                [
                    (
                        "rewritten conversations",
                        f"{self.rewrite['conversations']}: "
                        f"{self.rewrite['memories_deleted']} memories deleted, "
                        f"{self.rewrite.get('resent', 0)} messages sent "
                        f"again (run {self.rewrite.get('run_id', '-')}, {self.rewrite.get('status', '?')})",
                    )
                ]
                if self.rewrite
                else []
            ),
            ("late (appended)", str(c.late)),
            ("time goes backwards", str(c.out_of_order)),
            ("add requests", str(c.requests)),
            ("failed requests", str(c.failed_requests)),
            ("retries", str(c.retries)),
            ("quarantined requests", str(c.quarantined_requests)),
            ("throttled answers", str(c.throttled)),
            ("waits (all senders)", f"rate limiter {c.throttle_wait_s:.1f}s, backoff {c.backoff_wait_s:.1f}s"),
            (
                "in-doubt checks",
                f"{c.reconciled_landed} landed, {c.reconciled_missing} missing (resent), "
                f"{c.reconciled_unknown} unknown",
            ),
            *([("extraction", ", ".join(f"{k} {v}" for k, v in sorted(c.extraction.items())))] if c.extraction else []),
            (
                "duration",
                f"{self.duration_s:.1f}s"
                + (f" (first request after {self.first_request_s:.1f}s)" if self.first_request_s is not None else ""),
            ),
            ("read = outcomes", "yes" if c.accounted else f"NO ({c.outcomes()} accounted)"),
        ]

    def markdown(self) -> str:
        lines = [f"# memos-etl run `{self.run_id}`", "", "| | |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in self.rows()]
        if self.counts.reasons:
            lines += ["", "## Quarantine reasons", "", "| reason | rows |", "|---|---|"]
            lines += [f"| {r} | {n} |" for r, n in self.counts.reasons.most_common(10)]
        if self.counts.redaction:
            lines += ["", "## Personal data redacted", "", "| entity | found | messages |", "|---|---|---|"]
            lines += [f"| {e} | {v['found']} | {v['messages']} |" for e, v in sorted(self.counts.redaction.items())]
        if self.counts.changes:
            lines += [
                "",
                "## Changed or deleted after delivery",
                "",
                "Delivered messages the source has since changed or deleted (with on_change: report / "
                "on_delete: report MemOS still holds what was sent).",
                "",
                "| conversation | changed | deleted | gone from file |",
                "|---|---|---|---|",
            ]
            ranked = sorted(
                self.counts.changes.items(),
                key=lambda kv: -sum(kv[1].get(k, 0) for k in ("changed", "deleted", "gone")),
            )
            lines += [
                f"| {conv} | {v.get('changed', 0)} | {v.get('deleted', 0)} | {v.get('gone', 0)} |"
                for conv, v in ranked[:CHANGES_SHOWN]
            ]
            if len(ranked) > CHANGES_SHOWN:
                lines.append(
                    f"\n{len(ranked) - CHANGES_SHOWN} more conversations: see the report's JSON (counts.changes)"
                )
        if self.quarantine_path:
            lines += ["", f"Quarantine: `{self.quarantine_path}`"]
        if self.data_docs:
            lines += ["", f"Data Docs: `{self.data_docs}`"]
        if self.notes:
            lines += ["", "## Notes", ""] + [f"- {n}" for n in self.notes]
        if self.error:
            lines += ["", f"**Error:** {self.error}"]
        return "\n".join(lines)

    def text(self) -> str:
        width = max(len(k) for k, _ in self.rows())
        out = [f"{k:<{width}}  {v}" for k, v in self.rows()]
        if self.counts.reasons:
            out.append("quarantine reasons:")
            out += [f"  {n:>6}  {r}" for r, n in self.counts.reasons.most_common(10)]
        out += [f"note: {n}" for n in self.notes]
        if self.quarantine_path:
            out.append(f"quarantine: {self.quarantine_path}")
        if self.data_docs:
            out.append(f"data docs: {self.data_docs}")
        if self.error:
            out.append(f"error: {self.error}")
        return "\n".join(out)
