"""Flow-run heartbeats (flows/heartbeat.py): one sender per run, read back from the Prefect server."""

from __future__ import annotations

import threading
import time

from core import progress
from flows.sync import run_sync, sync_flow
from tests.helpers import chat_rows, sample_mapping_at, write_jsonl


def heartbeats(flow_run_id) -> list[dict]:
    """The server's heartbeat events of one flow run, once its events have all arrived
    (events are persisted asynchronously: wait for the run's Completed event)."""
    from prefect.client.orchestration import get_client

    body = {
        "filter": {
            "event": {"prefix": ["prefect.flow-run."]},
            "any_resource": {"id": [f"prefect.flow-run.{flow_run_id}"]},
        },
        "limit": 50,
    }
    deadline = time.monotonic() + 30
    with get_client(sync_client=True) as client:
        while True:
            events = client.request("POST", "/events/filter", json=body).json()["events"]
            names = [e["event"] for e in events]
            if "prefect.flow-run.Completed" in names or time.monotonic() > deadline:
                return [e for e in events if e["event"] == "prefect.flow-run.heartbeat"]
            time.sleep(0.2)


def latest_runs(flow_name: str, n: int) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])), sort=FlowRunSort.START_TIME_DESC, limit=n
        )
    return [r.id for r in runs]


def test_each_flow_run_sends_one_heartbeat_sender_whoever_starts_it(prefect_server, dev_server, run_config, tmp_path):
    data = tmp_path / "data"
    write_jsonl(data / "a.jsonl", chat_rows(conversations=3, turns=4))
    mapping_path = sample_mapping_at(tmp_path, data)

    ours_alive: list[bool] = []  # seen from inside the run, at each progress report

    def sink(*_):
        ours_alive.append(any(t.name == "memos-etl-heartbeat" for t in threading.enumerate()))

    progress.sinks.append(sink)
    try:
        # started in this process (the CLI's way): ours sends, Prefect's joined sender is off
        report = run_sync(str(mapping_path), run_config)
        assert report["counts"]["delivered"] == 12 and ours_alive and all(ours_alive)
        ours_alive.clear()
        # called as a worker would (no in_process): Prefect's own sender, ours silent
        sync_flow(str(mapping_path), None, run_config.model_dump(exclude={"sources"}))
        assert ours_alive and not any(ours_alive)
    finally:
        progress.sinks.remove(sink)
    assert not [t for t in threading.enumerate() if t.name == "memos-etl-heartbeat"]  # stopped with the run
    first, second = latest_runs("memos-etl-sync", 2)[::-1]
    beats = heartbeats(first)
    assert len(beats) == 1  # none would mean no sender; two, both senders
    related = {r["prefect.resource.role"]: r for r in beats[0]["related"]}
    assert related["flow"]["prefect.resource.name"] == "memos-etl-sync"
    assert len(heartbeats(second)) == 1
