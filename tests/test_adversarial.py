"""An adversarial dataset: every row is delivered or quarantined with the right reason;
duplicates are loaded once and reported; nothing is lost and nothing crashes."""

from __future__ import annotations

import json

from core.config import load_mapping
from flows.runner import run
from tasks.quarantine import read_quarantine
from tests.helpers import sample_mapping_at, stored_messages, write_jsonl

T = "2024-06-01T10:{:02d}:00Z"


def row(i, expect, **kw):
    base = {
        "message_id": f"m{i}",
        "user": "u1",
        "conversation_id": "c1",
        "session": 1,
        "turn": i,
        "speaker": "user" if i % 2 else "assistant",
        "text": f"message {i}",
        "sent_at": T.format(i % 60),
        "image_caption": None,
        "expect": expect,
    }
    return {**base, **kw}


def adversarial():
    rows = [
        row(1, "ok"),
        row(2, "content is missing", text=None),
        row(3, "content is empty", text=""),
        row(4, "content is empty", text=" \t\n"),
        row(5, "role not one of", speaker="narrator"),
        row(6, "role is missing", speaker=None),
        row(7, "user_id longer than 100", user="u" * 101),
        row(8, "conversation_id longer than 100", conversation_id="c" * 101),
        row(9, "conversation_id is missing", conversation_id=None),
        row(10, "too large for one request", text="x" * 30_000),
        row(11, "matches none of time.formats", sent_at="31/12/2024 25:61"),
        row(12, "matches none of time.formats", sent_at="2024-02-30T10:00:00Z"),
        row(13, "ok", text="emoji 🎉👩‍👩‍👧 and RTL שלום עולם مرحبا"),
        row(14, "ok", text="CJK 你好世界 こんにちは 안녕하세요"),
        row(15, "ok", text="zero\u200bwidth\u200djoiner\ufeffbom"),
        row(16, "ok", sent_at=T.format(2)),  # chat_time goes backwards: reported, order by turn kept
        row(17, "ok", text='message 17 mentions "quotes" and \\ backslashes'),
        row(18, "content is missing", text=None, message="the text column was renamed here"),
        row(19, "ok", user="ü" * 100),  # exactly 100 characters: allowed
    ]
    dup = dict(rows[0])  # the same source row twice: loaded once
    dup["expect"] = "duplicate"
    return rows + [dup]


def test_adversarial_rows_each_delivered_or_quarantined_with_reason(dev_server, run_config, tmp_path):
    data = tmp_path / "data"
    rows = adversarial()
    write_jsonl(data / "a.jsonl", rows)
    run_config.load.max_failed_share = 1.0
    report = run(load_mapping(sample_mapping_at(tmp_path, data)), run_config)
    c = report.counts
    assert c.read == len(rows)
    assert c.read == c.delivered + c.quarantined + c.duplicates  # nothing lost
    assert c.duplicates == 1 and c.out_of_order >= 1

    q = {r["source_row"]: r for r in read_quarantine(run_config.state.work_dir).to_pylist()}
    for i, r in enumerate(rows):
        if r["expect"] in ("ok", "duplicate"):
            assert i not in q, (r["expect"], q.get(i))
        else:
            assert i in q, f"row {i} ({r['expect']}) was not quarantined"
            assert any(r["expect"] in reason for reason in q[i]["reasons"]), (r["expect"], q[i]["reasons"])
            assert json.loads(q[i]["record"])["message_id"] == r["message_id"]  # the raw row is kept
    stored = stored_messages(dev_server.url)
    sent = [m[1] for v in stored.values() for m in v]
    assert sorted(sent) == sorted(r["text"] for r in rows if r["expect"] == "ok")  # unicode byte for byte
    assert [m[1] for m in stored[("u1", "c1")]] == [
        r["text"] for r in rows if r["expect"] == "ok" and r["user"] == "u1"
    ]  # in turn order


def test_source_checks_from_config(dev_server, run_config, tmp_path):
    data = tmp_path / "data"
    rows = [
        row(1, "ok"),
        row(2, "ok", speaker="bot"),
        row(3, "ok", text="y" * 50),
        row(4, "ok", sent_at="2019-01-01T00:00:00Z"),
        row(5, "ok", conversation_id="c2", speaker="assistant"),
        row(6, "ok", conversation_id="c2", speaker="assistant"),
    ]
    write_jsonl(data / "a.jsonl", rows)
    run_config.load.max_failed_share = 1.0
    mapping = load_mapping(
        sample_mapping_at(
            tmp_path,
            data,
            checks={
                "allowed_speakers": ["user", "assistant"],
                "max_content_chars": 40,
                "chat_time_min": "2020-01-01T00:00:00Z",
                "conversation_needs_user_message": True,
            },
        )
    )
    report = run(mapping, run_config)
    reasons = {r["source_row"]: " ".join(r["reasons"]) for r in read_quarantine(run_config.state.work_dir).to_pylist()}
    assert "allowed_speakers" in reasons[1] and "max_content_chars" in reasons[2] and "chat_time outside" in reasons[3]
    assert "no user message" in reasons[4] and "no user message" in reasons[5]
    assert report.counts.delivered == 1 and report.counts.read == report.counts.delivered + report.counts.quarantined
