"""Runs: one row per sync, backfill part, replay, re-drive or plan, with its report.

A run's record is final once it is anything but `running`; a final run holds no
conversation lease (finish_run releases them in the same transaction), and a run whose
process is gone is marked `crashed` by the next run on its host.
"""

from __future__ import annotations

import json
import os
import socket

import sqlalchemy as sa

from core.ledger.db import Store, guarded, now
from core.ledger.tables import leases, runs

FINAL = ("completed", "incomplete", "interrupted", "failed", "crashed", "planned", "rolled_back")

#: runs this process is executing now: a `running` record with our pid and not in here was
#: left behind by a run of this process that could not write its end (e.g. the ledger was down)
_ACTIVE: set[str] = set()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def process_gone(run_id: str, host: str | None, pid: int | None) -> bool:
    """The process of a run recorded on this host has ended (or, in this process, the run has)."""
    if host != socket.gethostname() or not pid:
        return False
    if pid == os.getpid():
        return run_id not in _ACTIVE
    return not _alive(pid)


class Runs(Store):
    @guarded("recording the run's start")
    def start_run(self, run_id: str, flow: str, source: str, target: str, report: dict | None = None) -> None:
        with self.engine.begin() as c:
            c.execute(
                runs.insert().values(
                    run_id=run_id,
                    flow=flow,
                    source=source,
                    target=target,
                    started_at=now(),
                    status="running",
                    host=socket.gethostname(),
                    pid=os.getpid(),
                    report=json.dumps(report or {}, default=str),
                )
            )
        _ACTIVE.add(run_id)

    @guarded("marking crashed runs")
    def dead_runs(self) -> list[str]:
        """Runs still marked running whose process on this host is gone (killed): marked crashed.
        Leases of any run that is not running (crashed now, or final but unable to release
        them when it ended) are released."""
        with self.engine.begin() as c:
            rows = c.execute(
                sa.select(runs.c.run_id, runs.c.host, runs.c.pid).where(
                    runs.c.status == "running", runs.c.host == socket.gethostname()
                )
            ).all()
            dead = [r for r, host, pid in rows if process_gone(r, host, pid)]
            if dead:
                c.execute(runs.update().where(runs.c.run_id.in_(dead)).values(status="crashed", finished_at=now()))
            c.execute(
                leases.delete().where(leases.c.holder.in_(sa.select(runs.c.run_id).where(runs.c.status != "running")))
            )
        return dead

    @guarded("recording the run's end")
    def finish_run(self, run_id: str, status: str, report: dict) -> None:
        try:
            with self.engine.begin() as c:
                c.execute(
                    runs.update()
                    .where(runs.c.run_id == run_id)
                    .values(finished_at=now(), status=status, report=json.dumps(report, default=str))
                )
                c.execute(leases.delete().where(leases.c.holder == run_id))  # a final run holds no lease
        finally:
            _ACTIVE.discard(run_id)

    @guarded("reading a run")
    def run_record(self, run_id: str) -> dict | None:
        with self.engine.connect() as c:
            row = c.execute(sa.select(runs).where(runs.c.run_id == run_id)).mappings().first()
        if row is None:
            return None
        out = dict(row)
        out["report"] = json.loads(out["report"]) if out["report"] else {}
        return out

    @guarded("reading runs")
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

    @guarded("updating a run")
    def set_run_status(self, run_id: str, status: str) -> None:
        with self.engine.begin() as c:
            c.execute(runs.update().where(runs.c.run_id == run_id).values(status=status))


def run_is_over(c, run_id: str | None) -> bool:
    """A run that is over: final, or recorded on this host with its process gone."""
    if not run_id:
        return False
    row = c.execute(sa.select(runs.c.host, runs.c.pid, runs.c.status).where(runs.c.run_id == run_id)).first()
    if row is None:
        return False
    if row[2] in FINAL:
        return True
    return process_gone(run_id, row[0], row[1])
