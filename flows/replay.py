"""Prefect flow: replay some users' or conversations' messages on purpose (flows/runner/replay.py)."""

from __future__ import annotations

from prefect import flow, get_run_logger

from flows.runner.replay import replay
from flows.runtime import flow_run, publish, slug, task_fanouts


@flow(name="memos-etl-replay", log_prints=False)
def replay_flow(
    source: str,
    users: list[str] | None = None,
    conversations: list[str] | None = None,
    config_path: str | None = None,
    config: dict | None = None,
) -> dict:
    """Forget these users'/conversations' deliveries in the ledger and send them again, in order."""
    with flow_run(source, config_path, config) as (cfg, mapping):
        report = replay(mapping, cfg, list(users or []), list(conversations or []), **task_fanouts(cfg))
        publish(report, f"replay-{slug(mapping.source.name)}")
        get_run_logger().info("replay %s %s: %s", report.run_id, report.status, report.counts)
        return report.to_dict()
