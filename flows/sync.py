"""Prefect flow: nightly/ad-hoc sync of one source into one MemOS target.

Files are staged by a `stage-files` task run and conversation buckets loaded by a
`load-buckets` task run, each running its files or buckets on `load.concurrency` threads
(staging on at most 4). Tasks are not retried by Prefect:
requests are retried at the HTTP edge (tasks/load.py), and a failed run is resumed by
running it again, which the ledger makes safe. So retries never multiply.

Every flow of the project takes the same first parameters: `source` (a name under
`sources:` in the config file, or a mapping file path), `config_path` (the YAML config;
default $MEMOS_ETL_CONFIG) and `config` (overrides, e.g. from a deployment).
"""

from __future__ import annotations

import contextvars
import re
import threading
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from core import progress, shutdown
from core.config import Mapping, RunConfig, load_run_config
from core.report import RunReport
from flows import runner as pipeline
from flows.heartbeat import beating, in_process
from tasks.cursor import parse_bound
from tasks.extract import Slice


def lanes(fn, items: list[tuple], width: int, sizes: list[int] | None = None, on_done=None) -> list:
    """`fn(*item)` for every item on `width` threads, largest first when sizes are given (a big
    file started last would run alone at the end); results in the items' order. Each item runs,
    and reports progress, in a copy of the caller's context: the task run, its flow run and the
    Prefect settings (API URL) they were started with."""
    parent = contextvars.copy_context()

    def in_context(f):
        return lambda *args: parent.copy().run(f, *args)

    order = sorted(range(len(items)), key=lambda i: -sizes[i]) if sizes else list(range(len(items)))
    results: list = [None] * len(items)
    for i, r in zip(
        order,
        pipeline.thread_map(width)(in_context(fn), [items[i] for i in order], in_context(on_done) if on_done else None),
    ):
        results[i] = r
    return results


# One task run per phase, its lanes threads inside it. A task run costs milliseconds on the
# run's path and tens of milliseconds of the API server's CPU (its events): one per file or
# bucket made Prefect a third of a short run. Progress is reported per file and bucket.
stage_task = task(lanes, name="stage-files", cache_policy=NO_CACHE, retries=0)
load_task = task(lanes, name="load-buckets", cache_policy=NO_CACHE, retries=0)


def prefect_map(t, width: int, size=None):
    """A pipeline Mapper that runs a phase as one task run of `t` (see `lanes`)."""

    def run_all(fn, items, on_done=None):
        items = list(items)
        return t(fn, items, width, [size(a) for a in items] if size else None, on_done)

    return run_all


def _unit_size(args: tuple) -> int:
    return getattr(args[2], "size", 0) or 0  # stage_file(mapping, source, unit, ...)


def task_maps(cfg: RunConfig) -> dict:
    """stage_map / load_map for pipeline.run inside a flow run, as wide as the run's parallelism."""
    return {
        "stage_map": prefect_map(stage_task, min(cfg.load.concurrency, 4), _unit_size),
        "load_map": prefect_map(load_task, cfg.load.concurrency),
    }


def resolve(source: str, config_path: str | None, config: dict | None) -> tuple[RunConfig, Mapping]:
    """Flow parameters -> validated config and mapping (errors name the file and key)."""
    cfg = load_run_config(config_path, overrides=config)
    return cfg, cfg.mapping(source)


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")


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
        maps = task_maps(cfg)
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
            publish(exc.report, publish_key)
        raise
    if in_flow:
        publish(report, publish_key)
    return report


def drain_on_sigterm() -> None:
    if threading.current_thread() is threading.main_thread():
        # Prefect's engine turns SIGTERM into an exception that abandons requests in flight;
        # ours drains instead: in-flight requests finish and are recorded, the rest waits
        shutdown.install()


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
    with beating():
        cfg, mapping = resolve(source, config_path, config)
        drain_on_sigterm()
        part = Slice(since=parse_bound(since), until=parse_bound(until), partitions=tuple(partitions or ()))
        report = execute(mapping, cfg, part, resend_in_doubt=resend_in_doubt, outbox=outbox)
        get_run_logger().info("run %s %s: %s", report.run_id, report.status, report.counts)
        return report.to_dict()


def publish(report: RunReport, key: str | None = None) -> None:
    """The run report as Prefect artifacts: a markdown summary and a table of outcomes."""
    key = key or f"sync-{slug(report.source)}"
    create_markdown_artifact(report.markdown(), key=key, description=f"memos-etl {report.flow} of {report.source}")
    rows = [{"measure": k, "value": v} for k, v in report.rows()]
    rows += [{"measure": f"quarantined: {r}", "value": str(n)} for r, n in report.counts.reasons.most_common(10)]
    create_table_artifact(rows, key=f"{key}-table", description=f"outcomes of run {report.run_id}")


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
