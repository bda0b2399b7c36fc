"""Rewrites: conversations a source policy rewrites on the target, step by step.

MemOS only appends, so `on_change: replace` and `on_delete: delete` act on whole
conversations: delete the memories the conversation's delivered requests made, then send the
conversation again as the source now holds it. Each conversation moves through
`planned` (the memories may still be there) -> `deleted` (they are gone and the ledger has
forgotten the conversation's requests) -> removed (sent again in full). A killed run leaves a
row at one of these steps and the next run of the source finishes it; while a row exists, no
other run sends to that conversation (the loader holds its messages back).
"""

from __future__ import annotations

import sqlalchemy as sa

from core.ledger.db import Store, guarded, now
from core.ledger.tables import batches, conversations, messages, rewrites


class Rewrites(Store):
    @guarded("planning conversation rewrites")
    def plan_rewrites(self, target: str, source: str, run_id: str, convs: dict[tuple[str, str], str]) -> int:
        """Record conversations to rewrite (pair -> reason); ones already planned keep their step."""
        if not convs:
            return 0
        t = now()
        with self.engine.begin() as c:
            have = {
                (u, cid)
                for u, cid in c.execute(
                    sa.select(rewrites.c.user_id, rewrites.c.conversation_id).where(rewrites.c.target == target)
                )
            }
            new = [
                {
                    "target": target,
                    "user_id": u,
                    "conversation_id": cid,
                    "source": source,
                    "reason": why,
                    "status": "planned",
                    "run_id": run_id,
                    "updated_at": t,
                }
                for (u, cid), why in sorted(convs.items())
                if (u, cid) not in have
            ]
            if new:
                c.execute(rewrites.insert(), new)
        return len(new)

    @guarded("reading conversation rewrites")
    def pending_rewrites(self, target: str, source: str | None = None) -> list[dict]:
        q = sa.select(rewrites).where(rewrites.c.target == target)
        if source is not None:
            q = q.where(rewrites.c.source == source)
        with self.engine.connect() as c:
            return [dict(r) for r in c.execute(q.order_by(rewrites.c.user_id, rewrites.c.conversation_id)).mappings()]

    @guarded("reading conversation rewrites")
    def rewrite_pairs(self, target: str) -> frozenset:
        """(user_id, conversation_id) of every conversation being rewritten on a target."""
        with self.engine.connect() as c:
            return frozenset(
                (u, cid)
                for u, cid in c.execute(
                    sa.select(rewrites.c.user_id, rewrites.c.conversation_id).where(rewrites.c.target == target)
                )
            )

    @guarded("forgetting a rewritten conversation")
    def forget_for_rewrite(self, target: str, user_id: str, conversation_id: str) -> int:
        """The conversation's memories are deleted on the target: in one transaction, forget its
        requests and move its rewrite to `deleted`. The conversation keeps the hashes of its last
        messages as they were: if the target still lists the old raw messages (MemOS Cloud's
        /get/message may), an in-doubt resend that matches them is 'cannot tell', never 'landed'."""
        with self.engine.begin() as c:
            keys = [
                k
                for (k,) in c.execute(
                    sa.select(batches.c.batch_key).where(
                        batches.c.target == target,
                        batches.c.user_id == user_id,
                        batches.c.conversation_id == conversation_id,
                    )
                )
            ]
            n = 0
            for i in range(0, len(keys), 1000):
                chunk = keys[i : i + 1000]
                n += sum(
                    x or 0
                    for (x,) in c.execute(
                        sa.select(batches.c.n_messages).where(
                            batches.c.batch_key.in_(chunk), batches.c.status == "delivered"
                        )
                    )
                )
                c.execute(messages.delete().where(messages.c.batch_key.in_(chunk)))
                c.execute(batches.delete().where(batches.c.batch_key.in_(chunk)))
            c.execute(
                conversations.update()
                .where(
                    conversations.c.target == target,
                    conversations.c.user_id == user_id,
                    conversations.c.conversation_id == conversation_id,
                )
                .values(delivered_messages=0, last_order=None, last_batch_key=None, updated_at=now())
            )
            c.execute(
                rewrites.update()
                .where(
                    rewrites.c.target == target,
                    rewrites.c.user_id == user_id,
                    rewrites.c.conversation_id == conversation_id,
                )
                .values(status="deleted", updated_at=now())
            )
        return n

    @guarded("finishing conversation rewrites")
    def finish_rewrites(self, target: str, pairs: list[tuple[str, str]]) -> None:
        with self.engine.begin() as c:
            for u, cid in pairs:
                c.execute(
                    rewrites.delete().where(
                        rewrites.c.target == target,
                        rewrites.c.user_id == u,
                        rewrites.c.conversation_id == cid,
                        rewrites.c.status == "deleted",
                    )
                )
