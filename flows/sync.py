"""Prefect flow: nightly/ad-hoc sync of one source into one MemOS target.

Each file is one `stage-file` task run and each conversation bucket one `load-bucket` task
run, on a thread pool bounded by `load.concurrency`. Tasks are not retried by Prefect:
requests are retried at the HTTP edge (tasks/load.py), and a failed run is resumed by
running it again, which the ledger makes safe. So retries never multiply.
"""

from __future__ import annotations

import re
import threading

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from memos_etl import pipeline, shutdown
from memos_etl.config import RunConfig, load_mapping
from memos_etl.report import RunReport
from tasks.cursor import parse_bound
from tasks.extract import Slice
from tasks.load import load_bucket
from tasks.stage import stage_file

stage_task = task(stage_file, name="stage-file", cache_policy=NO_CACHE, retries=0)
load_task = task(load_bucket, name="load-bucket", cache_policy=NO_CACHE, retries=0)


def _prefect_map(t):
    def run_all(_fn, items):
        futures = [t.submit(*args) for args in items]
        return [f.result() for f in futures]
    return run_all


@flow(name="memos-etl-sync", log_prints=False)
def sync_flow(mapping_path: str, config: dict | None = None, resend_in_doubt: bool = False,
              since: str | None = None, until: str | None = None, partitions: list[str] | None = None) -> dict:
    """Sync one source (a mapping file) into the configured MemOS target.

    since/until/partitions select a backfill slice ([since, until) of the SQL cursor or the
    Hive partition value); a slice never moves the nightly cursor.
    """
    cfg = RunConfig.model_validate(config or {})
    mapping = load_mapping(mapping_path)
    if threading.current_thread() is threading.main_thread():
        # Prefect's engine turns SIGTERM into an exception that abandons requests in flight;
        # ours drains instead: in-flight requests finish and are recorded, the rest waits
        shutdown.install()
    logger = get_run_logger()
    try:
        part = Slice(since=parse_bound(since), until=parse_bound(until), partitions=tuple(partitions or ()))
        report = pipeline.run(mapping, cfg, stage_map=_prefect_map(stage_task), load_map=_prefect_map(load_task),
                              resend_in_doubt=resend_in_doubt, part=part)
    except Exception as exc:
        if getattr(exc, "report", None) is not None:
            publish(exc.report)
        raise
    publish(report)
    logger.info("run %s %s: %s", report.run_id, report.status, report.counts)
    return report.to_dict()


def publish(report: RunReport) -> None:
    """The run report as Prefect artifacts: a markdown summary and a table of outcomes."""
    key = "sync-" + re.sub(r"[^a-z0-9-]+", "-", report.source.lower())
    create_markdown_artifact(report.markdown(), key=key, description=f"memos-etl sync of {report.source}")
    rows = [{"measure": k, "value": v} for k, v in report.rows()]
    rows += [{"measure": f"quarantined: {r}", "value": str(n)} for r, n in report.counts.reasons.most_common(10)]
    create_table_artifact(rows, key=f"{key}-table", description=f"outcomes of run {report.run_id}")


def run_sync(mapping_path: str, cfg: RunConfig, resend_in_doubt: bool = False, since: str | None = None,
             until: str | None = None, partitions: list[str] | None = None) -> dict:
    """Run the flow with a task runner sized by the config."""
    runner = ThreadPoolTaskRunner(max_workers=cfg.load.concurrency)
    return sync_flow.with_options(task_runner=runner)(mapping_path, cfg.model_dump(), resend_in_doubt,
                                                      since, until, partitions)
