"""Chronology in a chat export and in any source (issue 37, items 2 and 3): a pasted
header-shaped line stays text, the repeated hour of a clock change is placed on its second
pass, and `time goes backwards` counts, in the source's order, a message earlier than the one
before it. Through the CLI into the dev-server; expectations written by hand."""

from __future__ import annotations

import json

import yaml
from typer.testing import CliRunner

from memos_etl.cli import app
from tests.test_exports import held, sync

runner = CliRunner()

CHAT = [
    "12/03/2024, 09:58 - Dee: morning",
    "12/03/2024, 10:00 - Ann: look what I found:",
    "07/06/2019, 18:12 - Sam: the old plan",  # pasted: years before the message it is in
    "still the same message",
    "12/03/2024, 10:30 - Dee: ok",
    "12/03/2024, 10:05 - Ann: sent late",  # runs back 25 minutes: a message, out of order
    "12/03/2024, 10:40 - Dee: and",
    "30/12/2031, 23:59 - Sam: a date from the future, pasted",  # jumps ahead of the next header
    "12/03/2024, 10:41 - Ann: done",
]


def test_pasted_headers_are_text_and_time_running_back_is_counted(tmp_path, dev_server):
    chat = tmp_path / "chats" / "WhatsApp Chat with Ann.txt"
    chat.parent.mkdir()
    chat.write_text("\n".join(CHAT) + "\n", encoding="utf-8")
    report = sync(tmp_path, dev_server.url, "whatsapp-txt", chat.parent, {"constants": {"self": "Dee"}})
    c = report["counts"]
    assert c["accounted"] and c["quarantined"] == 0 and c["out_of_order"] == 1, c
    conv = ("whatsapp-Dee", "whatsapp-Ann")
    assert held(dev_server.url) == {
        conv: [
            ("user", "morning", "2024-03-12T09:58:00Z"),
            (
                "assistant",
                "Ann: look what I found:\n07/06/2019, 18:12 - Sam: the old plan\nstill the same message",
                "2024-03-12T10:00:00Z",
            ),
            ("assistant", "Ann: sent late", "2024-03-12T10:05:00Z"),
            ("user", "ok", "2024-03-12T10:30:00Z"),
            ("user", "and\n30/12/2031, 23:59 - Sam: a date from the future, pasted", "2024-03-12T10:40:00Z"),
            ("assistant", "Ann: done", "2024-03-12T10:41:00Z"),
        ]
    }


def test_the_repeated_hour_is_its_second_pass(tmp_path, dev_server):
    """Europe/Berlin went back from 03:00 CEST to 02:00 CET on 27 Oct 2024: 02:50 then 02:05
    is the second pass (00:50Z then 01:05Z), and so is 02:30 after it; 03:10 is CET."""
    lines = [
        "[31/03/2024, 02:30:00] Dee: in the gap of spring",  # a wall time that never happened
        "[27/10/2024, 02:50:00] Dee: first pass",
        "[27/10/2024, 02:05:00] Ann: second pass",
        "[27/10/2024, 02:30:00] Dee: still the second",
        "[27/10/2024, 03:10:00] Ann: after it",
    ]
    chat = tmp_path / "chats" / "WhatsApp Chat with Ann.txt"
    chat.parent.mkdir()
    chat.write_text("\n".join(lines) + "\n", encoding="utf-8")
    settings = {"constants": {"self": "Dee"}, "time": {"timezone": "Europe/Berlin"}}
    report = sync(tmp_path, dev_server.url, "whatsapp-txt", chat.parent, settings)
    c = report["counts"]
    assert c["accounted"] and c["quarantined"] == 0, c
    assert c["out_of_order"] == 0, c  # on their instants, the second pass runs on
    got = held(dev_server.url)[("whatsapp-Dee", "whatsapp-Ann")]
    assert [t for _, _, t in got] == [
        "2024-03-31T01:00:00Z",  # the gap's end (03:00 CEST)
        "2024-10-27T00:50:00Z",
        "2024-10-27T01:05:00Z",
        "2024-10-27T01:30:00Z",
        "2024-10-27T02:10:00Z",
    ]


def test_time_going_backwards_in_a_flat_source_without_seq(tmp_path, dev_server):
    """A JSONL source with no seq is sent in time order; the report still counts the message
    that came earlier than the one before it in the file (it said 0 before)."""
    rows = [
        {"u": "u1", "c": "c1", "r": "user", "t": "hi", "at": "2024-01-01T10:00:00Z"},
        {"u": "u1", "c": "c1", "r": "assistant", "t": "hello", "at": "2024-01-01T10:05:00Z"},
        {"u": "u1", "c": "c2", "r": "user", "t": "other chat", "at": "2024-01-01T09:00:00Z"},
        {"u": "u1", "c": "c1", "r": "user", "t": "earlier?", "at": "2024-01-01T10:01:00Z"},
    ]
    data = tmp_path / "data"
    data.mkdir()
    (data / "m.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    mapping = tmp_path / "flat.yaml"
    mapping.write_text(
        yaml.safe_dump(
            {
                "source": {"name": "flat", "format": "jsonl", "path": str(data)},
                "fields": {"user_id": "u", "conversation_id": "c", "role": "r", "content": "t", "chat_time": "at"},
            }
        )
    )
    cfg = tmp_path / "memos-etl.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "sources": {"flat": str(mapping)},
                "target": {"base_url": dev_server.url},
                "state": {"work_dir": str(tmp_path / "state"), "ledger_url": f"sqlite:///{tmp_path / 'l.db'}"},
            }
        )
    )
    res = runner.invoke(app, ["sync", "flat", "-c", str(cfg), "--no-prefect", "--json"])
    assert res.exit_code == 0, res.output
    c = json.loads(res.stdout[res.stdout.index("{") :])["counts"]
    assert c["delivered"] == 4 and c["out_of_order"] == 1, c


def test_a_date_that_does_not_exist_inside_the_repeated_hour_costs_its_row(tmp_path, dev_server):
    lines = [
        "27/10/2024, 02:50 - Dee: a",
        "27/10/2024, 02:05 - Ann: b",
        "31/02/2024, 02:10 - Ann: no such day",
        "27/10/2024, 02:20 - Dee: d",
    ]
    chat = tmp_path / "chats" / "WhatsApp Chat with Ann.txt"
    chat.parent.mkdir()
    chat.write_text("\n".join(lines) + "\n", encoding="utf-8")
    settings = {"constants": {"self": "Dee"}, "time": {"timezone": "Europe/Berlin"}}
    # one row in four is over the quality gate's default share: raised for this small chat
    c = sync(tmp_path, dev_server.url, "whatsapp-txt", chat.parent, settings, {"max_failed_share": 0.5})["counts"]
    assert c["accounted"] and c["quarantined"] == 1 and c["delivered"] == 3, c
    got = held(dev_server.url)[("whatsapp-Dee", "whatsapp-Ann")]
    assert [t for _, _, t in got] == ["2024-10-27T00:50:00Z", "2024-10-27T01:05:00Z", "2024-10-27T01:20:00Z"]
