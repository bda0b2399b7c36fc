"""Prefect events about what memos-etl runs did, for automations to act on.

Every event's resource is the source (`memos-etl.source.<name>`), related to the target
(`memos-etl.target.<name>`, role `target`) and, inside a flow run, to the flow run, its flow,
deployment and tags (as Prefect's own events name them). Payloads hold counts, ids and
commands, never message content. The names, all under `memos-etl.` (docs/events.md):

* `memos-etl.run.<status>`: a run ended: completed, incomplete, failed, interrupted, planned;
* `memos-etl.quarantine.over-threshold`: more rows failed validation than
  load.max_failed_share allows, so nothing was sent;
* `memos-etl.requests.in-doubt`: requests sent with no answer, left for the operator;
* `memos-etl.conversations.rewritten`: conversations deleted and sent again (on_change /
  on_delete);
* `memos-etl.erasure.done`: a user or conversation erased (ids only);
* `memos-etl.verify.finding`, `memos-etl.verify.completed`: what a verify run found.

Emitting never fails a run: an event that cannot be sent is logged at debug level."""

from __future__ import annotations

import logging
from typing import Any

from core.errors import QualityThresholdError, first_line
from core.report import RunReport

PREFIX = "memos-etl."
log = logging.getLogger(__name__)

#: the report's counts every run event carries (the rest are in its artifacts)
RUN_COUNTS = (
    "read",
    "delivered",
    "quarantined",
    "duplicates",
    "already_delivered",
    "in_doubt",
    "pending",
    "requests",
    "failed_requests",
    "changed_after_delivery",
    "deleted_in_source",
    "erased",
    "units_failed",
)


def source_resource(source: str, target: str) -> dict[str, str]:
    return {
        "prefect.resource.id": f"{PREFIX}source.{source}",
        "prefect.resource.name": source,
        "memos-etl.source": source,
        "memos-etl.target": target,
    }


def related(target: str) -> list[dict[str, str]]:
    """The target, and the flow run this process is in (with its flow, deployment, tags)."""
    out = [
        {
            "prefect.resource.id": f"{PREFIX}target.{target}",
            "prefect.resource.role": "target",
            "prefect.resource.name": target,
        }
    ]
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    if ctx is not None and ctx.flow_run is not None:
        from flows.heartbeat import flow_run_resources

        run, more = flow_run_resources(ctx)
        out.append({**{k: v for k, v in run.items() if k != "prefect.version"}, "prefect.resource.role": "flow-run"})
        out += [dict(r) for r in more]
    return out


def target_resource(target: str) -> dict[str, str]:
    return {"prefect.resource.id": f"{PREFIX}target.{target}", "prefect.resource.name": target}


def flow_parameter(name: str) -> Any:
    """A parameter of the flow run this process is in (None outside one)."""
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    return (ctx.parameters or {}).get(name) if ctx is not None else None


def emit(name: str, source: str | None, target: str, payload: dict[str, Any]) -> None:
    """One event `memos-etl.<name>` about `source` (None: about the target); never raises."""
    try:
        from prefect.events import emit_event

        resource = source_resource(source, target) if source is not None else target_resource(target)
        links = related(target) if source is not None else related(target)[1:]
        emit_event(event=PREFIX + name, resource=resource, related=links, payload=payload)
    except Exception:  # an event is not worth failing a run over
        log.debug("event %s not sent", name, exc_info=True)


def emit_now(name: str, source: str | None, target: str, payload: dict[str, Any]) -> bool:
    """Outside a flow run (a CLI command): the event sent and waited for, when a Prefect API is
    configured; False when none is (no server is started for one event)."""
    from prefect.events.worker import EventsWorker
    from prefect.settings import get_current_settings

    if not get_current_settings().api.url:
        return False
    emit(name, source, target, payload)
    try:
        EventsWorker.drain_all(timeout=10)
    except Exception:
        log.debug("event %s not flushed", name, exc_info=True)
    return True


def erasure_event(target: str, result: dict[str, Any], user: str, conversation: str | None) -> dict[str, Any]:
    """The payload of `memos-etl.erasure.done`: ids and numbers, never content."""
    keys = ("erasure_id", "complete", "memories_deleted", "messages_forgotten", "requests", "quarantine_rows_removed")
    return {"user_id": user, "conversation_id": conversation, **{k: result.get(k) for k in keys}}


def run_events(report: RunReport, error: BaseException | None = None) -> list[str]:
    """The events a finished (or failed) run emits; returns their names."""
    c = report.counts
    # the source as the flow was given it (a name under `sources:`, or a mapping path): what a
    # trigger hands on to the next flow (deployments/prefect.yaml's verify)
    base = {
        "run_id": report.run_id,
        "flow": report.flow,
        "slice": report.slice,
        "config_source": flow_parameter("source"),
    }
    sent: list[str] = []

    def send(name: str, payload: dict) -> None:
        emit(name, report.source, report.target, {**base, **payload})
        sent.append(PREFIX + name)

    status = report.status if error is None or report.status not in ("running", "completed") else "failed"
    send(
        f"run.{status}",
        {
            "status": status,
            "duration_s": round(report.duration_s, 3),
            "counts": {k: getattr(c, k) for k in RUN_COUNTS},
            "quarantine_reasons": dict(c.reasons.most_common(5)),
            "error": first_line(error, 500) if error is not None else report.error,
            "notes": len(report.notes),
        },
    )
    if isinstance(error, QualityThresholdError):
        send(
            "quarantine.over-threshold",
            {
                "failed": error.failed,
                "read": error.read,
                "share": round(error.failed / error.read, 4) if error.read else 0.0,
                "max_failed_share": error.max_share,
                "quarantine_reasons": dict(c.reasons.most_common(5)),
                "see": f"memos-etl quarantine list --source {report.source}",
            },
        )
    if c.in_doubt:
        send(
            "requests.in-doubt",
            {
                "in_doubt": c.in_doubt,
                "resolve": f"memos-etl sync {report.source} --resend-in-doubt (after checking the target)",
            },
        )
    if report.rewrite:
        rw = report.rewrite
        send(
            "conversations.rewritten",
            {
                **{k: rw.get(k) for k in ("conversations", "memories_deleted", "resent", "status") if k in rw},
                "rewrite_run_id": rw.get("run_id"),
            },
        )
    return sent
