"""What the Prefect flows share: the flow preamble (heartbeat, config, graceful drain), the
task runs a phase runs in, and the run report published as artifacts. The flows (sync.py,
backfill.py, replay.py) are thin over this and the Prefect-free runner (flows/runner/)."""

from __future__ import annotations

import contextlib
import contextvars
import re
import threading
from collections.abc import Iterator

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from core import shutdown
from core.config import Mapping, RunConfig, load_run_config
from core.report import RunReport
from flows import runner as pipeline
from flows.events import run_events
from flows.heartbeat import beating


@contextlib.contextmanager
def flow_run(
    source: str, config_path: str | None, config: dict | None, drain: bool = True
) -> Iterator[tuple[RunConfig, Mapping]]:
    """Every flow's preamble: heartbeats while it runs, its parameters resolved into a validated
    config and mapping, and SIGTERM turned into a graceful drain (`drain`)."""
    with beating():
        cfg, mapping = resolve(source, config_path, config)
        if drain:
            drain_on_sigterm()
        yield cfg, mapping


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
        pipeline.thread_fanout(width)(
            in_context(fn), [items[i] for i in order], in_context(on_done) if on_done else None
        ),
    ):
        results[i] = r
    return results


# One task run per phase, its lanes threads inside it. A task run costs milliseconds on the
# run's path and tens of milliseconds of the API server's CPU (its events): one per file or
# bucket made Prefect a third of a short run. Progress is reported per file and bucket.
stage_task = task(name="stage-files", cache_policy=NO_CACHE, retries=0)(lanes)
load_task = task(name="load-buckets", cache_policy=NO_CACHE, retries=0)(lanes)


def prefect_fanout(t, width: int, size=None):
    """A pipeline FanOut that runs a phase as one task run of `t` (see `lanes`)."""

    def run_all(fn, items, on_done=None):
        items = list(items)
        return t(fn, items, width, [size(a) for a in items] if size else None, on_done)

    return run_all


def _unit_size(args: tuple) -> int:
    return getattr(args[1], "size", 0) or 0  # stage_file(plan, unit, ...)


def task_fanouts(cfg: RunConfig) -> dict:
    """stage_fanout / load_fanout for pipeline.run inside a flow run, as wide as the run's parallelism."""
    return {
        "stage_fanout": prefect_fanout(stage_task, min(cfg.load.concurrency, 4), _unit_size),
        "load_fanout": prefect_fanout(load_task, cfg.load.concurrency),
    }


def resolve(source: str, config_path: str | None, config: dict | None) -> tuple[RunConfig, Mapping]:
    """Flow parameters -> validated config and mapping (errors name the file and key)."""
    cfg = load_run_config(config_path, overrides=config)
    return cfg, cfg.mapping(source)


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")


def drain_on_sigterm() -> None:
    if threading.current_thread() is threading.main_thread():
        # Prefect's engine turns SIGTERM into an exception that abandons requests in flight;
        # ours drains instead: in-flight requests finish and are recorded, the rest waits
        shutdown.install()


def publish(report: RunReport, key: str | None = None, error: BaseException | None = None) -> None:
    """The run report as Prefect artifacts (a markdown summary and a table of outcomes) and
    its events (flows/events.py); `error`, the exception that ended the run, if any."""
    key = key or f"sync-{slug(report.source)}"
    create_markdown_artifact(report.markdown(), key=key, description=f"memos-etl {report.flow} of {report.source}")
    rows = [{"measure": k, "value": v} for k, v in report.rows()]
    rows += [{"measure": f"quarantined: {r}", "value": str(n)} for r, n in report.counts.reasons.most_common(10)]
    create_table_artifact(rows, key=f"{key}-table", description=f"outcomes of run {report.run_id}")
    run_events(report, error)
