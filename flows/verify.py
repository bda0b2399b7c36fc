"""Prefect flow: verify what the target made of a source's delivered requests (tasks/verify.py).

Its result is a markdown artifact `verify-<source>` and events: `memos-etl.verify.finding` per
kind of finding (its count and up to 50 batch keys), then `memos-etl.verify.completed`. A
deployment trigger in deployments/prefect.yaml runs it after each completed nightly sync."""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from flows.events import emit
from flows.runner.verify import run_verify
from flows.runtime import flow_run, slug
from tasks.verify import FINDINGS, SAMPLE, VerifyResult


@flow(name="memos-etl-verify", log_prints=False)
def verify_flow(
    source: str,
    config_path: str | None = None,
    config: dict | None = None,
    sample: int | None = SAMPLE,
    seed: int = 0,
    run: str | None = None,
) -> dict:
    """Check a seeded sample (or all: sample None) of the source's delivered requests, and its
    target's erasures, against what the target holds."""
    with flow_run(source, config_path, config, drain=False) as (cfg, mapping):
        result = run_verify(mapping, cfg, sample=sample, seed=seed, run_id=run)
        publish_verify(result)
        return result.to_dict()


def publish_verify(result: VerifyResult) -> None:
    body = "\n".join(["```", *result.lines(), "```"])
    create_markdown_artifact(body, key=f"verify-{slug(result.source)}", description=f"verify of {result.source}")
    verify_events(result)


def verify_events(result: VerifyResult) -> None:
    """One event per kind of finding, then the summary (ids and counts only)."""
    for kind in FINDINGS:
        of_kind = [f for f in result.findings if f.outcome == kind]
        if of_kind:
            emit(
                "verify.finding",
                result.source,
                result.target,
                {
                    "finding": kind,
                    "requests": len(of_kind),
                    "batch_keys": [f.batch_key for f in of_kind[:50]],
                    "extra_copies": sum(f.extra_copies for f in of_kind),
                },
            )
    for e in result.erasures:
        if not e.clean:
            emit(
                "verify.finding",
                result.source,
                result.target,
                {
                    "finding": "erasure left memories",
                    "erasure_id": e.erasure_id,
                    "user_id": e.user_id,
                    "conversation_id": e.conversation_id,
                    "memories_left": e.memories_left,
                    "search_hits": e.search_hits,
                },
            )
    emit(
        "verify.completed",
        result.source,
        result.target,
        {
            "status": result.status,
            "checked": result.checked,
            "delivered": result.delivered,
            "outcomes": dict(result.outcomes),
            "erasures_checked": len(result.erasures),
            "listings": result.listings,
        },
    )
