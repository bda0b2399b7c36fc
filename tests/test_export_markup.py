"""Discord raw markup, Telegram's polls and one-chat exports, Slack's integrations and
external members: through the CLI into the dev-server, each message compared with what a
reader of the chat sees, written here by hand (issue 37, items 6 and 7)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.test_exports import held, sync

DEE, SAM = "310000000000000001", "310000000000000002"
GENERAL, GEAR = "400000000000000001", "400000000000000002"
SETTERS = "500000000000000001"
AT = 1711888230  # 2024-03-31 12:30:30 UTC, a Sunday


def _user(uid: str, name: str, nickname: str, roles: list[dict] | None = None) -> dict:
    return {
        "id": uid,
        "name": name,
        "discriminator": "0000",
        "nickname": nickname,
        "isBot": False,
        "roles": roles or [],
    }


def _channel_file(folder: Path, cid: str, name: str, msgs: list[tuple[str, str, str, list[dict]]]) -> None:
    """A DiscordChatExporter JSON file, written as with `--markdown false` (content raw)."""
    authors = {
        DEE: _user(DEE, "dee", "Dee"),
        SAM: _user(SAM, "sam.k", "Sam", [{"id": SETTERS, "name": "Route setters", "color": None, "position": 3}]),
    }
    doc = {
        "guild": {"id": "200000000000000001", "name": "Climbing club", "iconUrl": ""},
        "channel": {"id": cid, "type": "GuildTextChat", "categoryId": "1", "category": "Text", "name": name},
        "dateRange": {"after": None, "before": None},
        "messages": [
            {
                "id": mid,
                "type": "Default",
                "timestamp": f"2024-03-31T1{i}:00:00+00:00",
                "timestampEdited": None,
                "isPinned": False,
                "content": content,
                "author": authors[who],
                "attachments": [],
                "embeds": [],
                "stickers": [],
                "reactions": [],
                "mentions": mentions,
            }
            for i, (mid, who, content, mentions) in enumerate(msgs)
        ],
        "messageCount": len(msgs),
    }
    (folder / f"Climbing club - Text - {name} [{cid}].json").write_text(json.dumps(doc), encoding="utf-8")


def test_discord_raw_markup_reads_as_the_channel_shows_it(tmp_path, dev_server):
    export = tmp_path / "export"
    export.mkdir()
    dee = _user(DEE, "dee", "Dee")
    _channel_file(
        export,
        GENERAL,
        "general",
        [
            (
                "1",
                SAM,
                f"<@!{DEE}> see <#{GEAR}> at <t:{AT}:f> <:chalk:600000000000000001> <a:wave:600000000000000002> "
                f"<@&{SETTERS}> <@{DEE}>",
                [dee],
            ),
            ("2", DEE, f"<t:{AT}:t> | <t:{AT}:T> | <t:{AT}:d> | <t:{AT}:D> | <t:{AT}:F> | <t:{AT}:R> | <t:{AT}>", []),
            # ids the export does not name, and times that are none: as written
            ("3", DEE, "<@999> <@&777> <#888> <t:notanumber> <t:99999999999999999999> <t:1711888230:x>", []),
            ("4", SAM, f"back in <#{GENERAL}>, a < b", []),
        ],
    )
    _channel_file(export, GEAR, "gear", [("5", DEE, "Selling shoes, 42", [])])
    report = sync(tmp_path, dev_server.url, "discord-export", export, {"constants": {"self": DEE}})
    assert report["counts"]["accounted"] and report["counts"]["quarantined"] == 0, report["counts"]
    got = {conv: [(role, text) for role, text, _ in msgs] for (_, conv), msgs in held(dev_server.url).items()}
    assert got == {
        f"discord-{GENERAL}": [
            (
                "assistant",
                "Sam: @Dee see #gear at 31 March 2024 12:30 UTC :chalk: :wave: @Route setters @Dee",
            ),
            (
                "user",
                "12:30 UTC | 12:30:30 UTC | 2024-03-31 | 31 March 2024 | Sunday, 31 March 2024 12:30 UTC"
                " | 31 March 2024 12:30 UTC | 31 March 2024 12:30 UTC",
            ),
            ("user", "<@999> <@&777> <#888> <t:notanumber> <t:99999999999999999999> <t:1711888230:x>"),
            ("assistant", "Sam: back in #general, a < b"),
        ],
        f"discord-{GEAR}": [("user", "Selling shoes, 42")],
    }


TG_SELF = "user5000001"


def _tg(i: int, who: str, **body) -> dict:
    names = {TG_SELF: "Dee", "user5000002": "Bob"}
    m = {"id": i, "type": "message", "date": "2024-03-31T14:00:00", "date_unixtime": str(1711893600 + 60 * i)}
    return {**m, "from": names[who], "from_id": who, "text": "", "text_entities": [], **body}


def test_a_one_chat_telegram_export_needs_no_extra_key(tmp_path, dev_server):
    chat = {
        "name": "Bob",
        "type": "personal_chat",
        "id": 5000002,
        "messages": [
            _tg(1, "user5000002", text="Vote!", poll={"question": "Which crag?", "closed": True, "answers": []}),
            _tg(
                2,
                TG_SELF,
                poll={
                    "question": [{"type": "bold", "text": "Rope"}, " or boulder?"],
                    "total_voters": 1,
                    "answers": [{"text": "Rope", "voters": 1, "chosen": True}, {"text": "Boulder", "voters": 0}],
                },
            ),
            _tg(3, "user5000002", dice={"emoji": "🎲", "value": 4}),
            _tg(
                4, TG_SELF, location_information={"latitude": 46.5, "longitude": 7.25}, live_location_period_seconds=900
            ),
            _tg(5, "user5000002", contact_information={"first_name": "", "last_name": "", "phone_number": "+1 555"}),
        ],
    }
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "result.json").write_text(json.dumps(chat, ensure_ascii=False), encoding="utf-8")
    report = sync(tmp_path, dev_server.url, "telegram-export", folder, {"constants": {"self": TG_SELF}})
    assert report["counts"]["accounted"] and report["counts"]["quarantined"] == 0, report["counts"]
    got = [(role, text) for role, text, _ in held(dev_server.url)[(f"telegram-{TG_SELF}", "telegram-5000002")]]
    assert got == [
        ("assistant", "Bob: Vote!\n[closed poll: Which crag?]"),
        ("user", "[poll: Rope or boulder? (1 vote)]\n- Rope (1 vote)\n- Boulder (0 votes)"),
        ("assistant", "Bob: [dice 🎲 4]"),
        ("user", "[location (live): 46.5, 7.25]"),
        ("assistant", "Bob: [contact: +1 555]"),
    ]


def test_a_telegram_file_that_is_empty_or_not_json_costs_one_line_at_most(tmp_path, dev_server):
    empty, broken = tmp_path / "empty", tmp_path / "broken"
    empty.mkdir()
    broken.mkdir()
    (empty / "result.json").write_text("")
    (broken / "result.json").write_text('{"name": "Bob", "type": "personal_chat", "id": 1, "messages": [')
    settings = {"constants": {"self": TG_SELF}}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    report = sync(tmp_path / "a", dev_server.url, "telegram-export", empty, settings)
    assert report["counts"]["read"] == 0 and report["counts"]["accounted"], report["counts"]
    # the one row it is: quarantined with its reason (let through the share check that would
    # stop a run whose every row is bad)
    report = sync(tmp_path / "b", dev_server.url, "telegram-export", broken, settings, load={"max_failed_share": 1.0})
    c = report["counts"]
    assert c["read"] == 1 and c["quarantined"] == 1 and c["accounted"], c
    assert list(c["reasons"]) == ["unreadable record (the document breaks off)"], c
    assert held(dev_server.url) == {}
