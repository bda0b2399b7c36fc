"""A backfill's bookkeeping as plain functions: plan the parts in the ledger, run a part and
record how it ended, run the open parts on this machine, add up what they did.

`memos-etl backfill --no-prefect` calls `backfill` here as it is (the parts on threads); the
Prefect flows (flows/backfill.py) call the same functions with each part a task run or a flow
run of a deployment. Nothing here imports Prefect: it runs in the Airflow environment too.

A part is one ordinary pipeline run over a bounded slice: it never moves the nightly cursor,
its messages are checked against the ledger like any run's, and conversation leases keep it
from racing a nightly run or another part on the same conversation.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable

from core import progress
from core.config import Mapping, RunConfig
from core.ledger import Ledger
from core.report import Counts, RunReport
from flows.runner.fanout import thread_fanout
from flows.runner.pipeline import new_run_id, run
from tasks.extract import Slice, open_source
from tasks.partition import Part, split
from tasks.partition import backfill_id as make_backfill_id

#: runs a part's slice under the given run id and returns the run's report
RunSlice = Callable[[Slice, str], RunReport]
#: runs one round of parts (their keys); what a part did is in the ledger, not in a result
RunRound = Callable[[list[str]], object]
#: runs the open parts of a backfill: (backfill id, part key -> slice spec, its ledger)
RunParts = Callable[[str, dict[str, dict], Ledger], None]


def plan(
    mapping: Mapping, cfg: RunConfig, since=None, until=None, by="auto", every=None, buckets=16
) -> tuple[str, list[Part]]:
    """Split the range and record the parts; returns (backfill id, parts)."""
    src = open_source(mapping)
    parts = split(mapping, src, by, since, until, every, buckets)
    bid = make_backfill_id(mapping.source.name, cfg.target.ledger_name, by, since, until, every, buckets)
    ledger = Ledger(cfg.state.ledger())
    try:
        ledger.plan_backfill(bid, mapping.source.name, cfg.target.ledger_name, [(p.key, p.slice.spec()) for p in parts])
    finally:
        ledger.close()
    return bid, parts


def run_part(
    mapping: Mapping, cfg: RunConfig, backfill: str, part_key: str, spec: dict, run_slice: RunSlice | None = None
) -> dict:
    """Claim one partition in the ledger, load it, record how it ended. Safe to call twice:
    a done part is skipped, a part another live run is loading is left to it. `run_slice`
    runs the part's pipeline run (default: the runner's, progress to the process's sinks)."""
    if run_slice is None:

        def run_slice(part: Slice, run_id: str) -> RunReport:
            return run(mapping, cfg, part=part, run_id=run_id, progress=progress.report)

    ledger = Ledger(cfg.state.ledger())
    run_id = new_run_id()
    try:
        busy = ledger.claim_part(backfill, part_key, run_id, cfg.backfill.part_ttl_s)
        if busy:
            return {"part": part_key, "status": "skipped", "why": busy}
        stop = threading.Event()

        def beat():
            while not stop.wait(cfg.backfill.part_ttl_s / 4):
                ledger.beat_part(backfill, part_key)

        beater = threading.Thread(target=beat, name="memos-etl-part-heartbeat", daemon=True)
        beater.start()
        status, counts = "failed", {}
        try:
            report = run_slice(Slice.from_spec(spec), run_id)
            status = "done" if report.status == "completed" else report.status
            counts = report.to_dict()["counts"]
        except Exception as exc:  # what the failed attempt did still counts (the runner attaches its report)
            failed_report = getattr(exc, "report", None)
            if failed_report is not None:
                counts = failed_report.to_dict()["counts"]
            raise
        finally:
            stop.set()
            beater.join(timeout=5)
            counts = with_earlier_attempts(ledger, backfill, part_key, counts)
            ledger.mark_part(backfill, part_key, status=status, report=json.dumps(counts, default=str))
        return {"part": part_key, "status": status, "run_id": run_id, "counts": counts}
    finally:
        ledger.close()


