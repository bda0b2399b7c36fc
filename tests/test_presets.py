"""Presets and nested sources: each preset on a small sample written here, loaded through the
dev-server over HTTP and compared message by message with what the sample says by hand;
malformed nesting is quarantined with its reason, never a crash, never a silent drop."""

from __future__ import annotations

import csv
import json
from datetime import UTC

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.config import preset_mapping, preset_names
from flows.runner import run
from tasks.quarantine import read_quarantine
from tests.helpers import stored_messages

T0 = 1709280000  # 2024-03-01T08:00:00Z


def iso(epoch: float) -> str:
    from datetime import datetime

    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def load(preset: str, path, cfg, overrides=None):
    report = run(preset_mapping(preset, path, overrides), cfg)
    assert report.status == "completed", report.to_dict()
    return report


def test_every_preset_has_a_sample_and_a_description():
    from core.config import PRESETS

    for name in preset_names():
        text = (PRESETS / f"{name}.yaml").read_text()
        assert text.startswith("# "), name
    assert set(preset_names()) >= {
        "openai-chat",
        "sharegpt",
        "chatgpt-export",
        "dialogue-sessions",
        "dialogue-sessions-one-speaker",
        "table-json-column",
    }


def test_openai_chat_jsonl_with_parts_becomes_text_messages(tmp_path, dev_server, run_config):
    f = tmp_path / "chats.jsonl"
    f.write_text(
        "\n".join(
            json.dumps(r)
            for r in [
                {
                    "id": "c1",
                    "user": "ann",
                    "messages": [
                        {"role": "system", "content": "Be brief."},
                        {
                            "role": "user",
                            "content": [
                                {"type": "text", "text": "What is on this label?"},
                                {"type": "image_url", "image_url": {"url": "http://x.invalid/a.png"}},
                            ],
                        },
                        {"role": "assistant", "content": "Flour, water, salt."},
                        {
                            "role": "user",
                            "content": [
                                {"type": "input_audio", "input_audio": {"data": "..."}},
                                {"type": "file", "file": {"filename": "menu.pdf"}},
                            ],
                        },
                    ],
                },
                {
                    "id": "c2",
                    "user": "bo",
                    "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello, Bo."}],
                },
            ]
        )
        + "\n"
    )
    report = load("openai-chat", f, run_config)
    assert report.counts.delivered == 6 and report.counts.quarantined == 0
    assert stored_messages(dev_server.url) == {
        ("ann", "c1"): [
            ("system", "Be brief.", None),
            ("user", "What is on this label?\n[image]", None),
            ("assistant", "Flour, water, salt.", None),
            ("user", "[audio]\n[file: menu.pdf]", None),
        ],
        ("bo", "c2"): [("user", "hi", None), ("assistant", "Hello, Bo.", None)],
    }
    again = load("openai-chat", f, run_config)
    assert again.counts.requests == 0


def test_sharegpt_roles_and_order(tmp_path, dev_server, run_config):
    f = tmp_path / "share.json"
    f.write_text(
        json.dumps(
            [
                {
                    "id": "s1",
                    "user": "cy",
                    "conversations": [
                        {"from": "human", "value": "Translate 'thank you' to German."},
                        {"from": "gpt", "value": "Danke."},
                        {"from": "human", "value": "And to Dutch?"},
                        {"from": "chatgpt", "value": "Dank je."},
                    ],
                }
            ]
        )
    )
    load("sharegpt", f, run_config)
    assert stored_messages(dev_server.url) == {
        ("cy", "s1"): [
            ("user", "Translate 'thank you' to German.", None),
            ("assistant", "Danke.", None),
            ("user", "And to Dutch?", None),
            ("assistant", "Dank je.", None),
        ]
    }


def _node(i, parent, role=None, parts=None, t=None, ctype="text", hidden=False):
    msg = (
        None
        if role is None
        else {
            "id": i,
            "author": {"role": role},
            "create_time": t,
            "content": {"content_type": ctype, "parts": parts},
            "metadata": {"is_visually_hidden_from_conversation": hidden},
        }
    )
    return {"id": i, "message": msg, "parent": parent, "children": []}


