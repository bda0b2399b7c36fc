"""Conversations stored as trees (an edited prompt, a regenerated answer) and ChatGPT's tool
traffic, through the CLI into the dev-server over HTTP: the path the app shows by default,
each abandoned branch as its own conversation with `nest.branches: all`, tool calls and
results skipped and counted by kind or kept as role tool (`nest.tools: keep`), a tree that
cannot be followed one quarantined conversation with its reason. Expectations are written by
hand here, or (the ChatGPT sample) by scripts/make_export_samples.py from its plain model."""

from __future__ import annotations

import json
import zipfile

import pytest

from core.config import PRESETS
from scripts.make_export_samples import chatgpt_export
from tasks.quarantine import read_quarantine
from tests.test_exports import held, sync

ROOT = "00000000-0000-4000-8000-000000000000"
SAMPLE = PRESETS / "samples" / "chatgpt-export.json"
LENIENT = {"max_failed_share": 1.0}  # the run goes on past the quarantined conversations


def claude_message(uuid: str, parent: str | None, sender: str, minute: int, text: str) -> dict:
    m = {
        "uuid": uuid,
        "text": text,
        "content": [{"type": "text", "text": text}],
        "sender": sender,
        "created_at": f"2024-05-01T10:{minute:02d}:00.000000Z",
        "attachments": [],
        "files": [],
    }
    if parent is not None:
        m["parent_message_uuid"] = parent
    return m


def claude_file(tmp_path, conversations: list[tuple[str, list[dict]]]):
    path = tmp_path / "claude.zip"
    doc = [
        {"uuid": cid, "name": cid, "created_at": "2024-05-01T10:00:00Z", "chat_messages": m} for cid, m in conversations
    ]
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("conversations.json", json.dumps(doc))
    return path


# q1 -> a1 -> q2 (edited away) -> a2; a1 -> q2e (the edit) -> a2x (regenerated away), a2e (the
# newest: the leaf shown). The list is in time order, as the export writes it
EDITED = [
    claude_message("q1", ROOT, "human", 0, "Best time to visit Oslo?"),
    claude_message("a1", "q1", "assistant", 1, "June to August."),
    claude_message("q2", "a1", "human", 2, "Is it cold in May?"),
    claude_message("a2", "q2", "assistant", 3, "Cool, around 12 C."),
    claude_message("q2e", "a1", "human", 4, "Is it rainy in June?"),
    claude_message("a2x", "q2e", "assistant", 5, "Often."),
    claude_message("a2e", "q2e", "assistant", 6, "Some showers; pack a light jacket."),
]
# an older export: no parent links, loaded as listed
OLD = [claude_message("o1", None, "human", 10, "Hi"), claude_message("o2", None, "assistant", 11, "Hello!")]


def at(minute: int) -> str:
    return f"2024-05-01T10:{minute:02d}:00Z"


def test_claude_loads_the_path_shown_to_the_newest_message(tmp_path, dev_server):
    report = sync(tmp_path, dev_server.url, "claude-export", claude_file(tmp_path, [("c1", EDITED), ("c2", OLD)]))
    assert report["counts"]["quarantined"] == 0 and report["counts"]["accounted"]
    assert held(dev_server.url) == {
        ("claude-user", "c1"): [
            ("user", "Best time to visit Oslo?", at(0)),
            ("assistant", "June to August.", at(1)),
            ("user", "Is it rainy in June?", at(4)),
            ("assistant", "Some showers; pack a light jacket.", at(6)),
        ],
        ("claude-user", "c2"): [("user", "Hi", at(10)), ("assistant", "Hello!", at(11))],
    }


