"""Re-drive: fix the mapping, load the quarantined rows that now pass, exactly once."""

from __future__ import annotations

from typer.testing import CliRunner

from core.config import load_mapping
from flows.runner import redrive, run
from memos_etl.cli import app
from tasks.quarantine import read_quarantine
from tests.conftest import SAMPLE_MAPPING
from tests.helpers import chat_rows, sample_mapping_at, stats, stored_messages, write_jsonl


def test_fixed_mapping_redrives_quarantined_rows_once(dev_server, run_config, tmp_path):
    data = tmp_path / "data"
    rows = chat_rows(conversations=3, turns=6)
    for r in rows[::4]:
        r["speaker"] = "narrator"  # unknown to the mapping at first
    write_jsonl(data / "a.jsonl", rows)
    run_config.load.max_failed_share = 0.5
    first = run(load_mapping(sample_mapping_at(tmp_path, data)), run_config)
    assert first.counts.quarantined == 5 and first.counts.delivered == 13

    fixed = load_mapping(sample_mapping_at(tmp_path, data, roles={"map": {"narrator": "system"}}))  # the fix
    again = redrive(fixed, run_config)
    assert again.counts.read == 5 and again.counts.delivered == 5 and again.counts.quarantined == 0
    assert any("5 of 5" in n for n in again.notes)
    stored = stored_messages(dev_server.url)
    assert sum(len(v) for v in stored.values()) == 18
    # the re-driven messages are appended to their conversations as late messages (MemOS only appends)
    assert sorted(m for v in stored.values() for m in v) == sorted(
        (("system" if r["speaker"] == "narrator" else r["speaker"]), r["text"], r["sent_at"].replace("+00:00", "Z"))
        for r in rows
    )
    requests = stats(dev_server.url)["add_requests"]
    assert redrive(fixed, run_config).counts.read == 0  # resolved rows are not read again
    assert stats(dev_server.url)["add_requests"] == requests


def test_quarantine_cli_show_and_export(dev_server, run_config, tmp_path):
    run_config.load.max_failed_share = 0.5
    run(load_mapping(SAMPLE_MAPPING), run_config)
    runner = CliRunner()
    wd = ["--work-dir", run_config.state.work_dir]
    q = read_quarantine(run_config.state.work_dir).to_pylist()
    res = runner.invoke(app, ["quarantine", "show", q[0]["source_file"], str(q[0]["source_row"]), *wd])
    assert res.exit_code == 0 and q[0]["reasons"][0] in res.output and '"record"' in res.output
    for suffix in (".parquet", ".csv", ".jsonl"):
        out = tmp_path / f"q{suffix}"
        res = runner.invoke(app, ["quarantine", "export", str(out), *wd])
        assert res.exit_code == 0 and "8 rows" in res.output and out.stat().st_size > 0


def test_nested_source_redrives_each_message_not_the_record_again(dev_server, run_config, tmp_path):
    """A nested record's messages share its source_row: re-drive tells them apart by position,
    loads the re-driven messages without exploding them a second time, and says which
    quarantined rows (the record's shape: stage nest) it cannot take."""
    from core.config import preset_mapping

    path = tmp_path / "chats.jsonl"
    write_jsonl(
        path,
        [
            {
                "id": "c1",
                "user": "amy",
                "messages": [
                    {"role": "user", "content": "hello"},
                    {"role": "narrator", "content": "the sun sets"},
                    {"role": "assistant", "content": "hi amy"},
                    {"role": "narrator", "content": "night falls"},
                ],
            },
            {
                "id": "c2",
                "user": "bo",
                "messages": [
                    {"role": "user", "content": "one"},
                    {"role": "narrator", "content": "a pause"},
                    {"role": "assistant", "content": "two"},
                ],
            },
            {"id": "c3", "user": "bo", "messages": "[not json"},
        ],
    )
    run_config.load.max_failed_share = 0.6
    first = run(preset_mapping("openai-chat", path), run_config)
    assert first.counts.quarantined == 4 and first.counts.delivered == 4

    fixed = preset_mapping("openai-chat", path, {"roles": {"map": {"narrator": "system"}}})
    again = redrive(fixed, run_config)
    assert again.status == "completed"
    assert again.counts.read == 3 and again.counts.delivered == 3 and again.counts.quarantined == 0
    assert any("3 of 3" in n for n in again.notes)
    assert any("1 rows quarantined at stage 'nest'" in n for n in again.notes)
    stored = stored_messages(dev_server.url)
    assert sorted(c for v in stored.values() for _, c, _ in v) == sorted(
        ["hello", "the sun sets", "hi amy", "night falls", "one", "a pause", "two"]
    )
    assert [r for r, c, _ in stored[("amy", "c1")] if c in ("the sun sets", "night falls")] == ["system", "system"]

    requests = stats(dev_server.url)["add_requests"]
    assert redrive(fixed, run_config).counts.read == 0  # every re-driven message resolved, none twice
    assert stats(dev_server.url)["add_requests"] == requests