def test_chatgpt_export_follows_the_current_branch(tmp_path, dev_server, run_config):
    f = tmp_path / "conversations.json"
    f.write_text(
        json.dumps(
            [
                {
                    "id": "g1",
                    "create_time": T0,
                    "current_node": "d",
                    "mapping": {
                        "root": _node("root", None),
                        "sys": _node("sys", "root", "system", [""], hidden=True),
                        "a": _node("a", "sys", "user", ["Plan a 3-day trip to Kyoto."], T0 + 10),
                        "old": _node("old", "a", "assistant", ["(edited away)"], T0 + 20),
                        "b": _node(
                            "b", "a", "assistant", ["Day 1: Fushimi Inari. Day 2: Arashiyama. Day 3: Gion."], T0 + 30
                        ),
                        "c": _node(
                            "c",
                            "b",
                            "user",
                            [
                                "Here is my hotel:",
                                {"content_type": "image_asset_pointer", "asset_pointer": "file-service://x"},
                            ],
                            T0 + 40,
                            ctype="multimodal_text",
                        ),
                        "d": _node("d", "c", "assistant", ["It is close to Kyoto station: good for day trips."], None),
                    },
                }
            ]
        )
    )
    report = load("chatgpt-export", f, run_config, {"constants": {"owner": "dee"}})
    assert report.counts.empty_skipped == 0 and report.counts.quarantined == 0
    assert dict(report.counts.skipped) == {"hidden: context": 1}  # the hidden system prompt
    assert stored_messages(dev_server.url) == {
        ("dee", "g1"): [
            ("user", "Plan a 3-day trip to Kyoto.", iso(T0 + 10)),
            ("assistant", "Day 1: Fushimi Inari. Day 2: Arashiyama. Day 3: Gion.", iso(T0 + 30)),
            ("user", "Here is my hotel:\n[image]", iso(T0 + 40)),
            ("assistant", "It is close to Kyoto station: good for day trips.", iso(T0)),
        ]
    }  # no time: the conversation's


DIALOGUE = [
    {
        "sample_id": "x",
        "conversation": {
            "speaker_a": "Ivy",
            "speaker_b": "Jon",
            "session_2_date_time": "10:04 am on 9 June, 2023",
            "session_2": [
                {"speaker": "Jon", "dia_id": "D2:1", "text": "Still climbing?"},
                {"speaker": "Ivy", "dia_id": "D2:2", "text": "Twice a week now."},
            ],
            "session_1_date_time": "1:47 pm on 18 May, 2023",
            "session_1": [
                {
                    "speaker": "Ivy",
                    "dia_id": "D1:1",
                    "text": "I joined a climbing gym.",
                    "blip_caption": "a photo of a bouldering wall",
                },
                {"speaker": "Jon", "dia_id": "D1:2", "text": "Which one?"},
            ],
        },
    }
]


def test_dialogue_sessions_from_both_perspectives(tmp_path, dev_server, run_config):
    f = tmp_path / "dialogue.json"
    f.write_text(json.dumps(DIALOGUE))
    report = load("dialogue-sessions", f, run_config)
    assert report.counts.delivered == 8
    s1, s2 = "2023-05-18T13:47:00Z", "2023-06-09T10:04:00Z"
    one = [("I joined a climbing gym.\n[image: a photo of a bouldering wall]", "Ivy", s1), ("Which one?", "Jon", s1)]
    two = [("Still climbing?", "Jon", s2), ("Twice a week now.", "Ivy", s2)]

    def view(me, turns):
        return [("user" if who == me else "assistant", text, t) for text, who, t in turns]

    assert stored_messages(dev_server.url) == {
        ("x-Ivy", "x-session-1"): view("Ivy", one),
        ("x-Ivy", "x-session-2"): view("Ivy", two),
        ("x-Jon", "x-session-1"): view("Jon", one),
        ("x-Jon", "x-session-2"): view("Jon", two),
    }


