"""Deliveries: what reached which target, request by request, message by message.

MemOS has no idempotency key, so this is what makes loading exactly-once. A request is
written as `sent` with its message keys *before* it goes out and flipped to `delivered` only
after the target acknowledged it, so a crash in between leaves an explicit in-doubt record
instead of a silent gap or a blind resend. Each message keeps the fingerprint of what was
sent and the unit (file, object) it came from, which is how a later read sees it changed or
gone. Conversations keep how far delivery got (the order value of the last message) and the
hashes of their last TAIL messages, for late messages and in-doubt checks.

Why one module of this size: one concept over three tables that change together in one
transaction (batches, messages, conversations); the other ledger concepts are their own
modules.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import sqlalchemy as sa

from core.identity import PAIR, pairs, unit_hash, unit_hashes  # noqa: F401  (re-exported)
from core.ledger.db import Store, guarded, now
from core.ledger.tables import TAIL, batches, conversations, leases, messages, runs

_CHUNK = 5_000  # keys per IN (...) lookup: under SQLite's and PostgreSQL's parameter limits

# only a request still `sent` moves on: a retried call (its first commit's answer was lost
# with the connection) finds it delivered already and leaves the conversation as it is
_MARK_DELIVERED = (
    batches.update()
    .where(batches.c.batch_key == sa.bindparam("b_key"), batches.c.status == "sent")
    .values(status="delivered", acked_at=sa.bindparam("b_at"), task_id=sa.bindparam("b_task"))
)
_CONVERSATION_KEY = (
    (conversations.c.target == sa.bindparam("b_target"))
    & (conversations.c.user_id == sa.bindparam("b_user"))
    & (conversations.c.conversation_id == sa.bindparam("b_conv"))
)
_CONVERSATION_STATE = sa.select(conversations.c.last_order, conversations.c.tail).where(_CONVERSATION_KEY)
_CONVERSATION_ADVANCE = (
    conversations.update()
    .where(_CONVERSATION_KEY)
    .values(
        delivered_messages=conversations.c.delivered_messages + sa.bindparam("b_n"),
        last_order=sa.bindparam("b_last"),
        last_batch_key=sa.bindparam("b_key"),
        tail=sa.bindparam("b_tail"),
        updated_at=sa.bindparam("b_at"),
    )
)


@dataclass
class BatchRecord:
    """What the ledger keeps of one request."""

    batch_key: str
    source: str
    run_id: str
    user_id: str
    conversation_id: str
    n_tokens: int
    first_key: str
    last_key: str
    last_order: int | None
    key_lo: np.ndarray
    key_hi: np.ndarray
    msg_hashes: np.ndarray
    fp: np.ndarray | None = None  # per message: fingerprint of what was sent (tasks/batch.py fingerprints)
    unit: np.ndarray | None = None  # per message: unit_hash of the file it was read from


@dataclass
class KnownMessages:
    """What the ledger says about some messages, position by position."""

    status: np.ndarray  # '' (unknown), 'delivered', 'sent' (in doubt) or 'failed'
    fp: np.ndarray  # int64 fingerprint as delivered; only meaningful where has_fp
    has_fp: np.ndarray  # bool: a fingerprint was recorded (messages sent since revision 0002)


@dataclass
class UnitDelivered:
    """What the ledger delivered from one unit, sorted by the key's low half for vectorised
    matching (the high half is checked on every hit; two keys sharing a low half, a 2^-64
    event, would only send a row on to the loader's exact check)."""

    lo: np.ndarray  # sorted
    hi: np.ndarray
    fp: np.ndarray  # int64, aligned
    has_fp: np.ndarray  # bool: fingerprint recorded (delivered since revision 0002)

    @classmethod
    def of(cls, lo, hi, fp, has_fp) -> UnitDelivered:
        order = np.argsort(lo, kind="stable")
        return cls(np.asarray(lo)[order], np.asarray(hi)[order], np.asarray(fp)[order], np.asarray(has_fp)[order])

    def match(self, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per key: delivered from this unit?, and its position (where it is)."""
        pos = np.searchsorted(self.lo, lo)
        inside = pos < len(self.lo)
        hit = np.zeros(len(lo), dtype=bool)
        at = pos[inside]
        hit[inside] = (self.lo[at] == lo[inside]) & (self.hi[at] == hi[inside])
        return hit, pos

    def missing(self, seen_lo: np.ndarray, seen_hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The delivered keys not among the keys seen."""
        hit, _ = UnitDelivered.of(seen_lo, seen_hi, seen_lo, seen_lo).match(self.lo, self.hi)
        return self.lo[~hit], self.hi[~hit]


def _tail(prev: bytes | None, new: np.ndarray) -> bytes:
    old = np.frombuffer(prev, dtype=np.int64) if prev else np.empty(0, dtype=np.int64)
    return np.concatenate([old, new.astype(np.int64)])[-TAIL:].tobytes()


class Deliveries(Store):
    # -- lookups ------------------------------------------------------------------------
    def message_status(self, target: str, key_lo: np.ndarray, key_hi: np.ndarray) -> np.ndarray:
        """Per message: '' (unknown to the ledger), 'delivered', 'sent' (in doubt) or 'failed'."""
        return self.known_messages(target, key_lo, key_hi).status

    @guarded("looking up delivered messages")
    def known_messages(self, target: str, key_lo: np.ndarray, key_hi: np.ndarray) -> KnownMessages:
        n = len(key_lo)
        out = KnownMessages(np.full(n, "", dtype=object), np.zeros(n, dtype=np.int64), np.zeros(n, dtype=bool))
        if n == 0:
            return out
        found: dict[tuple[int, int], tuple[str, int | None]] = {}
        # the keys travel as one parameter (a PostgreSQL array, a JSON text for SQLite): an
        # IN list of thousands of bound parameters costs more to build than to run
        dialect = self.engine.dialect.name
        if dialect == "postgresql":
            keys_in = sa.text("SELECT unnest(CAST(:keys AS bigint[]))")
        elif dialect == "sqlite":
            keys_in = sa.text("SELECT value FROM json_each(:keys)")
        else:  # pragma: no cover
            keys_in = None
        step = _CHUNK * 4 if keys_in is not None else _CHUNK
        base = sa.select(messages.c.key_lo, messages.c.key_hi, batches.c.status, messages.c.fp).join(
            batches, batches.c.batch_key == messages.c.batch_key
        )
        uniq = np.unique(key_lo)
        with self.engine.connect() as c:
            for i in range(0, len(uniq), step):
                chunk = uniq[i : i + step].tolist()
                if keys_in is not None:
                    stmt = base.where(messages.c.target == target, messages.c.key_lo.in_(keys_in))
                    rows = c.execute(stmt, {"keys": chunk if dialect == "postgresql" else json.dumps(chunk)})
                else:
                    stmt = base.where(
                        messages.c.target == target, messages.c.key_lo.in_(sa.bindparam("keys", expanding=True))
                    )
                    rows = c.execute(stmt, {"keys": chunk})
                for lo, hi, status, fp in rows:
                    found[(lo, hi)] = (status, fp)
        if found:
            for i, pair in enumerate(zip(key_lo.tolist(), key_hi.tolist())):
                hit = found.get(pair)
                if hit:
                    out.status[i] = hit[0]
                    if hit[1] is not None:
                        out.fp[i] = hit[1]
                        out.has_fp[i] = True
        return out

    @guarded("reading a file's delivered messages")
    def unit_delivered(self, target: str, unit: int) -> UnitDelivered:
        """The delivered messages read from one unit (file, object): keys and fingerprints, one
        index range scan, straight into arrays (no Python object per message)."""
        stmt = (
            sa.select(
                messages.c.key_lo,
                messages.c.key_hi,
                sa.func.coalesce(messages.c.fp, 0),
                sa.case((messages.c.fp.is_(None), 0), else_=1),
            )
            .join(batches, batches.c.batch_key == messages.c.batch_key)
            .where(messages.c.target == target, messages.c.unit == unit, batches.c.status == "delivered")
        )
        with self.engine.connect() as c:
            # the driver's own cursor: plain tuples, not SQLAlchemy rows (half the time of a
            # re-read file's check went into building those)
            sql = stmt.compile(dialect=self.engine.dialect, compile_kwargs={"literal_binds": True})
            raw = c.connection.driver_connection
            assert raw is not None  # an open connection has its driver connection
            cur = raw.cursor()
            try:
                cur.execute(str(sql))
                rows = cur.fetchall()
            finally:
                cur.close()
        flat = np.array(rows, dtype=np.int64).reshape(-1, 4)
        return UnitDelivered.of(flat[:, 0], flat[:, 1], flat[:, 2], flat[:, 3].astype(bool))

    @guarded("reading a source's delivered keys")
    def source_keys(self, target: str, source: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Keys (lo, hi) of every message of a source delivered to a target, and each one's unit
        hash (0 where not recorded: delivered before revision 0002)."""
        with self.engine.connect() as c:
            rows = c.execute(
                sa.select(messages.c.key_lo, messages.c.key_hi, sa.func.coalesce(messages.c.unit, 0))
                .join(batches, batches.c.batch_key == messages.c.batch_key)
                .where(messages.c.target == target, batches.c.source == source, batches.c.status == "delivered")
            ).all()
        if not rows:
            empty = np.empty(0, dtype=np.int64)
            return empty, empty, empty
        keys = np.array(rows, dtype=np.int64)
        return keys[:, 0].copy(), keys[:, 1].copy(), keys[:, 2].copy()

    @guarded("reading messages' conversations")
    def conversations_of(self, target: str, key_lo: np.ndarray, key_hi: np.ndarray) -> list[tuple[str, str]]:
        """(user_id, conversation_id) of each of these delivered messages (few: the missing ones)."""
        wanted = set(zip(key_lo.tolist(), key_hi.tolist()))
        found: dict[tuple[int, int], tuple[str, str]] = {}
        lows = sorted({lo for lo, _ in wanted})
        stmt = (
            sa.select(messages.c.key_lo, messages.c.key_hi, batches.c.user_id, batches.c.conversation_id)
            .join(batches, batches.c.batch_key == messages.c.batch_key)
            .where(messages.c.target == target, messages.c.key_lo.in_(sa.bindparam("lows", expanding=True)))
        )
        with self.engine.connect() as c:
            for i in range(0, len(lows), _CHUNK):
                for lo, hi, u, cid in c.execute(stmt, {"lows": lows[i : i + _CHUNK]}):
                    if (lo, hi) in wanted:
                        found[(lo, hi)] = (u, cid)
        return [found.get(k, ("?", "?")) for k in zip(key_lo.tolist(), key_hi.tolist())]

    @guarded("reading conversation progress")
    def last_orders(self, target: str, conversation_ids: list[str]) -> dict[tuple[str, str], int | None]:
        """(user_id, conversation_id) -> order value of the last delivered message."""
        out: dict[tuple[str, str], int | None] = {}
        uniq = sorted(set(conversation_ids))
        stmt = sa.select(conversations.c.user_id, conversations.c.conversation_id, conversations.c.last_order).where(
            conversations.c.target == target, conversations.c.conversation_id.in_(sa.bindparam("ids", expanding=True))
        )
        with self.engine.connect() as c:
            for i in range(0, len(uniq), _CHUNK):
                for u, cid, last in c.execute(stmt, {"ids": uniq[i : i + _CHUNK]}):
                    out[(u, cid)] = last
        return out

    @guarded("looking up requests in doubt")
    def in_doubt_conversations(self, target: str, conversation_ids: list[str]) -> set[tuple[str, str]]:
        """(user_id, conversation_id) pairs with a request sent and never confirmed."""
        out: set[tuple[str, str]] = set()
        uniq = sorted(set(conversation_ids))
        stmt = (
            sa.select(batches.c.user_id, batches.c.conversation_id)
            .where(
                batches.c.target == target,
                batches.c.status == "sent",
                batches.c.conversation_id.in_(sa.bindparam("ids", expanding=True)),
            )
            .distinct()
        )
        with self.engine.connect() as c:
            for i in range(0, len(uniq), _CHUNK):
                out.update((u, cid) for u, cid in c.execute(stmt, {"ids": uniq[i : i + _CHUNK]}))
        return out

    # -- the send protocol: sent -> delivered | failed --------------------------------------
    @guarded("recording a request as sent")
    def record_sent(self, target: str, rec: BatchRecord, replace: bool = False) -> None:
        """Write the batch as `sent` with its message keys, before the request leaves."""
        n = len(rec.key_lo)
        fps = rec.fp.tolist() if rec.fp is not None else [None] * n
        units = rec.unit.tolist() if rec.unit is not None else [None] * n
        rows = [
            {"target": target, "key_lo": lo, "key_hi": hi, "batch_key": rec.batch_key, "fp": fp, "unit": u}
            for lo, hi, fp, u in zip(rec.key_lo.tolist(), rec.key_hi.tolist(), fps, units)
        ]
        try:
            self._insert_sent(target, rec, rows, replace)
        except sa.exc.IntegrityError:
            # a retry after a lost connection whose first commit went through: it is ours
            with self.engine.connect() as c:
                mine = c.execute(
                    sa.select(batches.c.run_id, batches.c.status).where(batches.c.batch_key == rec.batch_key)
                ).first()
            if mine is None or tuple(mine) != (rec.run_id, "sent"):
                raise

    def _insert_sent(self, target: str, rec: BatchRecord, rows: list[dict], replace: bool) -> None:
        n = len(rows)
        with self.engine.begin() as c:
            if replace:  # an explicit resend of in-doubt messages takes them over
                c.execute(
                    messages.delete().where(messages.c.target == target, messages.c.key_lo.in_(rec.key_lo.tolist()))
                )
                c.execute(batches.delete().where(batches.c.batch_key == rec.batch_key))
            c.execute(
                batches.insert(),
                {
                    "batch_key": rec.batch_key,
                    "target": target,
                    "source": rec.source,
                    "run_id": rec.run_id,
                    "user_id": rec.user_id,
                    "conversation_id": rec.conversation_id,
                    "status": "sent",
                    "n_messages": n,
                    "n_tokens": rec.n_tokens,
                    "first_key": rec.first_key,
                    "last_key": rec.last_key,
                    "last_order": rec.last_order,
                    "sent_at": now(),
                    "msg_hashes": rec.msg_hashes.astype(np.int64).tobytes(),
                },
            )
            c.execute(messages.insert(), rows)

    @guarded("recording a request as delivered")
    def record_delivered(self, target: str, rec: BatchRecord, task_id: str | None) -> None:
        """The target acknowledged the batch: mark it delivered and move the conversation on."""
        t = now()
        n = len(rec.key_lo)
        conv = {"b_target": target, "b_user": rec.user_id, "b_conv": rec.conversation_id}
        # statements with bound parameters, built once: SQLAlchemy caches their compiled form,
        # where .values(literal...) would build and key a new statement per request
        with self.engine.begin() as c:
            if c.execute(_MARK_DELIVERED, {"b_key": rec.batch_key, "b_at": t, "b_task": task_id}).rowcount == 0:
                return
            prev = c.execute(_CONVERSATION_STATE, conv).first()
            if prev is None:
                c.execute(
                    conversations.insert(),
                    {
                        "target": target,
                        "user_id": rec.user_id,
                        "conversation_id": rec.conversation_id,
                        "delivered_messages": n,
                        "last_order": rec.last_order,
                        "last_batch_key": rec.batch_key,
                        "tail": _tail(None, rec.msg_hashes),
                        "updated_at": t,
                    },
                )
            else:
                last = rec.last_order if prev[0] is None or rec.last_order is None else max(prev[0], rec.last_order)
                c.execute(
                    _CONVERSATION_ADVANCE,
                    {
                        **conv,
                        "b_n": n,
                        "b_last": last,
                        "b_key": rec.batch_key,
                        "b_tail": _tail(prev[1], rec.msg_hashes),
                        "b_at": t,
                    },
                )

    @guarded("recording a refused request")
    def record_failed(self, rec: BatchRecord, detail: str) -> None:
        """The target refused the batch for good (a bad request): it is quarantined, not retried."""
        with self.engine.begin() as c:
            c.execute(
                batches.update()
                .where(batches.c.batch_key == rec.batch_key)
                .values(status="failed", acked_at=now(), detail=detail[:4000])
            )

    @guarded("undoing an unsent request")
    def forget_unsent(self, target: str, rec: BatchRecord) -> None:
        """The request provably never reached the target (e.g. connection refused): undo `sent`."""
        with self.engine.begin() as c:
            c.execute(messages.delete().where(messages.c.batch_key == rec.batch_key))
            c.execute(batches.delete().where(batches.c.batch_key == rec.batch_key, batches.c.status == "sent"))

    # -- in-doubt requests --------------------------------------------------------------
    @guarded("reading unconfirmed requests")
    def unconfirmed(self, target: str, source: str) -> list[BatchRecord]:
        """Requests of a source recorded as sent and never confirmed (a crash, no answer).

        A request of a conversation someone holds a live lease on is not an orphan: a run is
        sending it right now (or settling it) and will record the answer itself."""
        busy = sa.exists().where(
            leases.c.target == batches.c.target,
            leases.c.user_id == batches.c.user_id,
            leases.c.conversation_id == batches.c.conversation_id,
            leases.c.expires_at >= now(),
        )
        with self.engine.connect() as c:
            rows = (
                c.execute(
                    sa.select(batches)
                    .where(batches.c.target == target, batches.c.source == source, batches.c.status == "sent", ~busy)
                    .order_by(batches.c.sent_at)
                )
                .mappings()
                .all()
            )
            out = []
            for r in rows:
                keys = c.execute(
                    sa.select(messages.c.key_lo, messages.c.key_hi).where(messages.c.batch_key == r["batch_key"])
                ).all()
                out.append(
                    BatchRecord(
                        batch_key=r["batch_key"],
                        source=r["source"],
                        run_id=r["run_id"],
                        user_id=r["user_id"],
                        conversation_id=r["conversation_id"],
                        n_tokens=r["n_tokens"],
                        first_key=r["first_key"],
                        last_key=r["last_key"],
                        last_order=r["last_order"],
                        key_lo=np.array([k[0] for k in keys], dtype=np.int64),
                        key_hi=np.array([k[1] for k in keys], dtype=np.int64),
                        msg_hashes=np.frombuffer(r["msg_hashes"], dtype=np.int64),
                    )
                )
        return out

    @guarded("reading a conversation's tail")
    def conversation_tail(self, target: str, user_id: str, conversation_id: str) -> np.ndarray:
        with self.engine.connect() as c:
            row = c.execute(
                sa.select(conversations.c.tail).where(
                    conversations.c.target == target,
                    conversations.c.user_id == user_id,
                    conversations.c.conversation_id == conversation_id,
                )
            ).first()
        return np.frombuffer(row[0], dtype=np.int64) if row and row[0] else np.empty(0, dtype=np.int64)

    @guarded("reading a run's extraction tasks")
    def run_task_ids(self, run_id: str) -> list[str]:
        with self.engine.connect() as c:
            return [
                t
                for (t,) in c.execute(
                    sa.select(batches.c.task_id).where(
                        batches.c.run_id == run_id, batches.c.status == "delivered", batches.c.task_id.is_not(None)
                    )
                )
            ]

    # -- forgetting on purpose: replay, rollback, forget ----------------------------------
    @guarded("reading delivered requests")
    def delivered_batches(
        self,
        target: str | None,
        *,
        run_id: str | None = None,
        users: list[str] | None = None,
        conversations: list[str] | None = None,
        source: str | None = None,
    ) -> list[dict]:
        """Batches a run delivered, or those of some users / conversations / a source (any
        target when `target` is None), oldest first."""
        q = sa.select(
            batches.c.batch_key,
            batches.c.target,
            batches.c.source,
            batches.c.run_id,
            batches.c.user_id,
            batches.c.conversation_id,
            batches.c.status,
            batches.c.n_messages,
            batches.c.first_key,
            batches.c.last_key,
            batches.c.task_id,
        )
        if source is not None:
            q = q.where(batches.c.source == source)
        if target is not None:
            q = q.where(batches.c.target == target)
        if run_id is not None:
            q = q.where(batches.c.run_id == run_id)
        if users:
            q = q.where(batches.c.user_id.in_(users))
        if conversations:
            q = q.where(batches.c.conversation_id.in_(conversations))
        with self.engine.connect() as c:
            return [dict(r) for r in c.execute(q.order_by(batches.c.sent_at)).mappings()]

    @guarded("forgetting requests")
    def forget_batches(self, target: str, batch_keys: list[str]) -> int:
        """Drop batches and their messages from the ledger so a later run sends those messages
        again; the conversations they touched are recomputed from what stays delivered.
        Returns the number of messages forgotten."""
        if not batch_keys:
            return 0
        forgotten = 0
        with self.engine.begin() as c:
            pairs = set()
            for i in range(0, len(batch_keys), 1000):
                chunk = batch_keys[i : i + 1000]
                for u, cid, n in c.execute(
                    sa.select(batches.c.user_id, batches.c.conversation_id, batches.c.n_messages).where(
                        batches.c.batch_key.in_(chunk)
                    )
                ):
                    pairs.add((u, cid))
                    forgotten += n
                c.execute(messages.delete().where(messages.c.batch_key.in_(chunk)))
                c.execute(batches.delete().where(batches.c.batch_key.in_(chunk)))
            for u, cid in sorted(pairs):
                self._rebuild_conversation(c, target, u, cid)
        return forgotten

    def _rebuild_conversation(self, c, target: str, user_id: str, conversation_id: str) -> None:
        key = (
            (conversations.c.target == target)
            & (conversations.c.user_id == user_id)
            & (conversations.c.conversation_id == conversation_id)
        )
        left = c.execute(
            sa.select(batches.c.batch_key, batches.c.n_messages, batches.c.last_order, batches.c.msg_hashes)
            .where(
                batches.c.target == target,
                batches.c.user_id == user_id,
                batches.c.conversation_id == conversation_id,
                batches.c.status == "delivered",
            )
            .order_by(batches.c.acked_at)
        ).all()
        c.execute(conversations.delete().where(key))
        if not left:
            return
        orders = [r[2] for r in left if r[2] is not None]
        tail = b""
        for r in left:
            tail = _tail(tail, np.frombuffer(r[3], dtype=np.int64))
        c.execute(
            conversations.insert().values(
                target=target,
                user_id=user_id,
                conversation_id=conversation_id,
                delivered_messages=sum(r[1] for r in left),
                last_order=max(orders) if orders else None,
                last_batch_key=left[-1][0],
                tail=tail,
                updated_at=now(),
            )
        )

    @guarded("summarising deliveries")
    def summary(self, target: str | None = None) -> dict:
        with self.engine.connect() as c:
            q = sa.select(batches.c.source, batches.c.status, sa.func.count(), sa.func.sum(batches.c.n_messages))
            if target:
                q = q.where(batches.c.target == target)
            per: dict = {}
            for source, status, n, msgs in c.execute(q.group_by(batches.c.source, batches.c.status)):
                per.setdefault(source, {})[status] = {"batches": n, "messages": int(msgs or 0)}
            last = c.execute(sa.select(runs).order_by(runs.c.started_at.desc()).limit(10)).mappings().all()
        return {"by_source": per, "recent_runs": [dict(r) for r in last]}
