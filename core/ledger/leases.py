"""Conversation leases: one sender per conversation across runs and workers.

A lease expires after the run's `load.lease_ttl_s` unless renewed; a run that ends releases
its leases with its final record (runs.py), and leases of runs that are over are released
by the next run's start, so only a run killed on another host waits for the TTL.
"""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from core.ledger.db import Store, guarded, now
from core.ledger.tables import leases


class Leases(Store):
    @guarded("taking conversation leases")
    def acquire(self, target: str, holder: str, pairs: list[tuple[str, str]], ttl_s: float) -> set[tuple[str, str]]:
        """Lease these conversations to `holder`; returns those it got (free, expired or already its own).

        One statement per chunk: INSERT ... ON CONFLICT DO UPDATE ... WHERE the lease is
        expired or ours, RETURNING what was taken."""
        if not pairs:
            return set()
        dialect = self.engine.dialect.name
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        elif dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        else:  # pragma: no cover - other databases: no leases, one run at a time
            return set(pairs)
        t = now()
        expires = t + timedelta(seconds=ttl_s)
        got: set[tuple[str, str]] = set()
        uniq = sorted(set(pairs))
        for i in range(0, len(uniq), 1000):
            stmt = insert(leases).values(
                [
                    {"target": target, "user_id": u, "conversation_id": c, "holder": holder, "expires_at": expires}
                    for u, c in uniq[i : i + 1000]
                ]
            )
            stmt = stmt.on_conflict_do_update(
                index_elements=[leases.c.target, leases.c.user_id, leases.c.conversation_id],
                set_={"holder": holder, "expires_at": expires},
                where=(leases.c.expires_at < t) | (leases.c.holder == holder),
            ).returning(leases.c.user_id, leases.c.conversation_id)
            with self.engine.begin() as c:
                got.update((u, cid) for u, cid in c.execute(stmt))
        return got

    @guarded("renewing conversation leases")
    def renew(self, target: str, holder: str, ttl_s: float) -> None:
        with self.engine.begin() as c:
            c.execute(
                leases.update()
                .where(leases.c.target == target, leases.c.holder == holder)
                .values(expires_at=now() + timedelta(seconds=ttl_s))
            )

    @guarded("releasing conversation leases")
    def release(self, target: str, holder: str, pairs: list[tuple[str, str]]) -> None:
        with self.engine.begin() as c:
            for i in range(0, len(pairs), 1000):
                ids = sorted({cid for _, cid in pairs[i : i + 1000]})
                c.execute(
                    leases.delete().where(
                        leases.c.target == target, leases.c.holder == holder, leases.c.conversation_id.in_(ids)
                    )
                )

    @guarded("counting conversation leases")
    def live_leases(self, target: str, user_id: str, conversation_id: str | None = None) -> int:
        """Unexpired leases on a user's conversations (or one of them) in `target`."""
        q = (
            sa.select(sa.func.count())
            .select_from(leases)
            .where(leases.c.target == target, leases.c.user_id == user_id, leases.c.expires_at >= now())
        )
        if conversation_id is not None:
            q = q.where(leases.c.conversation_id == conversation_id)
        with self.engine.connect() as c:
            return int(c.execute(q).scalar_one())
