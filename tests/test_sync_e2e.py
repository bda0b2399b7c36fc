"""End to end over real HTTP: the Prefect flow and the pipeline against the dev-server."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.config import load_mapping
from core.errors import FatalTargetError, QualityThresholdError
from flows.runner import run
from flows.sync import run_sync
from tasks.quarantine import read_quarantine
from tests.conftest import SAMPLE_MAPPING
from tests.helpers import (
    chat_rows,
    expected_messages,
    sample_mapping_at,
    set_faults,
    stats,
    stored_infos,
    stored_messages,
    write_jsonl,
)

SAMPLE_FILES = sorted((SAMPLE_MAPPING.parent.parent.parent / "data" / "sample").glob("*.jsonl"))


def test_flow_delivers_every_valid_message_once_in_order_then_nothing(prefect_server, dev_server, run_config):
    run_config.state.data_docs = True
    report = run_sync(str(SAMPLE_MAPPING), run_config)
    expected, bad = expected_messages(SAMPLE_FILES)
    c = report["counts"]
    assert report["status"] == "completed"
    assert c["read"] == sum(len(v) for v in expected.values()) + bad
    assert c["quarantined"] == bad == 8
    assert c["delivered"] == c["read"] - c["quarantined"]
    assert c["accounted"]
    # what the server stored equals the source minus the quarantined rows, message by message
    assert stored_messages(dev_server.url) == expected
    infos = stored_infos(dev_server.url)
    assert all(
        i["source"] == "sample-chats"
        and i["run_id"] == report["run_id"]
        and i["first_key"]
        and i["last_key"]
        and "session" in i
        for i in infos
    )
    q = read_quarantine(run_config.state.work_dir, "sample-chats")
    assert q.num_rows == bad and all(len(r) >= 1 for r in q.column("reasons").to_pylist())
    assert set(q.column("source_file").to_pylist()) <= {f.name for f in SAMPLE_FILES}
    requests_before = stats(dev_server.url)["add_requests"]
    assert requests_before == c["requests"]
    # a Data Docs site and the Prefect artifacts of the run
    docs = Path(report["data_docs"])
    assert docs.name == "index.html" and list((docs.parent / "validations").rglob("*.html"))
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        arts = {a.key: a for a in client.read_artifacts()}
    assert {"sync-sample-chats", "sync-sample-chats-table", "sync-sample-chats-progress"} <= set(arts)
    assert float(arts["sync-sample-chats-progress"].data) == 100.0  # the UI's progress bar ran to the end

    again = run_sync(str(SAMPLE_MAPPING), run_config)
    assert again["counts"]["requests"] == 0 and again["counts"]["delivered"] == 0
    assert again["counts"]["units_skipped"] == 2 and again["counts"]["read"] == 0  # unchanged files not read
    assert stats(dev_server.url)["add_requests"] == requests_before
    assert stored_messages(dev_server.url) == expected


def test_grown_source_sends_only_new_messages_appended_in_order(dev_server, run_config, tmp_path):
    data = tmp_path / "data"
    write_jsonl(data / "day1.jsonl", chat_rows(conversations=6, turns=12))
    mapping = load_mapping(sample_mapping_at(tmp_path, data))
    first = run(mapping, run_config)
    assert first.counts.delivered == 72
    write_jsonl(
        data / "day2.jsonl",
        chat_rows(conversations=6, turns=5, start_turn=13) + chat_rows(conversations=2, turns=4, prefix="new"),
    )
    second = run(mapping, run_config)
    assert second.counts.delivered == 6 * 5 + 2 * 4 and second.counts.units_skipped == 1  # day1 not re-read
    assert second.counts.late == 0
    expected, _ = expected_messages(sorted(data.glob("*.jsonl")))
    assert stored_messages(dev_server.url) == expected


def test_postgres_ledger_gives_the_same_exactly_once(dev_server, run_config, tmp_path, pg_ledger_url):
    run_config.state.ledger_url = pg_ledger_url
    run_config.load.concurrency = 4
    data = tmp_path / "data"
    write_jsonl(data / "a.jsonl", chat_rows(conversations=20, turns=9))
    mapping = load_mapping(sample_mapping_at(tmp_path, data))
    from concurrent.futures import ThreadPoolExecutor

    from flows.runner import serial_fanout

    def parallel(fn, items, on_done=None):
        with ThreadPoolExecutor(4) as ex:
            return list(ex.map(lambda a: fn(*a), items))

    first = run(mapping, run_config, load_fanout=parallel, stage_fanout=serial_fanout)
    second = run(mapping, run_config, load_fanout=parallel)
    assert first.counts.delivered == 180 and second.counts.requests == 0
    expected, _ = expected_messages([data / "a.jsonl"])
    assert stored_messages(dev_server.url) == expected


def test_too_many_bad_rows_fail_the_run_before_anything_is_sent(dev_server, run_config):
    run_config.load.max_failed_share = 0.0001
    with pytest.raises(QualityThresholdError) as err:
        run(load_mapping(SAMPLE_MAPPING), run_config)
    assert "8 of 6474 rows" in str(err.value) and err.value.report.status == "failed"
    assert stats(dev_server.url)["add_requests"] == 0
    counts = err.value.report.counts  # nothing lost: the valid rows are pending for the next run
    assert counts.accounted and counts.pending == 6474 - 8 and counts.delivered == 0


@pytest.fixture
def small(tmp_path, run_config):
    data = tmp_path / "data"
    write_jsonl(data / "a.jsonl", chat_rows(conversations=4, turns=6))
    run_config.load.max_messages_per_request = 3
    return load_mapping(sample_mapping_at(tmp_path, data)), expected_messages([data / "a.jsonl"])[0]


def test_server_errors_are_retried_without_duplicates(dev_server, run_config, small):
    mapping, expected = small
    set_faults(
        dev_server.url,
        script=[
            {"status": 500, "code": 50000},
            {"status": 503, "code": 50002},
            {"status": 429, "code": 40300, "retry_after": 0.05},
        ],
    )
    report = run(mapping, run_config)
    assert report.counts.delivered == 24 and report.counts.retries == 3
    assert stored_messages(dev_server.url) == expected


@pytest.mark.parametrize("stored", [True, False])
def test_no_answer_is_reconciled_before_any_resend(dev_server, run_config, small, stored):
    mapping, expected = small
    run_config.target.timeout_s = 0.5
    set_faults(dev_server.url, script=[{"hang": 2, "store": stored}])
    report = run(mapping, run_config)
    assert report.counts.delivered == 24 and report.counts.in_doubt == 0
    assert stored_messages(dev_server.url) == expected  # no message twice, none missing


def test_in_doubt_is_reported_not_resent_when_the_target_cannot_tell(dev_server, run_config, small):
    mapping, expected = small
    run_config.target.timeout_s = 0.5
    set_faults(dev_server.url, script=[{"hang": 2, "store": True}], get_message_fails=True)
    report = run(mapping, run_config)
    # the hung request landed; the rest of its conversation waits behind it
    assert report.counts.in_doubt == 3 and report.counts.pending == 3 and report.status == "incomplete"
    assert report.counts.accounted and report.counts.delivered == 18
    assert sum(len(v) for v in stored_messages(dev_server.url).values()) == 21
    again = run(mapping, run_config)
    assert again.counts.in_doubt == 3 and again.counts.pending == 3 and again.counts.requests == 0
    assert again.counts.reconciled_unknown == 1
    set_faults(dev_server.url)  # the target can answer again: the next run settles it
    settled = run(mapping, run_config)
    assert settled.counts.reconciled_landed == 1 and settled.counts.delivered == 3
    assert settled.status == "completed"
    assert stored_messages(dev_server.url) == expected


def test_resend_in_doubt_is_an_explicit_choice(dev_server, run_config, small):
    mapping, expected = small
    run_config.target.timeout_s = 0.5
    set_faults(dev_server.url, script=[{"hang": 2, "store": True}], get_message_fails=True)
    run(mapping, run_config)
    forced = run(mapping, run_config, resend_in_doubt=True)
    assert forced.counts.delivered == 6  # the operator accepted a possible duplicate
    stored = stored_messages(dev_server.url)
    dup_conv = [k for k, v in stored.items() if len(v) != len(expected[k])]
    assert len(dup_conv) == 1 and len(stored[dup_conv[0]]) == 9


def test_a_refused_request_is_quarantined_and_the_rest_loads(dev_server, run_config, small):
    mapping, expected = small
    set_faults(dev_server.url, script=[{"status": 400, "code": 40003}])
    report = run(mapping, run_config)
    assert report.counts.quarantined == 3 and report.counts.delivered == 21 and report.counts.accounted
    q = read_quarantine(run_config.state.work_dir)
    assert q.num_rows == 3 and set(q.column("stage").to_pylist()) == {"load"}
    assert "40003" in q.column("reasons").to_pylist()[0][0]
    again = run(mapping, run_config)
    assert again.counts.requests == 0 and again.counts.units_skipped == 1


def test_auth_failure_stops_the_run_and_a_fixed_key_resumes(dev_server, run_config, small, monkeypatch):
    mapping, expected = small
    set_faults(dev_server.url, api_key="right-key")
    monkeypatch.setenv("MEMOS_API_KEY", "wrong-key")
    with pytest.raises(FatalTargetError) as err:
        run(mapping, run_config)
    assert "API key" in str(err.value) and "wrong-key" not in str(err.value)
    assert err.value.report.counts.pending == 24
    monkeypatch.setenv("MEMOS_API_KEY", "right-key")
    report = run(mapping, run_config)
    assert report.counts.delivered == 24
    assert stored_messages(dev_server.url) == expected


def test_rate_limited_server_gets_everything_once(dev_server, run_config, small):
    mapping, expected = small
    set_faults(dev_server.url, rps=5)
    run_config.target.max_attempts = 20
    report = run(mapping, run_config)
    assert report.counts.delivered == 24
    assert stored_messages(dev_server.url) == expected