def test_claude_branches_all_adds_each_abandoned_branch_named_where_it_forked(tmp_path, dev_server):
    f = claude_file(tmp_path, [("c1", EDITED), ("c2", OLD)])
    report = sync(tmp_path, dev_server.url, "claude-export", f, {"nest": {"branches": "all"}})
    assert report["counts"]["quarantined"] == 0 and report["counts"]["accounted"]
    q1, a1 = ("user", "Best time to visit Oslo?", at(0)), ("assistant", "June to August.", at(1))
    q2e = ("user", "Is it rainy in June?", at(4))
    assert held(dev_server.url) == {
        ("claude-user", "c1"): [q1, a1, q2e, ("assistant", "Some showers; pack a light jacket.", at(6))],
        ("claude-user", "c1~q2"): [
            q1,
            a1,
            ("user", "Is it cold in May?", at(2)),
            ("assistant", "Cool, around 12 C.", at(3)),
        ],
        ("claude-user", "c1~a2x"): [q1, a1, q2e, ("assistant", "Often.", at(5))],
        ("claude-user", "c2"): [("user", "Hi", at(10)), ("assistant", "Hello!", at(11))],
    }
    # the shown path's messages keep their keys: switching branches on later is no new delivery
    again = sync(tmp_path, dev_server.url, "claude-export", f)
    assert again["counts"]["requests"] == 0


def test_claude_edited_first_prompt_is_a_second_root(tmp_path, dev_server):
    msgs = [
        claude_message("p1", ROOT, "human", 0, "Translate 'cat' to French"),
        claude_message("r1", "p1", "assistant", 1, "chat"),
        claude_message("p2", ROOT, "human", 2, "Translate 'dog' to French"),
        claude_message("r2", "p2", "assistant", 3, "chien"),
    ]
    sync(tmp_path, dev_server.url, "claude-export", claude_file(tmp_path, [("c", msgs)]), {"nest": {"branches": "all"}})
    assert held(dev_server.url) == {
        ("claude-user", "c"): [("user", "Translate 'dog' to French", at(2)), ("assistant", "chien", at(3))],
        ("claude-user", "c~p1"): [("user", "Translate 'cat' to French", at(0)), ("assistant", "chat", at(1))],
    }


def grouped(rows: list[dict]) -> dict:
    out: dict = {}
    for r in rows:
        out.setdefault((r["user_id"], r["conversation_id"]), []).append((r["role"], r["content"], r["chat_time"]))
    return out


def test_the_chatgpt_sample_is_what_its_model_writes():
    assert json.loads(SAMPLE.read_text()) == chatgpt_export()[0]


@pytest.mark.parametrize(
    ("mode", "settings", "skipped"),
    [
        ("visible", {}, {"hidden: context": 2, "tool: call": 2, "tool: result": 2}),
        ("keep", {"nest": {"tools": "keep"}}, {"hidden: context": 2}),
        # the hidden system prompt starts every path of cg-1: counted on each of its 3
        ("all", {"nest": {"branches": "all"}}, {"hidden: context": 4, "tool: call": 2, "tool: result": 2}),
    ],
)
def test_chatgpt_sample_branches_and_tool_traffic(mode, settings, skipped, tmp_path, dev_server):
    report = sync(tmp_path, dev_server.url, "chatgpt-export", SAMPLE, settings)
    c = report["counts"]
    assert c["quarantined"] == 0 and c["accounted"] and c["empty_skipped"] == 0, c
    assert c["skipped"] == skipped
    assert held(dev_server.url) == grouped(chatgpt_export()[1][mode])


