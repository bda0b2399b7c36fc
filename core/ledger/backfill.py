"""Backfill partitions: one row per slice of a backfill, what resumes it and who works on it.

A partition is claimed by one run at a time; a run that stops reporting for `stale_s` (or
whose process is gone, or whose record is final) loses it to the next claimant.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import sqlalchemy as sa

from core.ledger.db import Store, guarded, now
from core.ledger.runs import run_is_over
from core.ledger.tables import backfill_parts


class Backfills(Store):
    @guarded("recording a backfill's partitions")
    def plan_backfill(self, backfill_id: str, source: str, target: str, parts: list[tuple[str, dict]]) -> None:
        """Record a backfill's partitions; ones already recorded (a resumed backfill) keep their state."""
        with self.engine.begin() as c:
            have = {
                k
                for (k,) in c.execute(
                    sa.select(backfill_parts.c.part_key).where(backfill_parts.c.backfill_id == backfill_id)
                )
            }
            new = [
                {
                    "backfill_id": backfill_id,
                    "part_key": k,
                    "source": source,
                    "target": target,
                    "spec": json.dumps(spec, default=str),
                    "status": "pending",
                    "attempts": 0,
                    "updated_at": now(),
                }
                for k, spec in parts
                if k not in have
            ]
            if new:
                c.execute(backfill_parts.insert(), new)

    @guarded("reading a backfill")
    def backfill_state(self, backfill_id: str) -> list[dict]:
        with self.engine.connect() as c:
            rows = (
                c.execute(
                    sa.select(backfill_parts)
                    .where(backfill_parts.c.backfill_id == backfill_id)
                    .order_by(backfill_parts.c.part_key)
                )
                .mappings()
                .all()
            )
        return [dict(r) for r in rows]

    @guarded("updating a partition")
    def mark_part(self, backfill_id: str, part_key: str, **values) -> None:
        with self.engine.begin() as c:
            c.execute(
                backfill_parts.update()
                .where(backfill_parts.c.backfill_id == backfill_id, backfill_parts.c.part_key == part_key)
                .values(updated_at=now(), **values)
            )

    @guarded("claiming a partition")
    def claim_part(self, backfill_id: str, part_key: str, run_id: str, stale_s: float) -> str | None:
        """Take a partition for `run_id`. Returns None when it was taken, else why not: it is
        done, or another run is working on it and reported within `stale_s`."""
        t = now()
        with self.engine.begin() as c:
            if c.engine.dialect.name == "postgresql":
                q = (
                    sa.select(backfill_parts)
                    .where(backfill_parts.c.backfill_id == backfill_id, backfill_parts.c.part_key == part_key)
                    .with_for_update()
                )
            else:
                q = sa.select(backfill_parts).where(
                    backfill_parts.c.backfill_id == backfill_id, backfill_parts.c.part_key == part_key
                )
            row = c.execute(q).mappings().first()
            if row is None:
                return "unknown partition"
            if row["status"] == "done":
                return "done"
            if (
                row["status"] == "running"
                and row["run_id"] != run_id
                and self._reporting(c, row["run_id"], row["heartbeat_at"], stale_s)
            ):
                return f"run {row['run_id']} is on it"
            c.execute(
                backfill_parts.update()
                .where(backfill_parts.c.backfill_id == backfill_id, backfill_parts.c.part_key == part_key)
                .values(
                    status="running",
                    run_id=run_id,
                    heartbeat_at=t,
                    updated_at=t,
                    attempts=backfill_parts.c.attempts + 1,
                )
            )
        return None

    def _reporting(self, c, run_id: str | None, beat: datetime | None, stale_s: float) -> bool:
        """A partition's run is alive: it reported within `stale_s` and its process is not gone."""
        if beat is None:
            return False
        if beat.tzinfo is None:  # SQLite hands timestamps back naive; they were written in UTC
            beat = beat.replace(tzinfo=UTC)
        return (now() - beat).total_seconds() < stale_s and not run_is_over(c, run_id)

    @guarded("checking a partition's run")
    def part_alive(self, part: dict, stale_s: float) -> bool:
        """Is the run on a `running` partition still reporting?"""
        with self.engine.connect() as c:
            return self._reporting(c, part.get("run_id"), part.get("heartbeat_at"), stale_s)

    def beat_part(self, backfill_id: str, part_key: str) -> None:
        """The run on a partition is alive (called every part_ttl_s / 4)."""
        self.mark_part(backfill_id, part_key, heartbeat_at=now())
