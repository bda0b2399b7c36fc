"""Flow-run heartbeats that stop the moment a run ends, for flow runs started in this process.

Prefect (3.9) sends a `prefect.flow-run.heartbeat` event every `flows.heartbeat_frequency`
seconds (default 180) while a flow runs; an automation can mark a run that stops sending them
as crashed. Its sender thread sleeps one second at a time and a sync flow joins that thread
when the run ends, so every flow run ends on the next whole second of the thread's clock:
0 to 1 s added to each run, half a second on average, a quarter of a 100k-message sync
(benchmarks/prefect_bench.py measured flows of 2.1 or 3.1 s and nothing between).

For flow runs started in this process (`in_process`: the CLI, run_sync, the benchmarks),
Prefect's sender is turned off for the call and `beating()` (at the top of every memos-etl
flow) sends the same event, at the same interval, from a thread that wakes as soon as the
run's body returns. Runs started by a worker or `flows.serve` keep Prefect's own sender:
their settings come from the environment, where the frequency cannot be set to off, and
`beating()` then sends nothing, so no run sends two. A frequency the user set to off (None)
stays off.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

EVENT = "prefect.flow-run.heartbeat"
MINIMUM_S = 30  # Prefect's floor for the interval

log = logging.getLogger("memos_etl.heartbeat")
_interval: contextvars.ContextVar[int | None] = contextvars.ContextVar("memos_etl_heartbeat_s", default=None)


@contextmanager
def in_process() -> Iterator[None]:
    """Around a flow call in this process: Prefect's heartbeat sender off, ours on instead."""
    from prefect.context import SettingsContext, get_settings_context

    current = get_settings_context()
    seconds = current.settings.flows.heartbeat_frequency
    if seconds is None:  # heartbeats are off: nothing to take over
        yield
        return
    # a copy with one field changed; prefect's temporary_settings would rebuild every setting
    # from the environment and profile (tens of milliseconds, each run)
    off = current.settings.model_copy(
        update={"flows": current.settings.flows.model_copy(update={"heartbeat_frequency": None})}
    )
    token = _interval.set(max(seconds, MINIMUM_S))
    try:
        with SettingsContext(profile=current.profile, settings=off):
            yield
    finally:
        _interval.reset(token)


@contextmanager
def beating() -> Iterator[None]:
    """Inside a flow body: send this flow run's heartbeats if `in_process` took them over."""
    from prefect.context import FlowRunContext
    from prefect.settings import get_current_settings

    seconds = _interval.get()
    ctx = FlowRunContext.get()
    if seconds is None or ctx is None or ctx.flow_run is None or get_current_settings().flows.heartbeat_frequency:
        yield  # not ours to send: Prefect sends them, or nobody wants them
        return
    resource, related = flow_run_resources(ctx)
    stop = threading.Event()

    def loop() -> None:
        from prefect.events.utilities import emit_event

        while True:
            try:
                emit_event(event=EVENT, resource=resource, related=related)
            except Exception:  # a missed heartbeat is not worth failing the run over
                log.debug("heartbeat not sent", exc_info=True)
            if stop.wait(seconds):
                return

    # the copied context carries the run's settings (its API URL) into the thread
    thread = threading.Thread(
        target=contextvars.copy_context().run, args=(loop,), daemon=True, name="memos-etl-heartbeat"
    )
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=2)  # wakes at once; only an emit in progress can hold it


def flow_run_resources(ctx) -> tuple[dict[str, str], list]:
    """The heartbeat's resource (the flow run) and related resources (flow, deployment, tags),
    as Prefect's own heartbeat names them, so automations written for those match ours."""
    from prefect import __version__
    from prefect.events.related import RelatedResource, tags_as_related_resources

    run = ctx.flow_run
    resource = {
        "prefect.resource.id": f"prefect.flow-run.{run.id}",
        "prefect.resource.name": run.name or "",
        "prefect.version": __version__,
    }
    related = []
    if run.flow_id:
        related.append(
            RelatedResource.model_validate(
                {
                    "prefect.resource.id": f"prefect.flow.{run.flow_id}",
                    "prefect.resource.role": "flow",
                    "prefect.resource.name": ctx.flow.name if ctx.flow else "",
                }
            )
        )
    if run.deployment_id:
        related.append(
            RelatedResource.model_validate(
                {
                    "prefect.resource.id": f"prefect.deployment.{run.deployment_id}",
                    "prefect.resource.role": "deployment",
                }
            )
        )
    return resource, related + tags_as_related_resources(set(run.tags or []))