def test_chatgpt_tool_traffic_by_hand(tmp_path, dev_server):
    """The sample's tool messages, as the test reads them: kept, they are role tool with the
    code the assistant sent and what the tool answered."""
    sync(tmp_path, dev_server.url, "chatgpt-export", SAMPLE, {"nest": {"tools": "keep", "branches": "all"}})
    got = held(dev_server.url)
    assert [(r, t) for r, t, _ in got[("chatgpt-user", "cg-2")]] == [
        ("user", "How long should tomato sauce simmer?"),
        ("tool", 'search("simmer time")'),
        ("tool", "Simmer 30 minutes to 2 hours."),
        ("assistant", "At least 30 minutes; 2 hours for a deeper flavour."),
    ]
    assert [t for _, t, _ in got[("chatgpt-user", "cg-1")]][3:5] == ["print(20 * 2)", "40"]
    assert [t for _, t, _ in got[("chatgpt-user", "cg-1~n2")]] == [
        "I run 20 km a week. Can I do a marathon in 16 weeks?",
        "(regenerated away) Maybe.",
    ]
    assert [t for _, t, _ in got[("chatgpt-user", "cg-1~n4x")]][2:] == [
        "Write me a plan.",
        "Week 1: three runs of 5 km.",
    ]
    assert set(got) == {("chatgpt-user", c) for c in ("cg-1", "cg-1~n2", "cg-1~n4x", "cg-2")}


def node(nid: str, parent: str | None, role: str, text: str) -> dict:
    msg = {"id": nid, "author": {"role": role}, "create_time": 1714557600, "content": {"parts": [text]}}
    return {"id": nid, "message": msg, "parent": parent, "children": []}


@pytest.mark.parametrize("branches", ["visible", "all"])
def test_a_tree_that_cannot_be_followed_costs_its_conversation_with_the_reason(branches, tmp_path, dev_server):
    good = ("ok", [claude_message("g1", ROOT, "human", 0, "fine"), claude_message("g2", "g1", "assistant", 1, "yes")])
    cycle = ("loop", [claude_message("x1", "x2", "human", 0, "a"), claude_message("x2", "x1", "assistant", 1, "b")])
    lost = ("lost", [claude_message("y1", ROOT, "human", 0, "a"), claude_message("y2", "gone", "assistant", 1, "b")])
    f = claude_file(tmp_path, [good, cycle, lost])
    report = sync(tmp_path, dev_server.url, "claude-export", f, {"nest": {"branches": branches}}, LENIENT)
    c = report["counts"]
    assert c["delivered"] == 2 and c["quarantined"] == 2 and c["accounted"], c
    assert set(c["reasons"]) == {"nest: cycle in chat_messages", "nest: missing node in chat_messages"}
    rows = read_quarantine(str(tmp_path / "state"), "claude-export").to_pylist()
    assert sorted(json.loads(r["record"])["uuid"] for r in rows) == ["loop", "lost"]  # each conversation whole
    reasons = " | ".join(r for row in rows for r in row["reasons"])
    assert "'gone' (the parent of 'y2')" in reasons, reasons  # a parent no message of it has
    assert held(dev_server.url) == {("claude-user", "ok"): [("user", "fine", at(0)), ("assistant", "yes", at(1))]}


def test_chatgpt_all_quarantines_a_branch_whose_parent_is_missing(tmp_path, dev_server):
    """The path shown follows parent links up from current_node; all reads the whole tree,
    so a node off that path naming a missing parent costs the conversation there."""
    conv = {
        "id": "t",
        "create_time": 1714557600,
        "current_node": "b",
        "mapping": {
            "a": node("a", None, "user", "hi"),
            "b": node("b", "a", "assistant", "hello"),
            "z": node("z", "nope", "user", "?"),
        },
    }
    f = tmp_path / "conversations.json"
    f.write_text(json.dumps([conv]))
    shown = sync(tmp_path, dev_server.url, "chatgpt-export", f)
    assert shown["counts"]["delivered"] == 2 and shown["counts"]["quarantined"] == 0
    (tmp_path / "all").mkdir()
    every = sync(tmp_path / "all", dev_server.url, "chatgpt-export", f, {"nest": {"branches": "all"}}, LENIENT)
    assert every["counts"]["quarantined"] == 1 and every["counts"]["accounted"]
    rows = read_quarantine(str(tmp_path / "all" / "state"), "chatgpt-export").to_pylist()
    assert rows[0]["reasons"] == ["nest: missing node in mapping: 'nope' (the parent of 'z')"]
