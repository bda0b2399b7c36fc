"""Prefect flows: a backfill split into partitions, fanned out over a work pool or run locally.

`backfill_flow` splits [since, until) of a source (tasks/partition.py), records the parts in
the ledger (so the same backfill run again resumes: done parts are skipped) and then either

* `fan_out="deployment"`: starts one `memos-etl-backfill-part` flow run per part through a
  deployment, which any worker of the pool picks up, and watches them: a part whose run
  failed, crashed, or stopped reporting (its worker was killed) is submitted again, up to
  `backfill.max_attempts` runs; or
* `fan_out="local"`: runs the parts as task runs on this machine, `parallel` at a time.

A part is one ordinary pipeline run over a bounded slice: it never moves the nightly cursor,
its messages are checked against the ledger like any run's, and conversation leases keep it
from racing a nightly run or another part on the same conversation.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from core.config import Mapping, RunConfig
from core.ledger import Ledger
from core.report import Counts
from flows import runner as pipeline
from flows.events import RUN_COUNTS, emit, flow_parameter
from flows.runtime import flow_run, slug
from flows.sync import execute
from tasks.extract import Slice, open_source
from tasks.partition import backfill_id as make_backfill_id
from tasks.partition import split

PART_DEPLOYMENT = "memos-etl-backfill-part/backfill-part"


def run_part(mapping: Mapping, cfg: RunConfig, backfill: str, part_key: str, spec: dict, in_flow: bool = True) -> dict:
    """Claim one partition in the ledger, load it, record how it ended. Safe to call twice:
    a done part is skipped, a part another live run is loading is left to it."""
    ledger = Ledger(cfg.state.ledger())
    run_id = pipeline.new_run_id()
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
            report = execute(
                mapping,
                cfg,
                Slice.from_spec(spec),
                flow="sync",
                run_id=run_id,
                in_flow=in_flow,
                publish_key=f"backfill-{slug(mapping.source.name)}-{slug(part_key)[:60]}",
            )
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


@flow(name="memos-etl-backfill-part", log_prints=False)
def backfill_part_flow(
    source: str, backfill_id: str, part_key: str, spec: dict, config_path: str | None = None, config: dict | None = None
) -> dict:
    """Load one partition of a backfill (started by backfill_flow through a deployment)."""
    with flow_run(source, config_path, config) as (cfg, mapping):
        out = run_part(mapping, cfg, backfill_id, part_key, spec)
        get_run_logger().info("part %s: %s", part_key, out["status"])
        return out


part_task = task(name="backfill-part", cache_policy=NO_CACHE, retries=0)(run_part)


@flow(name="memos-etl-backfill", log_prints=False)
def backfill_flow(
    source: str,
    since: str | None = None,
    until: str | None = None,
    by: str = "auto",
    every: str | None = None,
    buckets: int = 16,
    fan_out: str = "local",
    parallel: int = 2,
    config_path: str | None = None,
    config: dict | None = None,
    deployment: str = PART_DEPLOYMENT,
) -> dict:
    """Backfill [since, until) of a source, split `by` cursor | partition | file | hash (auto:
    cursor for SQL, partition for Hive layouts, else file), `every` per part."""
    with flow_run(source, config_path, config, drain=False) as (cfg, mapping):
        result = backfill(
            mapping,
            cfg,
            source=source,
            since=since,
            until=until,
            by=by,
            every=every,
            buckets=buckets,
            fan_out=fan_out,
            parallel=parallel,
            config_path=config_path,
            config=config,
            deployment=deployment,
        )
        backfill_event(result, cfg.target.ledger_name)
        return result


def backfill_event(result: dict, target: str) -> None:
    """`memos-etl.backfill.<status>`: the whole backfill, its parts and its counts (each part's
    run emits its own run event)."""
    c = result.get("counts") or {}
    emit(
        f"backfill.{result.get('status', 'unknown')}",
        result["source"],
        target,
        {
            "backfill_id": result.get("backfill_id"),
            "parts": result.get("parts"),
            "done": result.get("done"),
            "ran": result.get("ran"),
            "not_done": result.get("not_done"),
            "counts": {k: c.get(k) for k in RUN_COUNTS if k in c},
            "config_source": flow_parameter("source"),
        },
    )


def plan(mapping: Mapping, cfg: RunConfig, since=None, until=None, by="auto", every=None, buckets=16):
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


def backfill(
    mapping: Mapping,
    cfg: RunConfig,
    *,
    source: str,
    since=None,
    until=None,
    by="auto",
    every=None,
    buckets=16,
    fan_out="local",
    parallel=2,
    config_path=None,
    config=None,
    deployment=PART_DEPLOYMENT,
    in_flow: bool = True,
) -> dict:
    if fan_out not in ("local", "deployment"):
        raise ValueError(f"fan_out must be local or deployment, not {fan_out!r}")
    log = get_run_logger() if in_flow else None
    bid, parts = plan(mapping, cfg, since, until, by, every, buckets)
    specs = {p.key: p.slice.spec() for p in parts}
    ledger = Ledger(cfg.state.ledger())
    try:
        ran = sum(r["status"] != "done" for r in ledger.backfill_state(bid))
        if fan_out == "local":
            _local(mapping, cfg, bid, specs, parallel, ledger, in_flow)
        else:
            _fan_out(mapping, cfg, bid, specs, ledger, source, config_path, config, deployment, log)
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
    if in_flow:
        create_table_artifact(
            [
                {"part": r["part_key"], "status": r["status"], "attempts": r["attempts"], "run": r["run_id"] or ""}
                for r in state
            ],
            key=f"backfill-{slug(mapping.source.name)}",
            description=f"backfill {bid} of {mapping.source.name}: {done}/{len(state)} parts done",
        )
        assert log is not None  # in a flow run
        log.info("backfill %s: %d of %d parts done", bid, done, len(state))
    return result


def _local(mapping, cfg, bid, specs, parallel, ledger, in_flow) -> None:
    """Run the parts not done yet on this machine, `parallel` at a time, each up to max_attempts."""
    for _ in range(cfg.backfill.max_attempts):
        todo = [r["part_key"] for r in ledger.backfill_state(bid) if r["status"] != "done"]
        if not todo:
            return
        if in_flow:
            runner: ThreadPoolTaskRunner = ThreadPoolTaskRunner(max_workers=max(1, parallel))
            with runner:
                futures = [
                    runner.submit(
                        part_task,
                        parameters={
                            "mapping": mapping,
                            "cfg": cfg,
                            "backfill": bid,
                            "part_key": k,
                            "spec": specs[k],
                            "in_flow": False,
                        },
                    )
                    for k in todo
                ]
                for f in futures:
                    f.wait()
        else:
            pipeline.thread_fanout(max(1, parallel))(run_part, [(mapping, cfg, bid, k, specs[k], False) for k in todo])


def _fan_out(mapping, cfg, bid, specs, ledger, source, config_path, config, deployment, log) -> None:
    """One flow run per part through `deployment`; watch them, resubmit the ones that died."""
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.states import Crashed

    submitted: dict[str, str] = {}  # part -> flow run id
    runs_of: dict[str, int] = {}

    def submit(key: str) -> None:
        fr: Any = run_deployment(  # sync here: a FlowRun (its type also allows the async form)
            deployment,
            parameters={
                "source": source,
                "backfill_id": bid,
                "part_key": key,
                "spec": specs[key],
                "config_path": config_path,
                "config": config,
            },
            timeout=0,
            as_subflow=False,
        )
        submitted[key] = str(fr.id)
        runs_of[key] = runs_of.get(key, 0) + 1
        # a fresh attempt: the part is claimed again by the run that starts for it
        ledger.mark_part(bid, key, flow_run_id=str(fr.id), status="pending", heartbeat_at=None)
        log.info("part %s -> flow run %s (attempt %d)", key, fr.name, runs_of[key])

    def retry(key: str, fr, why: str) -> None:
        if not fr.state.is_final():
            client.set_flow_run_state(
                fr.id, Crashed(message=f"memos-etl backfill: {why}; part resubmitted"), force=True
            )
        log.warning("part %s: %s", key, why)
        if runs_of[key] < cfg.backfill.max_attempts:
            submit(key)
        else:
            given_up.add(key)

    given_up: set[str] = set()
    ttl = cfg.backfill.part_ttl_s
    with get_client(sync_client=True) as client:
        while True:
            state = {r["part_key"]: r for r in ledger.backfill_state(bid)}
            open_parts = [k for k, r in state.items() if r["status"] != "done" and k not in given_up]
            if not open_parts:
                return
            for key in open_parts:
                row = state[key]
                if key not in submitted:
                    submit(key)
                    continue
                fr = client.read_flow_run(UUID(submitted[key]))
                st = fr.state
                if st is None:
                    continue
                if st.is_final():
                    retry(key, fr, f"flow run {fr.name} ended {st.name} with the part {row['status']}")
                elif st.is_running() and row["status"] == "pending":
                    started = fr.start_time or fr.expected_start_time
                    if started is not None and (datetime.now(UTC) - started).total_seconds() > ttl:
                        retry(key, fr, f"flow run {fr.name} started {ttl:.0f}s ago and never claimed the part")
                elif row["status"] == "running" and not ledger.part_alive(row, ttl):
                    retry(key, fr, f"flow run {fr.name} stopped reporting (its worker is gone)")
            time.sleep(cfg.backfill.poll_s)