def test_dialogue_sessions_from_one_speaker(tmp_path, dev_server, run_config):
    f = tmp_path / "dialogue.json"
    f.write_text(json.dumps(DIALOGUE))
    load("dialogue-sessions-one-speaker", f, run_config)
    got = stored_messages(dev_server.url)
    assert sorted(got) == [("x-Ivy", "x-session-1"), ("x-Ivy", "x-session-2")]
    assert [m[0] for m in got[("x-Ivy", "x-session-2")]] == ["assistant", "user"]


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_table_with_a_json_column(tmp_path, dev_server, run_config, fmt):
    rows = [
        {
            "conversation_id": "t1",
            "user_id": "eve",
            "started_at": "2024-04-02T09:00:00Z",
            "messages": json.dumps(
                [
                    {"role": "user", "content": "Offsite dates?", "ts": "2024-04-02T09:00:05Z"},
                    {"role": "assistant", "content": "14-16 May."},
                ]
            ),
        }
    ]
    f = tmp_path / f"t.{fmt}"
    if fmt == "csv":
        with open(f, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    else:  # a list<struct> column, as Parquet writers store it, instead of JSON text
        rows[0]["messages"] = json.loads(rows[0]["messages"])
        pq.write_table(pa.Table.from_pylist(rows), f)
    load("table-json-column", f, run_config)
    assert stored_messages(dev_server.url) == {
        ("eve", "t1"): [
            ("user", "Offsite dates?", "2024-04-02T09:00:05Z"),
            ("assistant", "14-16 May.", "2024-04-02T09:00:00Z"),
        ]
    }


def test_malformed_nesting_is_quarantined_with_reasons(tmp_path, dev_server, run_config):
    f = tmp_path / "chats.jsonl"
    f.write_text(
        "\n".join(
            [
                json.dumps({"id": "ok", "user": "u", "messages": [{"role": "user", "content": "fine"}]}),
                json.dumps({"id": "text", "user": "u", "messages": "hello"}),
                json.dumps({"id": "none", "user": "u"}),
                "{not json",
                json.dumps([1, 2]),
                json.dumps({"id": "nokey", "user": "u", "messages": [{"role": "user"}]}),
            ]
        )
        + "\n"
    )
    run_config.load.max_failed_share = 1.0
    report = run(preset_mapping("openai-chat", f), run_config)
    c = report.counts
    assert c.read == 6 and c.delivered == 1 and c.quarantined == 5 and c.accounted
    q = read_quarantine(run_config.state.work_dir, "openai-chat", report.run_id).to_pylist()
    reasons = sorted(r for row in q for r in row["reasons"])
    assert any("messages is text but not JSON" in r for r in reasons)
    assert any("messages is missing" in r for r in reasons)
    assert any("not JSON" in r and "Expecting" in r for r in reasons)
    assert any("record is a list, not an object" in r for r in reasons)
    assert any("content is missing" in r for r in reasons)


def test_a_cycle_or_a_missing_node_in_a_tree_is_quarantined(tmp_path, dev_server, run_config):
    good = {
        "id": "g",
        "current_node": "b",
        "mapping": {"a": _node("a", None, "user", ["hi"], T0), "b": _node("b", "a", "assistant", ["hello"], T0 + 1)},
    }
    cycle = {
        "id": "c",
        "current_node": "b",
        "mapping": {"a": _node("a", "b", "user", ["hi"], T0), "b": _node("b", "a", "assistant", ["hello"], T0 + 1)},
    }
    lost = {"id": "l", "current_node": "zz", "mapping": {"a": _node("a", None, "user", ["hi"], T0)}}
    nolist = {"id": "n", "current_node": "a", "mapping": ["a"]}
    f = tmp_path / "conversations.json"
    f.write_text(json.dumps([good, cycle, lost, nolist]))
    run_config.load.max_failed_share = 1.0
    report = run(preset_mapping("chatgpt-export", f), run_config)
    assert report.counts.delivered == 2 and report.counts.quarantined == 3
    q = read_quarantine(run_config.state.work_dir, "chatgpt-export", report.run_id).to_pylist()
    reasons = " | ".join(r for row in q for r in row["reasons"])
    assert "cycle in mapping" in reasons and "not an object of nodes" in reasons
    assert "missing node in mapping: 'zz' (named by current_node)" in reasons


def test_a_mistyped_nested_column_stops_before_anything_is_sent(tmp_path, dev_server, run_config):
    from core.errors import ConfigError

    f = tmp_path / "chats.jsonl"
    f.write_text(json.dumps({"id": "c", "user": "u", "messages": [{"role": "user", "content": "x"}]}) + "\n")
    with pytest.raises(ConfigError, match="msg.text"):
        run(preset_mapping("openai-chat", f, {"fields": {"content": "msg.text"}}), run_config)
    assert stored_messages(dev_server.url) == {}


def test_preview_shows_requests_and_sends_nothing(tmp_path, dev_server):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "memos_etl.cli",
            "preview",
            "--preset",
            "sharegpt",
            "--source",
            str(root / "schemas/presets/samples/sharegpt.json"),
            "--json",
            "-n",
            "5",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
        env={**__import__("os").environ, "MEMOS_ETL__TARGET__BASE_URL": dev_server.url},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout)
    assert got["summary"]["messages"] == 7 and len(got["requests"]) == 2  # one per conversation
    tutor = next(r["body"] for r in got["requests"] if r["body"]["conversation_id"] == "sg-1")
    assert tutor["messages"][1] == {"role": "user", "content": "How do I say 'I would like a coffee' in Italian?"}
    assert stored_messages(dev_server.url) == {}
    assert not (tmp_path / ".memos-etl").exists()
