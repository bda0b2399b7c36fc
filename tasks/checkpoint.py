"""Checkpoint: the ledger of what reached which MemOS target, in SQLite or PostgreSQL.

MemOS has no idempotency key, so this ledger is what makes loading exactly-once:

* `batches`: one row per request, keyed by a deterministic hash of (target, user,
  conversation, messages). Written as `sent` *before* the request goes out and flipped to
  `delivered` only after the target acknowledged it, so a crash in between leaves an
  explicit in-doubt record instead of a silent gap or a blind resend.
* `messages`: the 128-bit identity of every message of a batch, written in the same
  transaction as the batch row (one statement per batch, never one per message).
* `conversations`: per (target, user, conversation) how many messages were delivered and the
  order value of the last one, so messages arriving later are appended and late ones seen.
* `runs`: one row per run with its report.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import numpy as np
import sqlalchemy as sa

metadata = sa.MetaData()

runs = sa.Table(
    "runs", metadata,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("flow", sa.String(32), nullable=False),
    sa.Column("source", sa.String(64), nullable=False),
    sa.Column("target", sa.String(512), nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
    sa.Column("status", sa.String(16), nullable=False),  # running | completed | incomplete | interrupted | failed | crashed
    sa.Column("host", sa.String(255)),
    sa.Column("pid", sa.Integer),
    sa.Column("report", sa.Text),
)

batches = sa.Table(
    "batches", metadata,
    sa.Column("batch_key", sa.String(64), primary_key=True),
    sa.Column("target", sa.String(512), nullable=False),
    sa.Column("source", sa.String(64), nullable=False),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("user_id", sa.String(128), nullable=False),
    sa.Column("conversation_id", sa.String(128), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # sent | delivered | failed
    sa.Column("n_messages", sa.Integer, nullable=False),
    sa.Column("n_tokens", sa.Integer, nullable=False),
    sa.Column("first_key", sa.Text, nullable=False),
    sa.Column("last_key", sa.Text, nullable=False),
    sa.Column("last_order", sa.BigInteger),
    sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("acked_at", sa.DateTime(timezone=True)),
    sa.Column("task_id", sa.String(128)),
    sa.Column("detail", sa.Text),
    # 64-bit hash of (role, content) per message, in order: what reconciliation compares
    # against the target's copy of the conversation
    sa.Column("msg_hashes", sa.LargeBinary, nullable=False),
    sa.Index("ix_batches_conv", "target", "user_id", "conversation_id"),
    sa.Index("ix_batches_status", "target", "status"),
)

messages = sa.Table(
    "messages", metadata,
    sa.Column("target", sa.String(512), primary_key=True),
    sa.Column("key_lo", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("key_hi", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("batch_key", sa.String(64), nullable=False),
)

conversations = sa.Table(
    "conversations", metadata,
    sa.Column("target", sa.String(512), primary_key=True),
    sa.Column("user_id", sa.String(128), primary_key=True),
    sa.Column("conversation_id", sa.String(128), primary_key=True),
    sa.Column("delivered_messages", sa.BigInteger, nullable=False),
    sa.Column("last_order", sa.BigInteger),
    sa.Column("last_batch_key", sa.String(64)),
    # message hashes of the last TAIL delivered messages: tells reconciliation when the
    # conversation already ended with what an unconfirmed request would have added
    sa.Column("tail", sa.LargeBinary),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

TAIL = 50  # MemOS's /get/message returns at most 50 messages

objects = sa.Table(
    "objects", metadata,  # the manifest of files/objects a source has fully processed
    sa.Column("source", sa.String(64), primary_key=True),
    sa.Column("target", sa.String(512), primary_key=True),
    sa.Column("unit", sa.String(1024), primary_key=True),
    sa.Column("version", sa.String(256), nullable=False),  # ETag, or size:mtime for local files
    sa.Column("size", sa.BigInteger),
    sa.Column("status", sa.String(16), nullable=False),  # done | failed
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("detail", sa.Text),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

source_state = sa.Table(
    "source_state", metadata,
    sa.Column("source", sa.String(64), primary_key=True),
    sa.Column("target", sa.String(512), primary_key=True),
    sa.Column("cursor", sa.Text),  # tasks/cursor.py encoding; only nightly runs move it
    sa.Column("columns", sa.Text),  # JSON column -> type kind seen by the last completed run
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

leases = sa.Table(
    "leases", metadata,  # which run may send to a conversation right now
    sa.Column("target", sa.String(512), primary_key=True),
    sa.Column("user_id", sa.String(128), primary_key=True),
    sa.Column("conversation_id", sa.String(128), primary_key=True),
    sa.Column("holder", sa.String(64), nullable=False),  # run id
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
)

backfill_parts = sa.Table(
    "backfill_parts", metadata,  # one row per partition of a backfill: what resumes it
    sa.Column("backfill_id", sa.String(32), primary_key=True),  # hash of source, target, range, split
    sa.Column("part_key", sa.String(512), primary_key=True),  # e.g. cursor:[a,b) partition:dt=.. hash:3/16
    sa.Column("source", sa.String(64), nullable=False),
    sa.Column("target", sa.String(512), nullable=False),
    sa.Column("spec", sa.Text, nullable=False),  # JSON: the slice the partition reads
    sa.Column("status", sa.String(16), nullable=False),  # pending | running | done | incomplete | failed
    sa.Column("run_id", sa.String(64)),  # the ledger run working on it (or that finished it)
    sa.Column("flow_run_id", sa.String(64)),  # the Prefect flow run submitted for it, if any
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("heartbeat_at", sa.DateTime(timezone=True)),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("report", sa.Text),
)

_CHUNK = 5_000  # keys per IN (...) lookup: under SQLite's and PostgreSQL's parameter limits


_MARK_DELIVERED = batches.update().where(batches.c.batch_key == sa.bindparam("b_key")).values(
    status="delivered", acked_at=sa.bindparam("b_at"), task_id=sa.bindparam("b_task"))
_CONVERSATION_KEY = (conversations.c.target == sa.bindparam("b_target")) & \
    (conversations.c.user_id == sa.bindparam("b_user")) & (conversations.c.conversation_id == sa.bindparam("b_conv"))
_CONVERSATION_STATE = sa.select(conversations.c.last_order, conversations.c.tail).where(_CONVERSATION_KEY)
_CONVERSATION_ADVANCE = conversations.update().where(_CONVERSATION_KEY).values(
    delivered_messages=conversations.c.delivered_messages + sa.bindparam("b_n"), last_order=sa.bindparam("b_last"),
    last_batch_key=sa.bindparam("b_key"), tail=sa.bindparam("b_tail"), updated_at=sa.bindparam("b_at"))


def _now() -> datetime:
    return datetime.now(timezone.utc)


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


class Ledger:
    def __init__(self, url: str):
        self.url = url
        kwargs: dict = {"future": True}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"timeout": 60, "check_same_thread": False}
            db = sa.engine.make_url(url).database
            if db and db != ":memory:":
                os.makedirs(os.path.dirname(os.path.abspath(db)), exist_ok=True)
        else:
            kwargs.update(pool_size=16, max_overflow=16, pool_pre_ping=True)
        self.engine = sa.create_engine(url, **kwargs)
        if url.startswith("sqlite"):
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        with self.engine.begin() as c:
            if self.engine.dialect.name == "postgresql":
                # workers starting together on a new database would race creating the tables
                c.execute(sa.text("SELECT pg_advisory_xact_lock(4242001)"))
            metadata.create_all(c)

    def close(self) -> None:
        self.engine.dispose()

    # -- runs ---------------------------------------------------------------------------
    def start_run(self, run_id: str, flow: str, source: str, target: str, report: dict | None = None) -> None:
        with self.engine.begin() as c:
            c.execute(runs.insert().values(run_id=run_id, flow=flow, source=source, target=target,
                                           started_at=_now(), status="running", host=socket.gethostname(),
                                           pid=os.getpid(), report=json.dumps(report or {}, default=str)))

    def dead_runs(self) -> list[str]:
        """Runs still marked running whose process on this host is gone (killed): marked crashed,
        their conversation leases released."""
        host = socket.gethostname()
        with self.engine.begin() as c:
            rows = c.execute(sa.select(runs.c.run_id, runs.c.pid).where(
                runs.c.status == "running", runs.c.host == host)).all()
            dead = [r for r, pid in rows if pid and not _alive(pid)]
            if dead:
                c.execute(runs.update().where(runs.c.run_id.in_(dead)).values(status="crashed", finished_at=_now()))
                # their conversations need not wait for the leases to expire
                c.execute(leases.delete().where(leases.c.holder.in_(dead)))
        return dead

    def finish_run(self, run_id: str, status: str, report: dict) -> None:
        with self.engine.begin() as c:
            c.execute(runs.update().where(runs.c.run_id == run_id).values(
                finished_at=_now(), status=status, report=json.dumps(report, default=str)))

    # -- lookups ------------------------------------------------------------------------
    def message_status(self, target: str, key_lo: np.ndarray, key_hi: np.ndarray) -> np.ndarray:
        """Per message: '' (unknown to the ledger), 'delivered', 'sent' (in doubt) or 'failed'."""
        out = np.full(len(key_lo), "", dtype=object)
        if len(key_lo) == 0:
            return out
        found: dict[tuple[int, int], str] = {}
        # the keys travel as one parameter (a PostgreSQL array, a JSON text for SQLite): an
        # IN list of thousands of bound parameters costs more to build than to run
        dialect = self.engine.dialect.name
        if dialect == "postgresql":
            keys_in = sa.text("SELECT unnest(CAST(:keys AS bigint[]))")
        elif dialect == "sqlite":
            keys_in = sa.text("SELECT value FROM json_each(:keys)")
        else:  # pragma: no cover
            keys_in = None
        uniq = np.unique(key_lo)
        with self.engine.connect() as c:
            for i in range(0, len(uniq), _CHUNK * 4 if keys_in is not None else _CHUNK):
                chunk = uniq[i:i + (_CHUNK * 4 if keys_in is not None else _CHUNK)].tolist()
                if keys_in is not None:
                    stmt = (sa.select(messages.c.key_lo, messages.c.key_hi, batches.c.status)
                            .join(batches, batches.c.batch_key == messages.c.batch_key)
                            .where(messages.c.target == target, messages.c.key_lo.in_(keys_in)))
                    param = chunk if dialect == "postgresql" else json.dumps(chunk)
                    rows = c.execute(stmt, {"keys": param})
                else:
                    stmt = (sa.select(messages.c.key_lo, messages.c.key_hi, batches.c.status)
                            .join(batches, batches.c.batch_key == messages.c.batch_key)
                            .where(messages.c.target == target,
                                   messages.c.key_lo.in_(sa.bindparam("keys", expanding=True))))
                    rows = c.execute(stmt, {"keys": chunk})
                for lo, hi, status in rows:
                    found[(lo, hi)] = status
        if found:
            for i, pair in enumerate(zip(key_lo.tolist(), key_hi.tolist())):
                status = found.get(pair)
                if status:
                    out[i] = status
        return out

    def last_orders(self, target: str, conversation_ids: list[str]) -> dict[tuple[str, str], int | None]:
        """(user_id, conversation_id) -> order value of the last delivered message."""
        out: dict[tuple[str, str], int | None] = {}
        uniq = sorted(set(conversation_ids))
        stmt = (sa.select(conversations.c.user_id, conversations.c.conversation_id, conversations.c.last_order)
                .where(conversations.c.target == target,
                       conversations.c.conversation_id.in_(sa.bindparam("ids", expanding=True))))
        with self.engine.connect() as c:
            for i in range(0, len(uniq), _CHUNK):
                for u, cid, last in c.execute(stmt, {"ids": uniq[i:i + _CHUNK]}):
                    out[(u, cid)] = last
        return out

    def in_doubt_conversations(self, target: str, conversation_ids: list[str]) -> set[tuple[str, str]]:
        """(user_id, conversation_id) pairs with a request sent and never confirmed."""
        out: set[tuple[str, str]] = set()
        uniq = sorted(set(conversation_ids))
        stmt = (sa.select(batches.c.user_id, batches.c.conversation_id)
                .where(batches.c.target == target, batches.c.status == "sent",
                       batches.c.conversation_id.in_(sa.bindparam("ids", expanding=True))).distinct())
        with self.engine.connect() as c:
            for i in range(0, len(uniq), _CHUNK):
                out.update((u, cid) for u, cid in c.execute(stmt, {"ids": uniq[i:i + _CHUNK]}))
        return out

    # -- conversation leases: one sender per conversation across runs and workers ----------
    def acquire(self, target: str, holder: str, pairs: list[tuple[str, str]], ttl_s: float) -> set[tuple[str, str]]:
        """Lease these conversations to `holder`; returns those it got (free, expired or already its own).

        One statement per chunk: INSERT ... ON CONFLICT DO UPDATE ... WHERE the lease is
        expired or ours, RETURNING what was taken. A crashed run's leases expire after
        `ttl_s` and are taken over then.
        """
        if not pairs:
            return set()
        dialect = self.engine.dialect.name
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        elif dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        else:  # pragma: no cover - other databases: no leases, one run at a time
            return set(pairs)
        now = _now()
        expires = now + timedelta(seconds=ttl_s)
        got: set[tuple[str, str]] = set()
        uniq = sorted(set(pairs))
        for i in range(0, len(uniq), 1000):
            stmt = insert(leases).values([{"target": target, "user_id": u, "conversation_id": c, "holder": holder,
                                           "expires_at": expires} for u, c in uniq[i:i + 1000]])
            stmt = stmt.on_conflict_do_update(
                index_elements=[leases.c.target, leases.c.user_id, leases.c.conversation_id],
                set_={"holder": holder, "expires_at": expires},
                where=(leases.c.expires_at < now) | (leases.c.holder == holder),
            ).returning(leases.c.user_id, leases.c.conversation_id)
            with self.engine.begin() as c:
                got.update((u, cid) for u, cid in c.execute(stmt))
        return got

    def renew(self, target: str, holder: str, ttl_s: float) -> None:
        with self.engine.begin() as c:
            c.execute(leases.update().where(leases.c.target == target, leases.c.holder == holder)
                      .values(expires_at=_now() + timedelta(seconds=ttl_s)))

    def release(self, target: str, holder: str, pairs: list[tuple[str, str]]) -> None:
        with self.engine.begin() as c:
            for i in range(0, len(pairs), 1000):
                ids = sorted({cid for _, cid in pairs[i:i + 1000]})
                c.execute(leases.delete().where(leases.c.target == target, leases.c.holder == holder,
                                                leases.c.conversation_id.in_(ids)))

    # -- the send protocol: sent -> delivered | failed --------------------------------------
    def record_sent(self, target: str, rec: BatchRecord, replace: bool = False) -> None:
        """Write the batch as `sent` with its message keys, before the request leaves."""
        rows = [{"target": target, "key_lo": int(lo), "key_hi": int(hi), "batch_key": rec.batch_key}
                for lo, hi in zip(rec.key_lo.tolist(), rec.key_hi.tolist())]
        with self.engine.begin() as c:
            if replace:  # an explicit resend of in-doubt messages takes them over
                c.execute(messages.delete().where(messages.c.target == target,
                                                  messages.c.key_lo.in_(rec.key_lo.tolist())))
                c.execute(batches.delete().where(batches.c.batch_key == rec.batch_key))
            c.execute(batches.insert(), {
                "batch_key": rec.batch_key, "target": target, "source": rec.source, "run_id": rec.run_id,
                "user_id": rec.user_id, "conversation_id": rec.conversation_id, "status": "sent",
                "n_messages": len(rows), "n_tokens": rec.n_tokens, "first_key": rec.first_key,
                "last_key": rec.last_key, "last_order": rec.last_order, "sent_at": _now(),
                "msg_hashes": rec.msg_hashes.astype(np.int64).tobytes()})
            c.execute(messages.insert(), rows)

    def record_delivered(self, target: str, rec: BatchRecord, task_id: str | None) -> None:
        """The target acknowledged the batch: mark it delivered and move the conversation on."""
        now = _now()
        n = len(rec.key_lo)
        conv = {"b_target": target, "b_user": rec.user_id, "b_conv": rec.conversation_id}
        # statements with bound parameters, built once: SQLAlchemy caches their compiled form,
        # where .values(literal...) would build and key a new statement per request
        with self.engine.begin() as c:
            c.execute(_MARK_DELIVERED, {"b_key": rec.batch_key, "b_at": now, "b_task": task_id})
            prev = c.execute(_CONVERSATION_STATE, conv).first()
            if prev is None:
                c.execute(conversations.insert(), {
                    "target": target, "user_id": rec.user_id, "conversation_id": rec.conversation_id,
                    "delivered_messages": n, "last_order": rec.last_order, "last_batch_key": rec.batch_key,
                    "tail": _tail(None, rec.msg_hashes), "updated_at": now})
            else:
                last = rec.last_order if prev[0] is None or rec.last_order is None else max(prev[0], rec.last_order)
                c.execute(_CONVERSATION_ADVANCE, {**conv, "b_n": n, "b_last": last, "b_key": rec.batch_key,
                                                  "b_tail": _tail(prev[1], rec.msg_hashes), "b_at": now})

    def record_failed(self, rec: BatchRecord, detail: str) -> None:
        """The target refused the batch for good (a bad request): it is quarantined, not retried."""
        with self.engine.begin() as c:
            c.execute(batches.update().where(batches.c.batch_key == rec.batch_key)
                      .values(status="failed", acked_at=_now(), detail=detail[:4000]))

    def forget_unsent(self, target: str, rec: BatchRecord) -> None:
        """The request provably never reached the target (e.g. connection refused): undo `sent`."""
        with self.engine.begin() as c:
            c.execute(messages.delete().where(messages.c.batch_key == rec.batch_key))
            c.execute(batches.delete().where(batches.c.batch_key == rec.batch_key, batches.c.status == "sent"))

    # -- in-doubt requests --------------------------------------------------------------
    def unconfirmed(self, target: str, source: str) -> list[BatchRecord]:
        """Requests of a source recorded as sent and never confirmed (a crash, no answer).

        A request of a conversation someone holds a live lease on is not an orphan: a run is
        sending it right now (or settling it) and will record the answer itself."""
        busy = sa.exists().where(leases.c.target == batches.c.target, leases.c.user_id == batches.c.user_id,
                                 leases.c.conversation_id == batches.c.conversation_id,
                                 leases.c.expires_at >= _now())
        with self.engine.connect() as c:
            rows = c.execute(sa.select(batches).where(batches.c.target == target, batches.c.source == source,
                                                      batches.c.status == "sent", ~busy)
                             .order_by(batches.c.sent_at)).mappings().all()
            out = []
            for r in rows:
                keys = c.execute(sa.select(messages.c.key_lo, messages.c.key_hi)
                                 .where(messages.c.batch_key == r["batch_key"])).all()
                out.append(BatchRecord(
                    batch_key=r["batch_key"], source=r["source"], run_id=r["run_id"], user_id=r["user_id"],
                    conversation_id=r["conversation_id"], n_tokens=r["n_tokens"], first_key=r["first_key"],
                    last_key=r["last_key"], last_order=r["last_order"],
                    key_lo=np.array([k[0] for k in keys], dtype=np.int64),
                    key_hi=np.array([k[1] for k in keys], dtype=np.int64),
                    msg_hashes=np.frombuffer(r["msg_hashes"], dtype=np.int64)))
        return out

    def conversation_tail(self, target: str, user_id: str, conversation_id: str) -> np.ndarray:
        with self.engine.connect() as c:
            row = c.execute(sa.select(conversations.c.tail).where(
                conversations.c.target == target, conversations.c.user_id == user_id,
                conversations.c.conversation_id == conversation_id)).first()
        return np.frombuffer(row[0], dtype=np.int64) if row and row[0] else np.empty(0, dtype=np.int64)

    def run_task_ids(self, run_id: str) -> list[str]:
        with self.engine.connect() as c:
            return [t for (t,) in c.execute(sa.select(batches.c.task_id).where(
                batches.c.run_id == run_id, batches.c.status == "delivered", batches.c.task_id.is_not(None)))]

    # -- source state: object manifest, cursor, schema -----------------------------------
    def manifest(self, source: str, target: str) -> dict[str, tuple[str, str]]:
        """unit -> (version, status) for every file/object recorded for a source."""
        with self.engine.connect() as c:
            rows = c.execute(sa.select(objects.c.unit, objects.c.version, objects.c.status).where(
                objects.c.source == source, objects.c.target == target))
            return {u: (v, st) for u, v, st in rows}

    def record_units(self, source: str, target: str, run_id: str, units: list, status: str,
                     detail: str | None = None) -> None:
        if not units:
            return
        now = _now()
        with self.engine.begin() as c:
            c.execute(objects.delete().where(objects.c.source == source, objects.c.target == target,
                                             objects.c.unit.in_([u.rel for u in units])))
            c.execute(objects.insert(), [{"source": source, "target": target, "unit": u.rel, "version": u.version,
                                          "size": u.size, "status": status, "run_id": run_id, "detail": detail,
                                          "updated_at": now} for u in units])

    def source_state(self, source: str, target: str) -> tuple[str | None, dict]:
        with self.engine.connect() as c:
            row = c.execute(sa.select(source_state.c.cursor, source_state.c.columns).where(
                source_state.c.source == source, source_state.c.target == target)).first()
        return (row[0], json.loads(row[1]) if row and row[1] else {}) if row else (None, {})

    def save_source_state(self, source: str, target: str, cursor: str | None, columns: dict,
                          move_cursor: bool) -> None:
        with self.engine.begin() as c:
            key = (source_state.c.source == source) & (source_state.c.target == target)
            prev = c.execute(sa.select(source_state.c.cursor).where(key)).first()
            values = {"columns": json.dumps(columns), "updated_at": _now()}
            if move_cursor:
                values["cursor"] = cursor
            if prev is None:
                c.execute(source_state.insert().values(source=source, target=target, **values))
            else:
                c.execute(source_state.update().where(key).values(**values))

    def reset_cursor(self, source: str, target: str) -> None:
        with self.engine.begin() as c:
            c.execute(source_state.update().where(source_state.c.source == source, source_state.c.target == target)
                      .values(cursor=None, updated_at=_now()))
            c.execute(objects.delete().where(objects.c.source == source, objects.c.target == target))

    def run_record(self, run_id: str) -> dict | None:
        with self.engine.connect() as c:
            row = c.execute(sa.select(runs).where(runs.c.run_id == run_id)).mappings().first()
        if row is None:
            return None
        out = dict(row)
        out["report"] = json.loads(out["report"]) if out["report"] else {}
        return out

    def runs_of(self, source: str, target: str, flow: str | None = None) -> list[dict]:
        """A source's runs, newest first, with their reports."""
        q = sa.select(runs).where(runs.c.source == source, runs.c.target == target)
        if flow:
            q = q.where(runs.c.flow == flow)
        with self.engine.connect() as c:
            rows = [dict(r) for r in c.execute(q.order_by(runs.c.started_at.desc())).mappings()]
        for r in rows:
            r["report"] = json.loads(r["report"]) if r["report"] else {}
        return rows

    def set_run_status(self, run_id: str, status: str) -> None:
        with self.engine.begin() as c:
            c.execute(runs.update().where(runs.c.run_id == run_id).values(status=status))

    def set_cursor(self, source: str, target: str, cursor: str | None) -> None:
        with self.engine.begin() as c:
            c.execute(source_state.update().where(source_state.c.source == source, source_state.c.target == target)
                      .values(cursor=cursor, updated_at=_now()))

    # -- forgetting on purpose: replay and rollback ---------------------------------------
    def delivered_batches(self, target: str, *, run_id: str | None = None, users: list[str] | None = None,
                          conversations: list[str] | None = None) -> list[dict]:
        """Batches a run delivered, or those of some users / conversations, oldest first."""
        q = sa.select(batches.c.batch_key, batches.c.source, batches.c.run_id, batches.c.user_id,
                      batches.c.conversation_id, batches.c.status, batches.c.n_messages, batches.c.first_key,
                      batches.c.last_key).where(batches.c.target == target)
        if run_id is not None:
            q = q.where(batches.c.run_id == run_id)
        if users:
            q = q.where(batches.c.user_id.in_(users))
        if conversations:
            q = q.where(batches.c.conversation_id.in_(conversations))
        with self.engine.connect() as c:
            return [dict(r) for r in c.execute(q.order_by(batches.c.sent_at)).mappings()]

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
                chunk = batch_keys[i:i + 1000]
                for u, cid, n in c.execute(sa.select(batches.c.user_id, batches.c.conversation_id,
                                                     batches.c.n_messages).where(batches.c.batch_key.in_(chunk))):
                    pairs.add((u, cid))
                    forgotten += n
                c.execute(messages.delete().where(messages.c.batch_key.in_(chunk)))
                c.execute(batches.delete().where(batches.c.batch_key.in_(chunk)))
            for u, cid in sorted(pairs):
                self._rebuild_conversation(c, target, u, cid)
        return forgotten

    def _rebuild_conversation(self, c, target: str, user_id: str, conversation_id: str) -> None:
        key = (conversations.c.target == target) & (conversations.c.user_id == user_id) & \
              (conversations.c.conversation_id == conversation_id)
        left = c.execute(sa.select(batches.c.batch_key, batches.c.n_messages, batches.c.last_order,
                                   batches.c.msg_hashes).where(
            batches.c.target == target, batches.c.user_id == user_id, batches.c.conversation_id == conversation_id,
            batches.c.status == "delivered").order_by(batches.c.acked_at)).all()
        c.execute(conversations.delete().where(key))
        if not left:
            return
        orders = [r[2] for r in left if r[2] is not None]
        tail = b""
        for r in left:
            tail = _tail(tail, np.frombuffer(r[3], dtype=np.int64))
        c.execute(conversations.insert().values(
            target=target, user_id=user_id, conversation_id=conversation_id,
            delivered_messages=sum(r[1] for r in left), last_order=max(orders) if orders else None,
            last_batch_key=left[-1][0], tail=tail, updated_at=_now()))

    def forget_units_of_run(self, source: str, target: str, run_id: str) -> int:
        """Drop the manifest entries a run wrote, so the next run reads those files again."""
        with self.engine.begin() as c:
            return c.execute(objects.delete().where(objects.c.source == source, objects.c.target == target,
                                                    objects.c.run_id == run_id)).rowcount

    # -- backfill partitions -------------------------------------------------------------
    def plan_backfill(self, backfill_id: str, source: str, target: str, parts: list[tuple[str, dict]]) -> None:
        """Record a backfill's partitions; ones already recorded (a resumed backfill) keep their state."""
        with self.engine.begin() as c:
            have = {k for (k,) in c.execute(sa.select(backfill_parts.c.part_key).where(
                backfill_parts.c.backfill_id == backfill_id))}
            new = [{"backfill_id": backfill_id, "part_key": k, "source": source, "target": target,
                    "spec": json.dumps(spec, default=str), "status": "pending", "attempts": 0, "updated_at": _now()}
                   for k, spec in parts if k not in have]
            if new:
                c.execute(backfill_parts.insert(), new)

    def backfill_state(self, backfill_id: str) -> list[dict]:
        with self.engine.connect() as c:
            rows = c.execute(sa.select(backfill_parts).where(backfill_parts.c.backfill_id == backfill_id)
                             .order_by(backfill_parts.c.part_key)).mappings().all()
        return [dict(r) for r in rows]

    def mark_part(self, backfill_id: str, part_key: str, **values) -> None:
        with self.engine.begin() as c:
            c.execute(backfill_parts.update().where(backfill_parts.c.backfill_id == backfill_id,
                                                    backfill_parts.c.part_key == part_key)
                      .values(updated_at=_now(), **values))

    def claim_part(self, backfill_id: str, part_key: str, run_id: str, stale_s: float) -> str | None:
        """Take a partition for `run_id`. Returns None when it was taken, else why not: it is
        done, or another run is working on it and reported within `stale_s`."""
        now = _now()
        with self.engine.begin() as c:
            if c.engine.dialect.name == "postgresql":
                q = sa.select(backfill_parts).where(backfill_parts.c.backfill_id == backfill_id,
                                                    backfill_parts.c.part_key == part_key).with_for_update()
            else:
                q = sa.select(backfill_parts).where(backfill_parts.c.backfill_id == backfill_id,
                                                    backfill_parts.c.part_key == part_key)
            row = c.execute(q).mappings().first()
            if row is None:
                return "unknown partition"
            if row["status"] == "done":
                return "done"
            if row["status"] == "running" and row["run_id"] != run_id \
                    and self._reporting(c, row["run_id"], row["heartbeat_at"], stale_s):
                return f"run {row['run_id']} is on it"
            c.execute(backfill_parts.update().where(backfill_parts.c.backfill_id == backfill_id,
                                                    backfill_parts.c.part_key == part_key)
                      .values(status="running", run_id=run_id, heartbeat_at=now, updated_at=now,
                              attempts=backfill_parts.c.attempts + 1))
        return None

    def _dead(self, c, run_id: str | None) -> bool:
        """A run recorded on this host whose process is gone."""
        if not run_id:
            return False
        row = c.execute(sa.select(runs.c.host, runs.c.pid, runs.c.status).where(runs.c.run_id == run_id)).first()
        if row is None:
            return False
        if row[2] in ("crashed", "failed", "interrupted", "completed", "incomplete"):
            return True
        return row[0] == socket.gethostname() and bool(row[1]) and not _alive(row[1])

    def _reporting(self, c, run_id: str | None, beat: datetime | None, stale_s: float) -> bool:
        """A partition's run is alive: it reported within `stale_s` and its process is not gone."""
        if beat is None:
            return False
        if beat.tzinfo is None:  # SQLite hands timestamps back naive; they were written in UTC
            beat = beat.replace(tzinfo=timezone.utc)
        return (_now() - beat).total_seconds() < stale_s and not self._dead(c, run_id)

    def part_alive(self, part: dict, stale_s: float) -> bool:
        """Is the run on a `running` partition still reporting?"""
        with self.engine.connect() as c:
            return self._reporting(c, part.get("run_id"), part.get("heartbeat_at"), stale_s)

    def beat_part(self, backfill_id: str, part_key: str) -> None:
        """The run on a partition is alive (called every part_ttl_s / 4)."""
        self.mark_part(backfill_id, part_key, heartbeat_at=_now())

    # -- reporting ----------------------------------------------------------------------
    def source_overview(self) -> list[dict]:
        """Per (source, target): cursor, last run, messages delivered / in doubt / refused."""
        with self.engine.connect() as c:
            out: dict[tuple[str, str], dict] = {}
            for src, tgt, cur, upd in c.execute(sa.select(source_state.c.source, source_state.c.target,
                                                          source_state.c.cursor, source_state.c.updated_at)):
                out[(src, tgt)] = {"source": src, "target": tgt, "cursor": cur, "state_updated_at": upd}
            for src, tgt, status, n in c.execute(
                    sa.select(batches.c.source, batches.c.target, batches.c.status, sa.func.sum(batches.c.n_messages))
                    .group_by(batches.c.source, batches.c.target, batches.c.status)):
                out.setdefault((src, tgt), {"source": src, "target": tgt})[status] = int(n or 0)
            for src, tgt, st, n in c.execute(sa.select(objects.c.source, objects.c.target, objects.c.status,
                                                       sa.func.count()).group_by(objects.c.source, objects.c.target,
                                                                                 objects.c.status)):
                out.setdefault((src, tgt), {"source": src, "target": tgt})[f"files_{st}"] = int(n)
            for r in c.execute(sa.select(runs).order_by(runs.c.started_at)).mappings():
                row = out.setdefault((r["source"], r["target"]), {"source": r["source"], "target": r["target"]})
                row["last_run"] = dict(r)
                if r["flow"] != "backfill" and r["status"] not in ("running",):
                    row["last_sync"] = dict(r)
        return sorted(out.values(), key=lambda d: (d["source"], d["target"]))

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


def _tail(prev: bytes | None, new: np.ndarray) -> bytes:
    old = np.frombuffer(prev, dtype=np.int64) if prev else np.empty(0, dtype=np.int64)
    return np.concatenate([old, new.astype(np.int64)])[-TAIL:].tobytes()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    # WAL lets the loaders of several buckets commit while others read; NORMAL is durable
    # across process crashes (what exactly-once needs), not across power loss of the host
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=60000")
    cur.close()
