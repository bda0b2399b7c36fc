"""Prefect flow: nightly/ad-hoc sync of one source into one MemOS target.

Files are staged by a `stage-files` task run and conversation buckets loaded by a
`load-buckets` task run, each running its files or buckets on `load.concurrency` threads
(staging on at most 4). Tasks are not retried by Prefect:
requests are retried at the HTTP edge (tasks/load/), and a failed run is resumed by
running it again, which the ledger makes safe. So retries never multiply.

Every flow of the project takes the same first parameters: `source` (a name under
`sources:` in the config file, or a mapping file path), `config_path` (the YAML config;
default $MEMOS_ETL_CONFIG) and `config` (overrides, e.g. from a deployment).
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger

from core import progress
from core.config import Mapping, RunConfig
from core.report import RunReport
from flows import runner as pipeline
from flows.heartbeat import in_process
from flows.runtime import flow_run, publish, slug, task_fanouts
from tasks.cursor import parse_bound
from tasks.extract import Slice


def execute(
    mapping: Mapping,
    cfg: RunConfig,
    part: Slice | None = None,
    *,
    flow: str = "sync",
    resend_in_doubt: bool = False,
    outbox: str | None = None,
    run_id: str | None = None,
    in_flow: bool = True,
    publish_key: str | None = None,
) -> RunReport:
    """One pipeline run with progress and report artifacts; task runs when inside a flow run."""
    sinks = []
    if in_flow:
        key = publish_key or f"sync-{slug(mapping.source.name)}"
        sinks.append(progress.PrefectProgress(f"{key}-progress", f"{flow} of {mapping.source.name}"))
        maps = task_fanouts(cfg)
    else:
        maps = {}
    try:
        report = pipeline.run(
            mapping,
            cfg,
            part=part,
            flow=flow,
            resend_in_doubt=resend_in_doubt,
            outbox=Path(outbox) if outbox else None,
            run_id=run_id,
            progress=progress.combined(*sinks),
            **maps,
        )
    except Exception as exc:
        if in_flow and getattr(exc, "report", None) is not None:
            publish(exc.report, publish_key, error=exc)  # type: ignore[attr-defined]  # the runner attaches it
        raise
    if in_flow:
        publish(report, publish_key)
    return report


@flow(name="memos-etl-sync", log_prints=False)
def sync_flow(
    source: str,
    config_path: str | None = None,
    config: dict | None = None,
    resend_in_doubt: bool = False,
    since: str | None = None,
    until: str | None = None,
    partitions: list[str] | None = None,
    outbox: str | None = None,
) -> dict:
    """Sync one source into the configured MemOS target: the nightly run.

    since/until/partitions select a slice ([since, until) of the SQL cursor or the Hive
    partition value); a slice never moves the nightly cursor. `outbox` makes it a dry run:
    the requests are written to that JSONL file and nothing is sent.
    """
    with flow_run(source, config_path, config) as (cfg, mapping):
        part = Slice(since=parse_bound(since), until=parse_bound(until), partitions=tuple(partitions or ()))
        report = execute(mapping, cfg, part, resend_in_doubt=resend_in_doubt, outbox=outbox)
        get_run_logger().info("run %s %s: %s", report.run_id, report.status, report.counts)
        return report.to_dict()


def run_sync(
    source: str,
    cfg: RunConfig,
    resend_in_doubt: bool = False,
    since: str | None = None,
    until: str | None = None,
    partitions: list[str] | None = None,
    outbox: str | None = None,
) -> dict:
    """Run the flow in this process (the CLI's way)."""
    overrides = cfg.model_dump(exclude={"sources"})
    with in_process():
        return sync_flow(
            source, str(cfg.path_) if cfg.path_ else None, overrides, resend_in_doubt, since, until, partitions, outbox
        )
