"""Write the chat-export samples of schemas/presets/samples/ and what loading each must give.

Each sample is generated from a plain model of its conversations (who said what, when, in
UTC), rendered the way the product writes its export, with the awkward cases real exports
have. Beside it, `<preset>.settings.yaml` (when the preset needs one) holds what a mapping
sets to use the preset on it, and `<preset>.expected.jsonl` lists the messages MemOS must end up holding, one
per line ({user_id, conversation_id, role, content, chat_time}), in conversation order,
computed from the model here, not by the preset: the test compares the two.

    uv run python scripts/make_export_samples.py            # the samples in the repo
    uv run python scripts/make_export_samples.py --claude-messages 1000000 --out /tmp/x   # benchmarks
"""

from __future__ import annotations

import argparse
import io
import json
import random
import shutil
import uuid
import zipfile
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

SAMPLES = Path(__file__).resolve().parent.parent / "schemas" / "presets" / "samples"
T0 = datetime(2024, 3, 30, 23, 15, 7, 219109, tzinfo=UTC)  # the night European clocks go forward


def _id(*parts) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "/".join(map(str, parts))))


def _claude_time(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _utc_seconds(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")  # MemOS gets whole seconds, truncated


#: the parent_message_uuid of a conversation's first messages
CLAUDE_ROOT = "00000000-0000-4000-8000-000000000000"


def claude_export(owner: str = "claude-user", conversations: int | None = None, per: int = 10, seed: int = 7):
    """(conversations.json's items, users.json, the expected messages). With `conversations`
    unset: the hand-made sample with every awkward case; else that many generated ones. The
    expected messages are the path the app shows: from the first message to the newest."""
    expected: list[dict] = []
    convs: list[dict] = []

    def message(
        conv: str, i: int, sender: str, t: datetime, *, text: str, content=None, old=False, parent=None, **extra
    ) -> dict:
        """A message replying to message i - 1 (or to message `parent`: an edited prompt or a
        regenerated answer is a second reply to the same message). An older export's (`old`)
        has no content parts and no parent link."""
        m = {"uuid": _id(conv, i), "text": text, "sender": sender, "created_at": _claude_time(t)}
        m["updated_at"] = m["created_at"]
        if not old:
            m["content"] = content if content is not None else [{"type": "text", "text": text, "citations": []}]
        m["attachments"], m["files"] = extra.get("attachments", []), extra.get("files", [])
        if not old:
            up = parent if parent is not None else i - 1
            m["parent_message_uuid"] = _id(conv, up) if up >= 0 else CLAUDE_ROOT
        return m

    def expect(conv: str, role: str, content: str, t: datetime) -> None:
        expected.append(
            {"user_id": owner, "conversation_id": conv, "role": role, "content": content, "chat_time": _utc_seconds(t)}
        )

    if conversations is None:
        # 1: text, thinking, tool use and its result in one assistant turn; an attachment; emoji and RTL
        c1, t = _id("c", 1), T0
        msgs = [
            message(c1, 0, "human", t, text="Summarise the attached report, please 📄"),
            message(
                c1,
                1,
                "assistant",
                t + timedelta(seconds=41, microseconds=900000),
                text="Here is the summary.\nRevenue rose 4%.",
                content=[
                    {"type": "thinking", "thinking": "The user wants a summary.", "summaries": []},
                    {"type": "text", "text": "Here is the summary.", "citations": []},
                    {"type": "tool_use", "id": "t1", "name": "web_search", "input": {"query": "revenue"}},
                    {"type": "tool_result", "tool_use_id": "t1", "name": "web_search", "content": []},
                    {"type": "text", "text": "Revenue rose 4%.", "citations": []},
                    {"type": "token_budget"},
                ],
            ),
            message(
                c1,
                2,
                "human",
                t + timedelta(minutes=3),
                text="ומה לגבי הרבעון הבא? 🤔",
                attachments=[
                    {
                        "file_name": "forecast.xlsx",
                        "file_size": 9921,
                        "file_type": "xlsx",
                        "extracted_content": "Q3 12.1\nQ4 12.9",
                    }
                ],
                files=[{"file_uuid": _id("f", 1), "file_name": "chart.png"}],
            ),
            # regenerated: a first answer to message 2 the person asked again for (not shown)
            message(c1, 10, "assistant", t + timedelta(minutes=3, seconds=2), text="No idea, sorry.", parent=2),
            # a tool call alone: no text to load (skipped as empty)
            message(
                c1,
                3,
                "assistant",
                t + timedelta(minutes=3, seconds=5),
                text="",
                content=[{"type": "tool_use", "id": "t2", "name": "repl", "input": {"code": "1+1"}}],
            ),
            message(c1, 4, "assistant", t + timedelta(minutes=3, seconds=9), text="Q3 looks flat; Q4 picks up."),
        ]
        expect(c1, "user", "Summarise the attached report, please 📄", t)
        answered = t + timedelta(seconds=41, microseconds=900000)
        expect(c1, "assistant", "Here is the summary.\nRevenue rose 4%.", answered)
        asked = "ומה לגבי הרבעון הבא? 🤔\n[file: forecast.xlsx]\n[file: chart.png]"
        expect(c1, "user", asked, t + timedelta(minutes=3))
        expect(c1, "assistant", "Q3 looks flat; Q4 picks up.", t + timedelta(minutes=3, seconds=9))
        convs.append(
            {
                "uuid": c1,
                "name": "Report summary",
                "summary": "",
                "created_at": _claude_time(t),
                "updated_at": _claude_time(t + timedelta(minutes=4)),
                "account": {"uuid": _id("account")},
                "chat_messages": msgs,
            }
        )
        # 2: an older export's messages (text only, no content, no parent links), no name, a multi-line code answer,
        # an empty human turn, across the DST night (times are UTC: nothing moves)
        c2, t = _id("c", 2), T0 + timedelta(hours=2, minutes=30)
        code = "Try this:\n```python\nfor i in range(3):\n    print(i)\n```"
        msgs = [
            message(c2, 0, "human", t, text="How do I loop three times in Python?", old=True),
            message(c2, 1, "assistant", t + timedelta(seconds=12), text=code, old=True),
            message(c2, 2, "human", t + timedelta(seconds=30), text="", old=True),
            message(c2, 3, "human", t + timedelta(hours=1), text="Thanks!", old=True),
        ]
        expect(c2, "user", "How do I loop three times in Python?", t)
        expect(c2, "assistant", code, t + timedelta(seconds=12))
        expect(c2, "user", "Thanks!", t + timedelta(hours=1))
        convs.append(
            {
                "uuid": c2,
                "name": None,
                "created_at": _claude_time(t),
                "updated_at": _claude_time(t + timedelta(hours=1)),
                "account": _id("account"),
                "chat_messages": msgs,
            }
        )
        # 4: an edited prompt (message 2 asked again as 4: 2 and its answer 3 are not shown) and a
        # regenerated answer (6, the first answer to 4, older than 5: not shown)
        c4, t = _id("c", 4), T0 + timedelta(hours=5)
        msgs = [
            message(c4, 0, "human", t, text="Which train goes from Lyon to Turin?"),
            message(c4, 1, "assistant", t + timedelta(seconds=20), text="The TGV through Chambéry: about 4 hours."),
            message(c4, 2, "human", t + timedelta(minutes=2), text="And by bus?"),
            message(c4, 3, "assistant", t + timedelta(minutes=2, seconds=15), text="A night bus runs it."),
            message(c4, 4, "human", t + timedelta(minutes=5), text="And by car?", parent=1),
            message(c4, 6, "assistant", t + timedelta(minutes=5, seconds=10), text="Around 3.5 hours.", parent=4),
            message(
                c4,
                5,
                "assistant",
                t + timedelta(minutes=5, seconds=40),
                text="About 3 hours, by the Fréjus tunnel.",
                parent=4,
            ),
        ]
        expect(c4, "user", "Which train goes from Lyon to Turin?", t)
        expect(c4, "assistant", "The TGV through Chambéry: about 4 hours.", t + timedelta(seconds=20))
        expect(c4, "user", "And by car?", t + timedelta(minutes=5))
        expect(c4, "assistant", "About 3 hours, by the Fréjus tunnel.", t + timedelta(minutes=5, seconds=40))
        convs.append(
            {
                "uuid": c4,
                "name": "Lyon to Turin",
                "summary": "",
                "created_at": _claude_time(t),
                "updated_at": _claude_time(t + timedelta(minutes=6)),
                "account": {"uuid": _id("account")},
                "chat_messages": msgs,
            }
        )
        # 3: a conversation with no messages at all
        convs.append(
            {
                "uuid": _id("c", 3),
                "name": "Empty",
                "created_at": _claude_time(T0),
                "updated_at": _claude_time(T0),
                "account": {"uuid": _id("account")},
                "chat_messages": [],
            }
        )
    else:
        rng = random.Random(seed)
        words = "the a memory plan trip report code review budget city train hotel idea draft note".split()
        for c in range(conversations):
            cid, t = _id("g", c), T0 + timedelta(minutes=c)
            msgs = []
            for i in range(per):
                sender = "human" if i % 2 == 0 else "assistant"
                text = " ".join(rng.choice(words) for _ in range(rng.randint(5, 30)))
                at = t + timedelta(seconds=7 * i)
                msgs.append(message(cid, i, sender, at, text=text))
                expect(cid, "user" if sender == "human" else "assistant", text, at)
            convs.append(
                {
                    "uuid": cid,
                    "name": f"chat {c}",
                    "created_at": _claude_time(t),
                    "updated_at": _claude_time(t),
                    "account": {"uuid": _id("account")},
                    "chat_messages": msgs,
                }
            )
    users = [{"uuid": _id("account"), "full_name": "Dee Example", "email_address": "dee@example.com"}]
    return convs, users, expected


def write_claude(out: Path, conversations: int | None = None) -> Path:
    convs, users, expected = claude_export(conversations=conversations)
    path = out / "claude-export.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        with z.open("conversations.json", "w") as fh:
            fh.write(json.dumps(convs, ensure_ascii=False, indent=None if conversations else 2).encode())
        z.writestr("users.json", json.dumps(users, indent=2))
        z.writestr("projects.json", "[]")
    _write_expected(out / "claude-export.expected.jsonl", expected)
    return path


CHATGPT_T0 = 1709280000.0  # 2024-03-01 08:00:00 UTC


def chatgpt_export(owner: str = "chatgpt-user") -> tuple[list[dict], dict[str, list[dict]]]:
    """(conversations.json, {mode: the expected messages}) of a ChatGPT export: a regenerated
    answer, an edited prompt, code run by the python tool and a web search (calls addressed
    to a tool, the tools' results), the hidden system prompt and hidden custom instructions.
    Modes: `visible` (the preset as it is), `keep` (nest.tools keep), `all` (nest.branches
    all). Each conversation's paths are written out by hand in the model, not computed."""
    # per conversation: (id, title, create_time, current node, nodes, paths by branch tag); a
    # node is (id, parent, role, seconds after create_time or None, content, what it is), what
    # it is: "" text, "hidden" (flagged), "context" (hidden by its content type), "call:<tool>",
    # "result:<tool>"; a content that is a str is one text part
    image = {"content_type": "image_asset_pointer", "asset_pointer": "file-service://abc"}
    model = [
        (
            "cg-1",
            "Marathon training",
            CHATGPT_T0,
            "n5",
            [
                ("n0", None, "system", None, "", "hidden"),
                ("n1", "n0", "user", 10, "I run 20 km a week. Can I do a marathon in 16 weeks?", ""),
                ("n2", "n1", "assistant", 20, "(regenerated away) Maybe.", ""),
                ("n3", "n1", "assistant", 30, "Yes, if you build up about 10% a week and add one long run.", ""),
                ("n4x", "n3", "user", 60, "Write me a plan.", ""),  # edited into n4
                ("n5x", "n4x", "assistant", 70, "Week 1: three runs of 5 km.", ""),
                ("n4", "n3", "user", 100, {"content_type": "multimodal_text", "parts": ["My plan:", image]}, ""),
                ("n6", "n4", "assistant", 110, {"content_type": "code", "text": "print(20 * 2)"}, "call:python"),
                ("n7", "n6", "tool", 115, {"content_type": "execution_output", "text": "40"}, "result:python"),
                ("n5", "n7", "assistant", None, "Good base. Move the long run to Sunday.", ""),
            ],
            {
                "": ["n0", "n1", "n3", "n4", "n6", "n7", "n5"],
                "~n2": ["n0", "n1", "n2"],
                "~n4x": ["n0", "n1", "n3", "n4x", "n5x"],
            },
        ),
        (
            "cg-2",
            "Tomato sauce",
            CHATGPT_T0 + 90000,
            "m2",
            [
                (
                    "m0",
                    None,
                    "user",
                    None,
                    {
                        "content_type": "user_editable_context",
                        "user_profile": "I cook for two.",
                        "user_instructions": "",
                    },
                    "context",
                ),
                ("m1", "m0", "user", 10, "How long should tomato sauce simmer?", ""),
                (
                    "m1b",
                    "m1",
                    "assistant",
                    15,
                    {"content_type": "code", "text": 'search("simmer time")'},
                    "call:browser",
                ),
                (
                    "m1c",
                    "m1b",
                    "tool",
                    17,
                    {"content_type": "tether_browsing_display", "result": "Simmer 30 minutes to 2 hours."},
                    "result:browser",
                ),
                ("m2", "m1c", "assistant", 20, "At least 30 minutes; 2 hours for a deeper flavour.", ""),
            ],
            {"": ["m0", "m1", "m1b", "m1c", "m2"]},
        ),
    ]
    convs: list[dict] = []
    expected: dict[str, list[dict]] = {"visible": [], "keep": [], "all": []}

    def text(content) -> str:
        if isinstance(content, str):
            return content
        if content["content_type"] == "multimodal_text":
            return content["parts"][0] + "\n[image]"
        return content.get("text") or content["result"]

    for cid, title, t0, current, nodes, paths in model:
        mapping: dict = {"root": {"id": "root", "message": None, "parent": None, "children": []}}
        by_id = {}
        for nid, parent, role, after, content, what in nodes:
            kind, _, tool = what.partition(":")
            msg = {
                "id": nid,
                "author": {"role": role, "name": tool or None, "metadata": {}},
                "create_time": None if after is None else t0 + after,
                "update_time": None,
                "content": content if isinstance(content, dict) else {"content_type": "text", "parts": [content]},
                "status": "finished_successfully",
                "end_turn": None,
                "weight": 1.0,
                "metadata": {"is_visually_hidden_from_conversation": True} if kind == "hidden" else {},
                "recipient": tool if kind == "call" else "all",
                "channel": None,
            }
            up = parent or "root"
            mapping[nid] = {"id": nid, "message": msg, "parent": up, "children": []}
            mapping[up]["children"].append(nid)
            by_id[nid] = (role, after, content, kind)
        convs.append(
            {
                "title": title,
                "create_time": t0,
                "update_time": t0 + 10000,
                "mapping": mapping,
                "moderation_results": [],
                "current_node": current,
                "plugin_ids": None,
                "conversation_id": cid,
                "id": cid,
                "safe_urls": [],
            }
        )
        for tag, path in paths.items():
            for nid in path:
                role, after, content, kind = by_id[nid]
                if kind in ("hidden", "context"):
                    continue  # never loaded
                at = datetime.fromtimestamp(t0 + (after or 0), UTC)  # no time: the conversation's
                row = {"user_id": owner, "conversation_id": cid + tag, "role": role, "content": text(content)}
                row["chat_time"] = _utc_seconds(at)
                if not kind:
                    expected["all"].append(row)
                if not tag:
                    expected["keep"].append({**row, "role": "tool"} if kind else row)
                    if not kind:
                        expected["visible"].append(row)
    return convs, expected


def write_chatgpt(out: Path) -> Path:
    """conversations.json as the export holds it (what loading it gives: chatgpt_export())."""
    convs, _ = chatgpt_export()
    path = out / "chatgpt-export.json"
    path.write_text(json.dumps(convs, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return path


def _each(model: list[tuple], prefix: str, record=lambda conv: conv) -> list[dict]:
    """Expected rows of an `-each` preset: every holder of a conversation (who speaks in it,
    in order of their first row, bots aside) gets all of its shown messages from their side.
    `model`: (conversation, speaker, name, shown text or None, chat_time, makes a holder).
    `record`: the chat a conversation is part of (a forum's topics: whoever speaks anywhere
    in the forum holds every topic of it)."""
    convs: dict[str, list[tuple]] = {}
    for row in model:
        convs.setdefault(record(row[0]), []).append(row)
    out = []
    for rows in convs.values():
        holders = list(dict.fromkeys(r[1] for r in rows if r[5]))
        for side in holders:
            for conv, who, name, shown, at, _ in rows:
                if shown is None:
                    continue
                out.append(
                    {
                        "user_id": f"{prefix}-{side}",
                        "conversation_id": conv,
                        "role": "user" if who == side else "assistant",
                        "content": shown if who == side else f"{name}: {shown}",
                        "chat_time": at,
                    }
                )
    return out


# -- DiscordChatExporter JSON ---------------------------------------------------------------
DISCORD_SELF = "310000000000000001"
SAM_K = "310000000000000002"


def discord_export() -> tuple[dict[str, dict], list[dict]]:
    """({file name: channel export}, expected) from the exporting person's side (`self`): a
    guild channel of 4 people and a bot, with joins, a pin and a thread start (system
    messages: skipped), a reply, an edit, an attachment alone, emoji and RTL text, two people
    both called Sam, an empty message; and a DM. Timestamps carry the exporting machine's
    offset across the DST change (+01:00, then +02:00)."""
    people = {
        DISCORD_SELF: ("dee", "Dee"),
        "310000000000000002": ("sam.k", "Sam"),
        "310000000000000003": ("sam.r", "Sam"),
        "310000000000000004": ("noor", "נור"),
        "310000000000000009": ("helper-bot", "Helper"),
    }
    cet, cest = timezone(timedelta(hours=1)), timezone(timedelta(hours=2))
    expected: list[dict] = []
    model: list[tuple] = []
    user_id = f"discord-{DISCORD_SELF}"

    def author(uid: str) -> dict:
        name, nick = people[uid]
        return {
            "id": uid,
            "name": name,
            "discriminator": "0000",
            "nickname": nick,
            "color": None,
            "isBot": uid.endswith("9"),
            "roles": [],
            "avatarUrl": "https://cdn.discordapp.com/embed/avatars/0.png",
        }

    def channel_file(guild: dict, channel: dict, rows: list[tuple]) -> dict:
        msgs = []
        conv = f"discord-{channel['id']}"
        for i, (uid, kind, text, at, extra) in enumerate(rows):
            m = {
                "id": str(400000000000000000 + int(channel["id"][-3:]) * 1000 + i),
                "type": kind,
                "timestamp": at.isoformat(timespec="milliseconds"),
                "timestampEdited": extra.get("edited"),
                "callEndedTimestamp": None,
                "isPinned": False,
                "content": text,
                "author": author(uid),
                "attachments": extra.get("attachments", []),
                "embeds": [],
                "stickers": [],
                "reactions": [],
                "mentions": [author(x) for x in extra.get("mentions", [])],
            }
            if "reply_to" in extra:
                to = msgs[extra["reply_to"]]["id"]
                m["reference"] = {"type": "Default", "messageId": to, "channelId": channel["id"]}
            msgs.append(m)
            shown = extra.get("expect", text)
            when = _utc_seconds(at.astimezone(UTC))
            empty = not text and not extra.get("attachments")
            model.append((conv, uid, people[uid][1], shown, when, not uid.endswith("9") and not empty))
            if shown is None:
                continue
            role = "user" if uid == DISCORD_SELF else "assistant"
            if role != "user":
                shown = f"{people[uid][1]}: {shown}"
            expected.append(
                {
                    "user_id": user_id,
                    "conversation_id": conv,
                    "role": role,
                    "content": shown,
                    "chat_time": _utc_seconds(at.astimezone(UTC)),
                }
            )
        return {
            "guild": guild,
            "channel": channel,
            "dateRange": {"after": None, "before": None},
            "exportedAt": "2024-04-02T09:00:00.000+02:00",
            "messages": msgs,
            "messageCount": len(msgs),
        }

    guild = {"id": "200000000000000001", "name": "Climbing club", "iconUrl": "https://cdn.discordapp.com/x.png"}
    chan = {"id": "210000000000000101", "type": "GuildTextChat", "categoryId": "1", "category": "Text"}
    chan["name"] = "general"
    t = datetime(2024, 3, 30, 22, 50, 0, tzinfo=cet)
    t30 = t + timedelta(minutes=30)
    photo = {"id": "1", "url": "https://cdn.discordapp.com/a/wall.jpg", "fileName": "wall.jpg", "fileSizeBytes": 48213}
    rows = [
        ("310000000000000004", "GuildMemberJoin", "Joined the server.", t, {"expect": None}),
        ("310000000000000002", "Default", "Anyone up for bouldering on Sunday? 🧗", t + timedelta(minutes=1), {}),
        (DISCORD_SELF, "Reply", "Yes! 10am?", t + timedelta(minutes=2), {"reply_to": 1}),
        ("310000000000000003", "Default", "Count me in.\nBringing the spare shoes.", t + timedelta(minutes=5), {}),
        ("310000000000000004", "Default", "אני מצטרפת 🙂", t + timedelta(minutes=9), {}),
        (
            "310000000000000002",
            "Default",
            "Moved it to 11am",
            t + timedelta(minutes=20),
            {"edited": (t + timedelta(minutes=25)).isoformat(timespec="milliseconds")},
        ),
        (SAM_K, "ChannelPinnedMessage", "Pinned a message.", t + timedelta(minutes=21), {"expect": None}),
        (DISCORD_SELF, "Default", "", t30, {"attachments": [photo], "expect": "[file: wall.jpg]"}),
        ("310000000000000003", "Default", "", t + timedelta(minutes=31), {"expect": None}),  # empty: skipped
        ("310000000000000009", "Default", "Reminder: gym closes at 8pm.", t + timedelta(hours=4), {}),
        ("310000000000000003", "ThreadCreated", "Started a thread.", t + timedelta(hours=5), {"expect": None}),
        # after 02:00 local the clocks went forward: the same machine now writes +02:00
        (DISCORD_SELF, "Default", "See you all there @Sam", datetime(2024, 3, 31, 9, 0, 0, tzinfo=cest), {}),
    ]
    files = {"Climbing club - general [210000000000000101].json": channel_file(guild, chan, rows)}
    dm_guild = {"id": "0", "name": "Direct Messages", "iconUrl": "https://cdn.discordapp.com/embed/avatars/0.png"}
    dm = {"id": "210000000000000202", "type": "DirectTextChat", "categoryId": None, "category": "Private"}
    dm["name"] = "Sam"
    t2 = datetime(2024, 3, 31, 12, 0, 0, tzinfo=cest)
    rows = [
        ("310000000000000002", "Default", "Did you find the shoes?", t2, {}),
        (DISCORD_SELF, "Default", "Yes, in my bag 👍", t2 + timedelta(minutes=3), {}),
    ]
    files["Direct Messages - Sam [210000000000000202].json"] = channel_file(dm_guild, dm, rows)
    return files, expected, _each(model, "discord")


def write_discord(out: Path) -> Path:
    files, expected, each = discord_export()
    folder = _fresh_folder(out / "discord-export")
    for name, body in files.items():
        (folder / name).write_text(json.dumps(body, ensure_ascii=False, indent=2), encoding="utf-8")
    _write_expected(out / "discord-export.expected.jsonl", expected)
    _write_expected(out / "discord-export-each.expected.jsonl", each)
    # what a mapping using the preset on this sample sets: whose side the sample is loaded from
    (out / "discord-export.settings.yaml").write_text(f'constants: {{self: "{DISCORD_SELF}"}}\n')
    return folder


# -- Telegram Desktop result.json ----------------------------------------------------------
TELEGRAM_SELF = "user5000001"


def telegram_export() -> tuple[dict, list[dict]]:
    """(result.json, expected) of a full export, from the exporting person's side: a personal
    chat (entities in the text, a call, an edit, a reply, a photo with a caption, a file, a
    sticker, a forward, a poll, a contact, a location, a venue, a game), a group (joins, a
    photo alone, multi-line and RTL text, an unsupported message), Saved Messages and a forum
    (General and two topics, messages placed by their reply chains). `date` is the exporting machine's wall time
    (Europe/Berlin, across the DST change); `date_unixtime` is the instant."""
    from zoneinfo import ZoneInfo

    berlin = ZoneInfo("Europe/Berlin")
    names = {TELEGRAM_SELF: "Dee", "user5000002": "Bob", "user5000003": "Carol"}
    expected: list[dict] = []
    model: list[tuple] = []
    user_id = f"telegram-{TELEGRAM_SELF}"

    def chat(cid: int, kind: str, name: str | None, rows: list[tuple]) -> dict:
        msgs = []
        for i, (who, at, body, shown) in enumerate(rows):
            body = dict(body)
            conv = f"telegram-{cid}" + (f"-{body.pop('topic')}" if "topic" in body else "")  # a forum topic's
            m = {"id": cid % 1000 * 100 + i, **body}
            if m.get("type") != "unsupported":
                m.setdefault("type", "message")
                m["date"] = at.astimezone(berlin).strftime("%Y-%m-%dT%H:%M:%S")
                m["date_unixtime"] = str(int(at.timestamp()))
                if m["type"] == "message":
                    m["from"], m["from_id"] = names[who], who
                    m.setdefault("text", "")
                    runs = m["text"] if isinstance(m["text"], list) else [m["text"]] if m["text"] else []
                    m["text_entities"] = [r if isinstance(r, dict) else {"type": "plain", "text": r} for r in runs]
                else:
                    m["actor"], m["actor_id"] = names[who], who
                    m.setdefault("text", "")
                    m["text_entities"] = []
            msgs.append(m)
            when = _utc_seconds(at.astimezone(UTC).replace(microsecond=0))
            speaks = m.get("type") == "message" and bool(shown)
            model.append((conv, who, names[who], shown, when, speaks))
            if shown is not None:
                role = "user" if who == TELEGRAM_SELF else "assistant"
                expected.append(
                    {
                        "user_id": user_id,
                        "conversation_id": conv,
                        "role": role,
                        "content": shown if role == "user" else f"{names[who]}: {shown}",
                        "chat_time": _utc_seconds(at.astimezone(UTC).replace(microsecond=0)),
                    }
                )
        out = {"type": kind, "id": cid, "messages": msgs}
        if name is not None:
            out = {"name": name, **out}
        return out

    t = datetime(2024, 3, 31, 0, 40, 0, tzinfo=UTC)  # 01:40 in Berlin; 03:00 comes right after 01:59
    bob, carol = "user5000002", "user5000003"
    personal = [
        (bob, t, {"text": "Are you coming to the lake tomorrow?"}, "Are you coming to the lake tomorrow?"),
        (
            TELEGRAM_SELF,
            t + timedelta(minutes=4),
            {
                "text": [
                    "Yes! Meet at ",
                    {"type": "bold", "text": "9:30"},
                    " by ",
                    {"type": "link", "text": "lake.example"},
                ]
            },
            "Yes! Meet at 9:30 by lake.example",
        ),
        (bob, t + timedelta(minutes=5), {"type": "service", "action": "phone_call", "duration_seconds": 65}, None),
        (
            bob,
            t + timedelta(minutes=50),  # 03:30 Berlin summer time
            {"text": "Bringing sandwiches 🥪", "edited": "2024-03-31T03:31:00", "edited_unixtime": "1711848660"},
            "Bringing sandwiches 🥪",
        ),
        (
            TELEGRAM_SELF,
            t + timedelta(minutes=52),
            {"text": "Great", "reply_to_message_id": 203},
            "Great",
        ),
        (
            bob,
            t + timedelta(hours=1),
            {"photo": "photos/photo_1@31-03-2024_03-40-00.jpg", "width": 1280, "height": 960, "text": "The spot"},
            "The spot\n[photo]",
        ),
        (
            TELEGRAM_SELF,
            t + timedelta(hours=1, minutes=1),
            {"file": "files/map.pdf", "file_name": "map.pdf", "mime_type": "application/pdf", "text": ""},
            "[file: map.pdf]",
        ),
        (
            bob,
            t + timedelta(hours=1, minutes=2),
            {"file": "stickers/s.webp", "media_type": "sticker", "sticker_emoji": "👍", "text": ""},
            "[sticker 👍]",
        ),
        (
            TELEGRAM_SELF,
            t + timedelta(hours=1, minutes=3),
            {"text": "Weather says sunny", "forwarded_from": "Weather Bot"},
            "Weather says sunny\n[forwarded from Weather Bot]",
        ),
        (
            bob,
            t + timedelta(hours=1, minutes=4),
            {
                "poll": {
                    "question": "Lunch where?",
                    "closed": False,
                    "total_voters": 3,
                    "answers": [
                        {"text": "Lake", "voters": 2, "chosen": True},
                        {"text": "Park", "voters": 1, "chosen": False},
                    ],
                },
                "text": "",
            },
            "[poll: Lunch where? (3 votes)]\n- Lake (2 votes)\n- Park (1 vote)",
        ),
        (
            TELEGRAM_SELF,
            t + timedelta(hours=1, minutes=5),
            {
                "contact_information": {"first_name": "Ann", "last_name": "Lee", "phone_number": "+1 555 0100"},
                "text": "",
            },
            "[contact: Ann Lee, +1 555 0100]",
        ),
        (
            bob,
            t + timedelta(hours=1, minutes=6),
            {"location_information": {"latitude": 52.520008, "longitude": 13.404954}, "text": ""},
            "[location: 52.520008, 13.404954]",
        ),
        (
            bob,
            t + timedelta(hours=1, minutes=7),
            {
                "place_name": "Cafe Blue",
                "address": "1 Lake Road",
                "location_information": {"latitude": 52.5, "longitude": 13.4},
                "text": "",
            },
            "[venue: Cafe Blue, 1 Lake Road (52.5, 13.4)]",
        ),
        (
            TELEGRAM_SELF,
            t + timedelta(hours=1, minutes=8),
            {"game_title": "Lumberjack", "game_description": "Chop wood", "text": ""},
            "[game: Lumberjack]",
        ),
    ]
    # a forum: General (no topic) and two topics; a message in a topic replies to its
    # topic_created message (id 7000001 % 1000 * 100 + place: 100, 104), a reply in it to a message of it
    forum = [
        (
            TELEGRAM_SELF,
            t - timedelta(hours=5),
            {"type": "service", "action": "topic_created", "title": "Routes"},
            None,
        ),
        (bob, t - timedelta(hours=5, minutes=-1), {"text": "Hello all"}, "Hello all"),
        (
            carol,
            t - timedelta(hours=4),
            {"text": "New route at the north wall", "reply_to_message_id": 100, "topic": 100},
            "New route at the north wall",
        ),
        (TELEGRAM_SELF, t - timedelta(hours=3), {"text": "Grade?", "reply_to_message_id": 102, "topic": 100}, "Grade?"),
        (bob, t - timedelta(hours=2), {"type": "service", "action": "topic_created", "title": "Gear"}, None),
        (
            bob,
            t - timedelta(hours=2, minutes=-1),
            {"text": "Selling shoes, 42", "reply_to_message_id": 104, "topic": 104},
            "Selling shoes, 42",
        ),
        (TELEGRAM_SELF, t - timedelta(hours=1), {"text": "Hi Bob", "reply_to_message_id": 101}, "Hi Bob"),
    ]
    group = [
        (TELEGRAM_SELF, t - timedelta(days=1), {"type": "service", "action": "create_group", "title": "Family"}, None),
        (
            TELEGRAM_SELF,
            t - timedelta(days=1) + timedelta(seconds=5),
            {"type": "service", "action": "invite_members", "members": ["Bob", "Carol"]},
            None,
        ),
        (
            carol,
            t - timedelta(hours=20),
            {"text": "Shopping list:\n- bread\n- milk"},
            "Shopping list:\n- bread\n- milk",
        ),
        (bob, t - timedelta(hours=19), {"text": "שלום לכולם"}, "שלום לכולם"),
        (carol, t - timedelta(hours=18), {"photo": "photos/photo_2.jpg", "text": ""}, "[photo]"),
        (bob, t - timedelta(hours=17), {"type": "unsupported"}, None),
        (TELEGRAM_SELF, t - timedelta(hours=16), {"text": "   "}, None),  # blank: skipped as empty
        (TELEGRAM_SELF, t - timedelta(hours=15), {"text": "Got the milk"}, "Got the milk"),
    ]
    saved = [(TELEGRAM_SELF, t + timedelta(days=1), {"text": "Passport renewal: June"}, "Passport renewal: June")]
    doc = {
        "about": "Here is the data you requested.",
        "personal_information": {"user_id": 5000001, "first_name": "Dee", "last_name": "", "phone_number": "+00 000"},
        "chats": {
            "about": "This page lists all chats from this export.",
            "list": [
                chat(5000002, "personal_chat", "Bob", personal),
                chat(6000001, "private_group", "Family", group),
                chat(5000001, "saved_messages", None, saved),
                chat(7000001, "private_supergroup", "Climbers", forum),
            ],
        },
        "left_chats": {"about": "", "list": []},
    }
    return doc, expected, _each(model, "telegram", record=lambda conv: conv.split("-")[1])


def telegram_generated(messages: int, per_chat: int = 10_000, seed: int = 7) -> tuple[dict, list[dict]]:
    """A large export of `messages` messages for the benchmarks, in chats of `per_chat`: text
    as a string or as entity runs, photos, replies, a service message now and then (skipped)."""
    rng = random.Random(seed)
    words = "the a lake plan trip photo train hotel idea draft note bread milk sunday".split()
    others = ["user5000002", "user5000003", "user5000004"]
    names = {TELEGRAM_SELF: "Dee", "user5000002": "Bob", "user5000003": "Carol", "user5000004": "Ann"}
    chats, expected = [], []
    t0 = int(T0.timestamp())
    made = c = 0
    while made < messages:
        cid, msgs = 7000000 + c, []
        for i in range(min(per_chat, messages - made)):
            who = TELEGRAM_SELF if i % 2 else rng.choice(others)
            at = t0 + c * 86400 + i * 30
            text = " ".join(rng.choice(words) for _ in range(rng.randint(4, 24)))
            m: dict = {"id": i, "type": "message", "date": "", "date_unixtime": str(at)}
            m["from"], m["from_id"] = names[who], who
            if i % 5 == 0:
                m["text"] = [text, {"type": "bold", "text": " now"}]
                text += " now"
            else:
                m["text"] = text
            m["text_entities"] = [{"type": "plain", "text": text}]
            if i % 20 == 0:
                m["photo"] = f"photos/photo_{i}.jpg"
                text += "\n[photo]"
            if i % 7 == 0 and i:
                m["reply_to_message_id"] = i - 1
            msgs.append(m)
            made += 1
            expected.append(
                {
                    "user_id": f"telegram-{TELEGRAM_SELF}",
                    "conversation_id": f"telegram-{cid}",
                    "role": "user" if who == TELEGRAM_SELF else "assistant",
                    "content": text if who == TELEGRAM_SELF else f"{names[who]}: {text}",
                    "chat_time": at,
                    "key": f"{cid}:{i}",
                }
            )
            if i % 50 == 0:
                msgs.append({"id": -i - 1, "type": "service", "date": "", "date_unixtime": str(at), "text": ""})
        chats.append({"name": f"chat {c}", "type": "private_group", "id": cid, "messages": msgs})
        c += 1
    return {"about": "", "personal_information": {"user_id": 5000001}, "chats": {"list": chats}}, expected


def write_telegram(out: Path) -> Path:
    doc, expected, each = telegram_export()
    folder = _fresh_folder(out / "telegram-export")
    (folder / "result.json").write_text(json.dumps(doc, ensure_ascii=False, indent=1), encoding="utf-8")
    _write_expected(out / "telegram-export.expected.jsonl", expected)
    _write_expected(out / "telegram-export-each.expected.jsonl", each)
    (out / "telegram-export.settings.yaml").write_text(f'constants: {{self: "{TELEGRAM_SELF}"}}\n')
    return folder


# -- WhatsApp "Export chat" text ------------------------------------------------------------
WHATSAPP_SELF = "Dee"


def whatsapp_export() -> tuple[dict[str, bytes], list[dict]]:
    """({file name: bytes}, expected): an Android chat (24-hour,
    day first, no seconds) as a bare .txt and an iOS group (12-hour US, month first, seconds,
    U+202F before PM, U+200E marks) zipped around _chat.txt, both on a phone in Berlin across
    the DST change: multi-line messages, media, an edit, a deletion, joins and the encryption
    notice (skipped), emoji and RTL text, two people with the same first name."""
    from zoneinfo import ZoneInfo

    berlin = ZoneInfo("Europe/Berlin")
    expected: list[dict] = []
    user_id = f"whatsapp-{WHATSAPP_SELF}"

    def android(at: datetime) -> str:
        return at.strftime("%d/%m/%Y, %H:%M")

    def ios(at: datetime) -> str:
        return (
            "[" + at.strftime("%m/%d/%y, %I:%M:%S").lstrip("0") + "\u202fPM]"
            if at.hour >= 12
            else ("[" + at.strftime("%m/%d/%y, %I:%M:%S").lstrip("0") + "\u202fAM]")
        )

    def chat(name: str, rows: list[tuple], head) -> bytes:
        lines = []
        for at, who, text, shown, kind in rows:
            local = at.replace(tzinfo=berlin)
            if head is android:
                prefix = f"{android(local)} - "
                lines.append(prefix + (f"{who}: {text}" if who else text))
            else:
                mark = "\u200e" if kind in ("system", "media") else ""
                lines.append(mark + ios(local) + " " + (f"{who}: {mark}{text}" if who else text))
            if shown is None:
                continue
            secs = local.replace(second=local.second if head is ios else 0)
            expected.append(
                {
                    "user_id": user_id,
                    "conversation_id": f"whatsapp-{name}",
                    "role": "user" if who == WHATSAPP_SELF else "assistant",
                    "content": shown if who == WHATSAPP_SELF else f"{who}: {shown}",
                    "chat_time": _utc_seconds(secs.astimezone(UTC)),
                }
            )
        return ("\n".join(lines) + "\n").encode()

    d = datetime(2024, 3, 30, 23, 50)
    ann = [
        (
            d,
            None,
            "Messages and calls are end-to-end encrypted. No one outside of this chat, not even "
            "WhatsApp, can read or listen to them. Tap to learn more.",
            None,
            "system",
        ),
        (d + timedelta(minutes=1), "Ann", "Still up? 🌙", "Still up? 🌙", "message"),
        (
            d + timedelta(minutes=2),
            WHATSAPP_SELF,
            "Yes!\nWatching the clocks go forward",
            "Yes!\nWatching the clocks go forward",
            "message",
        ),
        # 02:00 -> 03:00 in Berlin: 02:30 local does not exist; the phone writes 03:30
        (datetime(2024, 3, 31, 3, 30), "Ann", "<Media omitted>", "[media omitted]", "media"),
        (datetime(2024, 3, 31, 3, 31), "Ann", "This message was deleted", None, "deleted"),
        (
            datetime(2024, 3, 31, 9, 5),
            WHATSAPP_SELF,
            "Breakfast at 10? <This message was edited>",
            "Breakfast at 10?",
            "message",
        ),
        (datetime(2024, 3, 31, 9, 7), "Ann", "מעולה, נתראה", "מעולה, נתראה", "message"),
    ]
    family = [
        (d - timedelta(days=2), None, "Sam created group “Family”", None, "system"),
        (d - timedelta(days=2) + timedelta(minutes=1), None, "Sam added you", None, "system"),
        (d - timedelta(days=2, hours=-1), "Sam B", "Dinner on Sunday, 7 PM?", "Dinner on Sunday, 7 PM?", "message"),
        (d - timedelta(days=1, hours=10), "Sam K", "I'll bring dessert 🍰", "I'll bring dessert 🍰", "message"),
        (d - timedelta(days=1, hours=9), WHATSAPP_SELF, "image omitted", "[image omitted]", "media"),
        (
            d - timedelta(days=1, hours=8),
            WHATSAPP_SELF,
            "<attached: 00000012-PHOTO-2024-03-29-14-02-11.jpg>",
            "[file: 00000012-PHOTO-2024-03-29-14-02-11.jpg]",
            "media",
        ),
        (d - timedelta(days=1, hours=7), "Sam B", "Great, see you\nat 7", "Great, see you\nat 7", "message"),
    ]
    family = [(at.replace(second=17), *rest) for at, *rest in family]
    files = {
        "WhatsApp Chat with Ann.txt": chat("Ann", ann, android),
    }
    inner = chat("Family", family, ios)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("_chat.txt", inner)
        z.writestr("00000012-PHOTO-2024-03-29-14-02-11.jpg", b"\xff\xd8\xff\xe0 not a real photo")
    files["WhatsApp Chat - Family.zip"] = buf.getvalue()
    return files, expected


def write_whatsapp(out: Path) -> Path:
    files, expected = whatsapp_export()
    folder = _fresh_folder(out / "whatsapp-txt")
    for name, body in files.items():
        (folder / name).write_bytes(body)
    _write_expected(out / "whatsapp-txt.expected.jsonl", expected)
    (out / "whatsapp-txt.settings.yaml").write_text(
        f'constants: {{self: "{WHATSAPP_SELF}"}}\ntime: {{timezone: Europe/Berlin}}\n'
    )
    return folder


# -- Slack workspace export -------------------------------------------------------------------
SLACK_SELF = "U01DEE"


def slack_export() -> tuple[dict[str, object], dict[str, list[dict]]]:
    """({path in the zip: JSON}, {preset: expected}): #general with 4 people and a bot (a
    join and a topic change, skipped; a thread; mentions by id, with a label, of a channel and
    @here; a link; escaped & < >; an edit; a file alone; an integration's bot_message, kept with
    its username; two people both shown as Sam; emoji and RTL text; a member of a partner
    organisation (Slack Connect: not in users.json, named by the user_profile of their
    message) mentioned a day before they speak) over two days, and a DM. Expected twice:
    from Dee's side (`slack-export`) and once per member (`slack-export-each`)."""
    people = {
        SLACK_SELF: {"display_name": "Dee", "real_name": "Dee Example"},
        "U02SAMK": {"display_name": "Sam", "real_name": "Sam Kim"},
        "U03SAMR": {"display_name": "", "real_name": "Sam"},
        "U04NOOR": {"display_name": "נור", "real_name": "Noor"},
    }
    users = [
        {
            "id": uid,
            "name": p["real_name"].lower().replace(" ", "."),
            "real_name": p["real_name"],
            "deleted": False,
            "is_bot": False,
            "profile": {**p, "real_name_normalized": p["real_name"]},
        }
        for uid, p in people.items()
    ]
    users.append(
        {"id": "U09BOT", "name": "gymbot", "is_bot": True, "profile": {"bot_id": "B09", "real_name": "gymbot"}}
    )
    general = {
        "id": "C01GEN",
        "name": "general",
        "created": "1711000000",
        "members": [*people, "U09BOT"],
        "topic": {"value": "", "creator": "", "last_set": 0},
        "purpose": {"value": "", "creator": "", "last_set": 0},
    }
    dm = {"id": "D01DM", "created": 1711000000, "members": [SLACK_SELF, "U02SAMK"]}
    t0 = int(datetime(2024, 3, 30, 21, 50, tzinfo=UTC).timestamp())

    def ts(minutes: float, micro: int = 100) -> str:
        return f"{t0 + int(minutes * 60)}.{micro:06d}"

    parent = ts(1)
    g1 = [  # 2024-03-30
        {
            "type": "message",
            "subtype": "channel_join",
            "user": "U04NOOR",
            "text": "<@U04NOOR> has joined the channel",
            "ts": ts(0),
        },
        {
            "type": "message",
            "user": "U02SAMK",
            "text": "Anyone up for bouldering on Sunday? <!here>",
            "ts": parent,
            "thread_ts": parent,
            "reply_count": 2,
            "reply_users": [SLACK_SELF, "U03SAMR"],
        },
        {
            "type": "message",
            "user": SLACK_SELF,
            "text": "Yes, <@U02SAMK|sam.k>! 10am?",
            "ts": ts(2),
            "thread_ts": parent,
            "parent_user_id": "U02SAMK",
        },
        {
            "type": "message",
            "user": "U03SAMR",
            "text": "Count me in &amp; bringing shoes\n&lt;size 42&gt;",
            "ts": ts(5),
        },
        {
            "type": "message",
            "subtype": "channel_topic",
            "user": "U02SAMK",
            "text": "set the channel topic: climbing",
            "ts": ts(6),
        },
        {
            "type": "message",
            "user": "U04NOOR",
            "text": "אני מצטרפת 🙂 see <#C01GEN|general> and <https://gym.example|the gym>",
            "ts": ts(9),
        },
        {
            "type": "message",
            "user": "U02SAMK",
            "text": "Moved it to 11am",
            "ts": ts(20),
            "edited": {"user": "U02SAMK", "ts": ts(25)},
        },
        {"type": "message", "user": SLACK_SELF, "text": "Welcome <@U07EXT> from the partner gym!", "ts": ts(25)},
        {
            "type": "message",
            "user": SLACK_SELF,
            "text": "",
            "ts": ts(30),
            "files": [{"id": "F1", "name": "wall.jpg", "title": "wall", "mimetype": "image/jpeg"}],
        },
    ]
    g2 = [  # 2024-03-31
        {
            "type": "message",
            "subtype": "bot_message",
            "bot_id": "B09",
            "username": "gymbot",
            "text": "Reminder: gym closes at 8pm.",
            "ts": ts(150),
        },
        {
            "type": "message",
            "user": "U03SAMR",
            "text": "See you there",
            "ts": ts(160),
            "thread_ts": parent,
            "parent_user_id": "U02SAMK",
        },
        {
            "type": "message",
            "user": "U07EXT",
            "text": "Thanks <@U01DEE>, see you at 11",
            "ts": ts(170),
            "team": "T0PARTNER",
            "user_team": "T0PARTNER",
            "user_profile": {"real_name": "Ola Berg", "display_name": "ola", "name": "ola.berg", "team": "T0PARTNER"},
        },
        {"type": "message", "user": SLACK_SELF, "text": "Thanks all", "ts": ts(200)},
    ]
    d1 = [
        {"type": "message", "user": "U02SAMK", "text": "Did you find the shoes?", "ts": ts(300)},
        {"type": "message", "user": SLACK_SELF, "text": "Yes 👍", "ts": ts(303)},
    ]
    shown = {  # what each message must read as, by ts (None: skipped)
        ts(0): None,
        parent: "Anyone up for bouldering on Sunday? @here",
        ts(2): "Yes, @Sam! 10am?",
        ts(5): "Count me in & bringing shoes\n<size 42>",
        ts(6): None,
        ts(9): "אני מצטרפת 🙂 see #general and the gym (https://gym.example)",
        ts(20): "Moved it to 11am",
        ts(25): "Welcome @ola from the partner gym!",
        ts(30): "[file: wall.jpg]",
        ts(150): "Reminder: gym closes at 8pm.",
        ts(160): "See you there",
        ts(170): "Thanks @Dee, see you at 11",
        ts(200): "Thanks all",
        ts(300): "Did you find the shoes?",
        ts(303): "Yes 👍",
    }
    names = {SLACK_SELF: "Dee", "U02SAMK": "Sam", "U03SAMR": "Sam", "U04NOOR": "נור", "B09": "gymbot", "U07EXT": "ola"}
    expected: dict[str, list[dict]] = {"slack-export": [], "slack-export-each": []}
    for chan, msgs, members in (("C01GEN", g1 + g2, list(people)), ("D01DM", d1, dm["members"])):
        for side, preset in ((SLACK_SELF, "slack-export"), *((m, "slack-export-each") for m in members)):
            for msg in sorted(msgs, key=lambda m: float(m["ts"])):
                text = shown[msg["ts"]]
                if text is None:
                    continue
                who = msg.get("user") or msg["bot_id"]
                expected[preset].append(
                    {
                        "user_id": f"slack-{side}",
                        "conversation_id": f"slack-{chan}",
                        "role": "user" if who == side else "assistant",
                        "content": text if who == side else f"{names[who]}: {text}",
                        "chat_time": _utc_seconds(datetime.fromtimestamp(int(msg["ts"].split(".")[0]), UTC)),
                    }
                )
    files: dict[str, object] = {
        "users.json": users,
        "channels.json": [general],
        "groups.json": [],
        "mpims.json": [],
        "dms.json": [dm],
        "integration_logs.json": [],
        "general/2024-03-30.json": g1,
        "general/2024-03-31.json": g2,
        "D01DM/2024-03-31.json": d1,
    }
    return files, expected


def write_slack(out: Path) -> Path:
    files, expected = slack_export()
    path = out / "slack-export.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, body in files.items():
            z.writestr(
                f"Climbing Club Slack export Mar 30 2024 - Mar 31 2024/{name}",
                json.dumps(body, ensure_ascii=False, indent=2),
            )
    for preset, rows in expected.items():
        _write_expected(out / f"{preset}.expected.jsonl", rows)
    (out / "slack-export.settings.yaml").write_text(f'constants: {{self: "{SLACK_SELF}"}}\n')
    return path


def _fresh_folder(folder: Path) -> Path:
    """`folder`, emptied: a sample folder is written whole every time."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def _write_expected(path: Path, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=SAMPLES)
    ap.add_argument("--claude-messages", type=int, default=0, help="a generated Claude export this large instead")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.claude_messages:
        print(write_claude(args.out, conversations=max(1, args.claude_messages // 10)))
        return
    print(write_claude(args.out))
    print(write_chatgpt(args.out))
    print(write_discord(args.out))
    print(write_telegram(args.out))
    print(write_whatsapp(args.out))
    print(write_slack(args.out))


if __name__ == "__main__":
    main()