#: what each attempt at a part did by itself: summed over attempts, so the backfill's totals
#: count the messages an earlier, incomplete attempt delivered
_PER_ATTEMPT = (
    "delivered",
    "requests",
    "failed_requests",
    "retries",
    "throttled",
    "quarantined_requests",
    "reconciled_landed",
    "reconciled_missing",
    "reconciled_unknown",
)


def with_earlier_attempts(ledger: Ledger, backfill: str, part_key: str, counts: dict) -> dict:
    earlier = next((r["report"] for r in ledger.backfill_state(backfill) if r["part_key"] == part_key), None)
    if not earlier or not counts:
        return counts
    before = json.loads(earlier)
    out = {**counts, **{k: counts.get(k, 0) + before.get(k, 0) for k in _PER_ATTEMPT}}
    # this attempt read the same slice and found what earlier attempts delivered already there:
    # count those once, as delivered, so read still equals the sum of the outcomes
    out["already_delivered"] = max(0, counts.get("already_delivered", 0) - before.get("delivered", 0))
    return out


def run_local(cfg: RunConfig, bid: str, ledger: Ledger, run_round: RunRound) -> None:
    """Run the parts not done yet on this machine, each up to `backfill.max_attempts` times:
    every round, `run_round` runs the parts still open."""
    for _ in range(cfg.backfill.max_attempts):
        todo = [r["part_key"] for r in ledger.backfill_state(bid) if r["status"] != "done"]
        if not todo:
            return
        run_round(todo)


def on_threads(mapping: Mapping, cfg: RunConfig, parallel: int) -> RunParts:
    """Run the open parts on `parallel` threads of this process (a part that raises ends the
    backfill with that error once the round's other parts are over)."""

    def run_parts(bid: str, specs: dict[str, dict], ledger: Ledger) -> None:
        fan = thread_fanout(max(1, parallel))
        run_local(cfg, bid, ledger, lambda todo: fan(run_part, [(mapping, cfg, bid, k, specs[k]) for k in todo]))

    return run_parts


def backfill(
    mapping: Mapping,
    cfg: RunConfig,
    *,
    since=None,
    until=None,
    by="auto",
    every=None,
    buckets=16,
    parallel=2,
    run_parts: RunParts | None = None,
) -> tuple[dict, list[dict]]:
    """Backfill [since, until) of a source, split `by` cursor | partition | file | hash (auto:
    cursor for SQL, partition for Hive layouts, else file), `every` per part. `run_parts` runs
    the open parts (default: on `parallel` threads here). Returns the result (what the CLI
    prints) and the ledger's rows of the parts."""
    bid, parts = plan(mapping, cfg, since, until, by, every, buckets)
    specs = {p.key: p.slice.spec() for p in parts}
    ledger = Ledger(cfg.state.ledger())
    try:
        ran = sum(r["status"] != "done" for r in ledger.backfill_state(bid))
        (run_parts or on_threads(mapping, cfg, parallel))(bid, specs, ledger)
        state = ledger.backfill_state(bid)
    finally:
        ledger.close()
    total = Counts()
    for row in state:
        c = json.loads(row["report"]) if row["report"] else {}
        c.pop("accounted", None)
        reasons = c.pop("reasons", {})
        if c:
            part_counts = Counts(**c)
            part_counts.reasons.update(reasons)
            total.add(part_counts)
    done = sum(r["status"] == "done" for r in state)
    result = {
        "backfill_id": bid,
        "source": mapping.source.name,
        "parts": len(state),
        "done": done,
        "ran": ran,
        "status": "completed" if done == len(state) else "incomplete",
        "not_done": {r["part_key"]: r["status"] for r in state if r["status"] != "done"},
        "counts": {**{k: v for k, v in total.__dict__.items() if k != "reasons"}, "reasons": dict(total.reasons)},
    }
    return result, state
