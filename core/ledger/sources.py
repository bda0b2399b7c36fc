"""Source state: the manifest of files a source has fully processed, its cursor and the
column types its last completed run saw; and the per-source overview `status` prints."""

from __future__ import annotations

import json

import sqlalchemy as sa

from core.ledger.db import Store, guarded, now
from core.ledger.tables import batches, documents, objects, runs, source_state

#: values of one IN list (a statement's bound parameters: PostgreSQL allows 65,535, some SQLite
#: builds 32,766)
IN_CHUNK = 10_000


class Sources(Store):
    @guarded("reading the file manifest")
    def manifest(self, source: str, target: str) -> dict[str, tuple[str, str]]:
        """unit -> (version, status) for every file/object recorded for a source."""
        with self.engine.connect() as c:
            rows = c.execute(
                sa.select(objects.c.unit, objects.c.version, objects.c.status).where(
                    objects.c.source == source, objects.c.target == target
                )
            )
            return {u: (v, st) for u, v, st in rows}

    @guarded("recording processed files")
    def record_units(
        self, source: str, target: str, run_id: str, units: list, status: str, detail: str | None = None
    ) -> None:
        if not units:
            return
        t = now()
        rels = [u.rel for u in units]
        with self.engine.begin() as c:
            for i in range(0, len(rels), IN_CHUNK):  # bound parameters: PostgreSQL takes 65,535 a statement
                chunk = rels[i : i + IN_CHUNK]
                c.execute(
                    objects.delete().where(
                        objects.c.source == source, objects.c.target == target, objects.c.unit.in_(chunk)
                    )
                )
            c.execute(
                objects.insert(),
                [
                    {
                        "source": source,
                        "target": target,
                        "unit": u.rel,
                        "version": u.version,
                        "size": u.size,
                        "status": status,
                        "run_id": run_id,
                        "detail": detail,
                        "updated_at": t,
                    }
                    for u in units
                ],
            )

    @guarded("reading the source's state")
    def source_state(self, source: str, target: str) -> tuple[str | None, dict]:
        with self.engine.connect() as c:
            row = c.execute(
                sa.select(source_state.c.cursor, source_state.c.columns).where(
                    source_state.c.source == source, source_state.c.target == target
                )
            ).first()
        return (row[0], json.loads(row[1]) if row and row[1] else {}) if row else (None, {})

    @guarded("saving the source's state")
    def save_source_state(self, source: str, target: str, cursor: str | None, columns: dict, move_cursor: bool) -> None:
        key = (source_state.c.source == source) & (source_state.c.target == target)
        values = {"columns": json.dumps(columns), "updated_at": now()}
        if move_cursor:
            values["cursor"] = cursor
        for attempt in (1, 2):
            try:
                with self.engine.begin() as c:
                    if c.execute(sa.select(source_state.c.cursor).where(key)).first() is None:
                        c.execute(source_state.insert().values(source=source, target=target, **values))
                    else:
                        c.execute(source_state.update().where(key).values(**values))
                return
            except sa.exc.IntegrityError:
                # two runs of a new source (backfill parts side by side) both found no row and
                # both inserted: the second updates the row the first made
                if attempt == 2:
                    raise

    @guarded("resetting the cursor")
    def reset_cursor(self, source: str, target: str) -> None:
        with self.engine.begin() as c:
            c.execute(
                source_state.update()
                .where(source_state.c.source == source, source_state.c.target == target)
                .values(cursor=None, updated_at=now())
            )
            c.execute(objects.delete().where(objects.c.source == source, objects.c.target == target))

    @guarded("setting the cursor")
    def set_cursor(self, source: str, target: str, cursor: str | None) -> None:
        with self.engine.begin() as c:
            c.execute(
                source_state.update()
                .where(source_state.c.source == source, source_state.c.target == target)
                .values(cursor=cursor, updated_at=now())
            )

    @guarded("forgetting a run's files")
    def forget_units_of_run(self, source: str, target: str, run_id: str) -> int:
        """Drop the manifest entries a run wrote, so the next run reads those files again."""
        with self.engine.begin() as c:
            return c.execute(
                objects.delete().where(
                    objects.c.source == source, objects.c.target == target, objects.c.run_id == run_id
                )
            ).rowcount

    @guarded("forgetting files")
    def forget_units(self, source: str, target: str, rels: list[str]) -> None:
        """Drop these units from the manifest (files gone from the source, nothing of them held)."""
        with self.engine.begin() as c:
            for i in range(0, len(rels), IN_CHUNK):
                c.execute(
                    objects.delete().where(
                        objects.c.source == source,
                        objects.c.target == target,
                        objects.c.unit.in_(rels[i : i + IN_CHUNK]),
                    )
                )

    @guarded("reading the overview")
    def source_overview(self) -> list[dict]:
        """Per (source, target): cursor, last run, messages delivered / in doubt / refused."""
        with self.engine.connect() as c:
            out: dict[tuple[str, str], dict] = {}
            for src, tgt, cur, upd in c.execute(
                sa.select(
                    source_state.c.source, source_state.c.target, source_state.c.cursor, source_state.c.updated_at
                )
            ):
                out[(src, tgt)] = {"source": src, "target": tgt, "cursor": cur, "state_updated_at": upd}
            for src, tgt, status, n in c.execute(
                sa.select(
                    batches.c.source, batches.c.target, batches.c.status, sa.func.sum(batches.c.n_messages)
                ).group_by(batches.c.source, batches.c.target, batches.c.status)
            ):
                out.setdefault((src, tgt), {"source": src, "target": tgt})[status] = int(n or 0)
            for src, tgt, st, n in c.execute(
                sa.select(objects.c.source, objects.c.target, objects.c.status, sa.func.count()).group_by(
                    objects.c.source, objects.c.target, objects.c.status
                )
            ):
                out.setdefault((src, tgt), {"source": src, "target": tgt})[f"files_{st}"] = int(n)
            for src, tgt, st, n in c.execute(
                sa.select(documents.c.source, documents.c.target, documents.c.status, sa.func.count()).group_by(
                    documents.c.source, documents.c.target, documents.c.status
                )
            ):
                out.setdefault((src, tgt), {"source": src, "target": tgt})[f"documents_{st}"] = int(n)
            for r in c.execute(sa.select(runs).order_by(runs.c.started_at)).mappings():
                row = out.setdefault((r["source"], r["target"]), {"source": r["source"], "target": r["target"]})
                row["last_run"] = dict(r)
                if r["flow"] != "backfill" and r["status"] not in ("running",):
                    row["last_sync"] = dict(r)
        return sorted(out.values(), key=lambda d: (d["source"], d["target"]))

    @guarded("reading the source's targets")
    def targets_of(self, source: str) -> dict[str, int]:
        """target name -> messages of this source delivered there (target identity checks)."""
        with self.engine.connect() as c:
            rows = c.execute(
                sa.select(batches.c.target, sa.func.sum(batches.c.n_messages))
                .where(batches.c.source == source, batches.c.status == "delivered")
                .group_by(batches.c.target)
            ).all()
        return {t: int(n or 0) for t, n in rows}
