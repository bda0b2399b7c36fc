"""Prefect flows: a backfill split into partitions, fanned out over a work pool or run locally.

`backfill_flow` splits [since, until) of a source (tasks/partition.py), records the parts in
the ledger (so the same backfill run again resumes: done parts are skipped) and then either

* `fan_out="deployment"`: starts one `memos-etl-backfill-part` flow run per part through a
  deployment, which any worker of the pool picks up, and watches them: a part whose run
  failed, crashed, or stopped reporting (its worker was killed) is submitted again, up to
  `backfill.max_attempts` runs; or
* `fan_out="local"`: runs the parts as task runs on this machine, `parallel` at a time.

The bookkeeping (the plan, a part claimed, run and recorded, the rounds of local attempts,
the totals) is the Prefect-free runner's (flows/runner/backfill.py), which `backfill
--no-prefect` runs alone; this module adds the task runs, the flow runs of the deployment,
the artifact and the event.
"""

from __future__ import annotations

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
from flows.events import RUN_COUNTS, emit, flow_parameter
from flows.runner import backfill as parts
from flows.runtime import flow_run, slug
from flows.sync import execute

PART_DEPLOYMENT = "memos-etl-backfill-part/backfill-part"


@flow(name="memos-etl-backfill-part", log_prints=False)
def backfill_part_flow(
    source: str, backfill_id: str, part_key: str, spec: dict, config_path: str | None = None, config: dict | None = None
) -> dict:
    """Load one partition of a backfill (started by backfill_flow through a deployment): its
    run publishes progress and its report as artifacts keyed by the part."""
    with flow_run(source, config_path, config) as (cfg, mapping):
        key = f"backfill-{slug(mapping.source.name)}-{slug(part_key)[:60]}"
        out = parts.run_part(
            mapping,
            cfg,
            backfill_id,
            part_key,
            spec,
            lambda part, run_id: execute(mapping, cfg, part, flow="sync", run_id=run_id, publish_key=key),
        )
        get_run_logger().info("part %s: %s", part_key, out["status"])
        return out


#: a part run locally inside a backfill flow run: the runner's part, one task run each
part_task = task(name="backfill-part", cache_policy=NO_CACHE, retries=0)(parts.run_part)


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
    """The runner's backfill, its parts as task runs (`fan_out="local"` in a flow run), flow
    runs of `deployment` ("deployment"), or threads (outside a flow run); in a flow run, a
    table artifact of the parts."""
    if fan_out not in ("local", "deployment"):
        raise ValueError(f"fan_out must be local or deployment, not {fan_out!r}")
    log = get_run_logger() if in_flow else None

    def run_parts(bid: str, specs: dict[str, dict], ledger: Ledger) -> None:
        if fan_out == "deployment":
            _fan_out(cfg, bid, specs, ledger, source, config_path, config, deployment, log)
        elif in_flow:
            parts.run_local(cfg, bid, ledger, lambda todo: _task_runs(mapping, cfg, bid, specs, todo, parallel))
        else:
            parts.on_threads(mapping, cfg, parallel)(bid, specs, ledger)

    result, state = parts.backfill(
        mapping, cfg, since=since, until=until, by=by, every=every, buckets=buckets, run_parts=run_parts
    )
    if in_flow:
        bid, done = result["backfill_id"], result["done"]
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


def _task_runs(mapping, cfg, bid, specs, todo, parallel) -> None:
    """One round of local parts, each a `backfill-part` task run, `parallel` at a time; a part
    whose task run failed is left open in the ledger for the next round."""
    runner: ThreadPoolTaskRunner = ThreadPoolTaskRunner(max_workers=max(1, parallel))
    with runner:
        futures = [
            runner.submit(
                part_task,
                parameters={"mapping": mapping, "cfg": cfg, "backfill": bid, "part_key": k, "spec": specs[k]},
            )
            for k in todo
        ]
        for f in futures:
            f.wait()


def _fan_out(cfg, bid, specs, ledger, source, config_path, config, deployment, log) -> None:
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
                elif st.is_pending() and row["status"] == "pending":
                    # a worker took the run (Pending) and died before starting it: Prefect leaves
                    # such a run Pending for good, so after the part's TTL it is resubmitted
                    since = st.timestamp
                    if since is not None and (datetime.now(UTC) - since).total_seconds() > ttl:
                        retry(key, fr, f"flow run {fr.name} was taken by a worker {ttl:.0f}s ago and never started")
                elif row["status"] == "running" and not ledger.part_alive(row, ttl):
                    retry(key, fr, f"flow run {fr.name} stopped reporting (its worker is gone)")
            time.sleep(cfg.backfill.poll_s)
