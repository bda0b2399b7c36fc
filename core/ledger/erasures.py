"""Erasures: erasure records that keep a forgotten user or conversation out of MemOS for good,
and the log of who was erased and when (ids only, never content).

An erasure record is written *before* anything is deleted on the target (status `started`) and
marked `done` after, so a crash in between still keeps every later run from loading those
messages, and `erase` run again finishes the deletion. Erasure records hold for every target:
an erasure is about a person, not about one MemOS.
"""

from __future__ import annotations

import getpass
import uuid
from typing import TYPE_CHECKING

import numpy as np
import sqlalchemy as sa

from core.ledger.db import Store, guarded, now
from core.ledger.tables import erasures

if TYPE_CHECKING:
    import pyarrow as pa


def _os_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name (a container's uid without a passwd entry)
        return "unknown"


class Erasures(Store):
    @guarded("starting an erasure")
    def start_erasure(self, user_id: str, conversation_id: str | None, target: str) -> str:
        """Record an erasure as started; returns its id (an unfinished one of the same scope is reused)."""
        with self.engine.begin() as c:
            q = sa.select(erasures.c.erasure_id).where(
                erasures.c.user_id == user_id, erasures.c.target == target, erasures.c.status == "started"
            )
            q = q.where(
                erasures.c.conversation_id.is_(None)
                if conversation_id is None
                else erasures.c.conversation_id == conversation_id
            )
            row = c.execute(q).first()
            if row:
                return row[0]
            eid = uuid.uuid4().hex
            c.execute(
                erasures.insert().values(
                    erasure_id=eid,
                    user_id=user_id,
                    conversation_id=conversation_id,
                    target=target,
                    erased_at=now(),
                    erased_by=_os_user(),
                    status="started",
                )
            )
        return eid

    @guarded("completing an erasure")
    def finish_erasure(self, erasure_id: str, memories_deleted: int, messages_forgotten: int) -> None:
        with self.engine.begin() as c:
            c.execute(
                erasures.update()
                .where(erasures.c.erasure_id == erasure_id)
                .values(
                    status="done",
                    erased_at=now(),
                    memories_deleted=memories_deleted,
                    messages_forgotten=messages_forgotten,
                )
            )

    @guarded("reading the erasure log")
    def erasure_log(self) -> list[dict]:
        with self.engine.connect() as c:
            return [dict(r) for r in c.execute(sa.select(erasures).order_by(erasures.c.erased_at)).mappings()]

    @guarded("reading erasures")
    def erased(self) -> tuple[set[str], set[tuple[str, str]]]:
        """(users erased whole, (user, conversation) pairs erased)."""
        users: set[str] = set()
        convs: set[tuple[str, str]] = set()
        with self.engine.connect() as c:
            for u, cid in c.execute(sa.select(erasures.c.user_id, erasures.c.conversation_id).distinct()):
                if cid is None:
                    users.add(u)
                else:
                    convs.add((u, cid))
        return users, convs


def erased_mask(table: pa.Table, users: set[str], convs: set[tuple[str, str]]) -> np.ndarray | None:
    """Rows of a canonical table that belong to an erased user or conversation (None: none)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if table.num_rows == 0 or not (users or convs):
        return None
    hit = np.zeros(table.num_rows, dtype=bool)
    user_col = table.column("user_id")
    if users:
        hit |= pc.fill_null(pc.is_in(user_col, pa.array(sorted(users), pa.string())), False).to_numpy(
            zero_copy_only=False
        )
    if convs:
        pair = pc.binary_join_element_wise(
            pc.fill_null(user_col, ""), pc.fill_null(table.column("conversation_id"), ""), "\x1f"
        )
        wanted = pa.array(sorted(f"{u}\x1f{c}" for u, c in convs), pa.string())
        hit |= pc.fill_null(pc.is_in(pair, wanted), False).to_numpy(zero_copy_only=False)
    return hit if hit.any() else None
