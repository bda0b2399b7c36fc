"""The chat exports people download, as downloaded: each preset's sample in
schemas/presets/samples/ (written by scripts/make_export_samples.py from a plain model of its
conversations) synced through the CLI into the dev-server over HTTP, and compared message for
message with `<preset>.expected.jsonl`, which that script computed from the model, not from the
preset. Skipped lines are counted by kind; read = outcomes holds."""

from __future__ import annotations

import json
import zipfile
from collections import defaultdict
from pathlib import Path

import pytest
import requests
import yaml
from typer.testing import CliRunner

from core.config import PRESETS
from memos_etl.cli import app
from tests.helpers import sample_settings

runner = CliRunner()
SAMPLES = PRESETS / "samples"

# preset -> (its sample, what the report must count besides the messages)
EXPORTS = {
    "claude-export": ("claude-export.zip", {"empty_skipped": 2, "skipped": {}}),
    "discord-export": (
        "discord-export",
        {
            "empty_skipped": 1,
            "skipped": {"type: GuildMemberJoin": 1, "type: ChannelPinnedMessage": 1, "type: ThreadCreated": 1},
        },
    ),
    "telegram-export": (
        "telegram-export",
        {"empty_skipped": 1, "skipped": {"type: service": 5, "type: unsupported": 1}},
    ),
    "whatsapp-txt": ("whatsapp-txt", {"empty_skipped": 0, "skipped": {"kind: system": 3, "kind: deleted": 1}}),
    "discord-export-each": (
        "discord-export",
        {
            "empty_skipped": 1,
            "skipped": {"type: GuildMemberJoin": 4, "type: ChannelPinnedMessage": 4, "type: ThreadCreated": 4},
        },
    ),
    "telegram-export-each": (
        "telegram-export",
        # copies: 2 + 6 + 6 (the forum's 3 holders) holders
        {"empty_skipped": 1, "skipped": {"type: service": 14, "type: unsupported": 3}},
    ),
    "slack-export": (
        "slack-export.zip",
        {
            "empty_skipped": 0,
            "skipped": {"subtype: channel_join": 1, "subtype: channel_topic": 1},
        },
    ),
    # every member's copy of a skipped line is counted: 4 members of #general
    "slack-export-each": (
        "slack-export.zip",
        {
            "empty_skipped": 0,
            "skipped": {"subtype: channel_join": 4, "subtype: channel_topic": 4},
        },
    ),
}


def expected(preset: str) -> dict:
    convs: dict = defaultdict(list)
    with open(SAMPLES / f"{preset}.expected.jsonl", encoding="utf-8") as fh:
        for line in fh:
            m = json.loads(line)
            convs[(m["user_id"], m["conversation_id"])].append((m["role"], m["content"], m["chat_time"]))
    return dict(convs)


def held(url: str) -> dict:
    convs: dict = defaultdict(list)
    for m in requests.get(url + "/_dev/messages", timeout=30).json():
        convs[(m["user_id"], m["conversation_id"])].append((m["role"], m["content"], m["chat_time"]))
    return dict(convs)


def sync(
    tmp_path: Path, url: str, preset: str, path: Path | None, extra: dict | None = None, load: dict | None = None
) -> dict:
    """`memos-etl sync` of a mapping that is `preset`, its source's `path` (None: a source with no
    path) and `extra` (its `source` merged into the mapping's source), into the server at `url`."""
    mapping = tmp_path / f"{preset}.yaml"
    extra = dict(extra or {})
    where = {"path": str(path)} if path is not None else {}
    body = {"preset": preset, "source": {"name": preset, **where, **extra.pop("source", {})}, **extra}
    mapping.write_text(yaml.safe_dump(body))
    cfg = tmp_path / "memos-etl.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "sources": {preset: str(mapping)},
                "target": {"base_url": url, "backoff_base_s": 0.01, "backoff_cap_s": 0.05},
                **({"load": load} if load else {}),
                "state": {"work_dir": str(tmp_path / "state"), "ledger_url": f"sqlite:///{tmp_path / 'ledger.db'}"},
            }
        )
    )
    res = runner.invoke(app, ["sync", preset, "-c", str(cfg), "--no-prefect", "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout[res.stdout.index("{") :])


def sync_sql(
    tmp_path: Path, url: str, preset: str, db_url: str, extra: dict | None = None, load: dict | None = None
) -> dict:
    """`sync` of a mapping that is `preset` and the database's URL (`extra`'s `sql` merged into
    source.sql, the rest into the mapping)."""
    extra = dict(extra or {})
    source = {"sql": {"url": db_url, **extra.pop("sql", {})}}
    return sync(tmp_path, url, preset, None, {"source": source, **extra}, load)


@pytest.mark.parametrize("preset", sorted(EXPORTS))
def test_an_export_as_downloaded_loads_as_its_model_says(preset, tmp_path, dev_server):
    (sample, counted), settings = EXPORTS[preset], sample_settings(preset)
    report = sync(tmp_path, dev_server.url, preset, SAMPLES / sample, settings)
    c = report["counts"]
    assert c["accounted"] and c["quarantined"] == 0, c
    assert c["empty_skipped"] == counted["empty_skipped"] and c["skipped"] == counted["skipped"], c
    want = expected(preset)
    assert c["delivered"] == sum(len(v) for v in want.values())
    assert held(dev_server.url) == want
    again = sync(tmp_path, dev_server.url, preset, SAMPLES / sample, settings)  # nothing twice
    assert again["counts"]["requests"] == 0 and held(dev_server.url) == want


@pytest.mark.parametrize("preset", sorted(EXPORTS))
def test_the_export_repacked_loads_the_same(preset, tmp_path, dev_server):
    """A zip unzipped, a folder zipped: the same messages either way."""
    sample, settings = EXPORTS[preset][0], sample_settings(preset)
    src = SAMPLES / sample
    if src.suffix == ".zip":
        repacked = tmp_path / "unzipped"
        with zipfile.ZipFile(src) as z:
            z.extractall(repacked)
    else:  # a folder of files: each archive unzipped into a folder of its name, each file zipped alone
        repacked = tmp_path / "repacked"
        repacked.mkdir()
        for f in sorted(p for p in src.rglob("*") if p.is_file()):
            if f.suffix == ".zip":
                with zipfile.ZipFile(f) as z:
                    z.extractall(repacked / f.stem)
            else:
                with zipfile.ZipFile(repacked / f"{f.name}.zip", "w", zipfile.ZIP_DEFLATED) as z:
                    z.write(f, f.name)
    report = sync(tmp_path, dev_server.url, preset, repacked, settings)
    assert report["counts"]["accounted"] and held(dev_server.url) == expected(preset)


def test_a_single_chat_telegram_export_loads_with_records_off(tmp_path, dev_server):
    """Telegram's single-chat export is the chat object itself, with no chats list."""
    doc = json.loads((SAMPLES / "telegram-export" / "result.json").read_text(encoding="utf-8"))
    one = doc["chats"]["list"][0]
    folder = tmp_path / "ChatExport_2024-04-01"
    folder.mkdir()
    (folder / "result.json").write_text(json.dumps(one, ensure_ascii=False), encoding="utf-8")
    settings = {**(sample_settings("telegram-export") or {}), "source": {"records": None}}
    report = sync(tmp_path, dev_server.url, "telegram-export", folder, settings)
    conv = f"telegram-{one['id']}"
    want = {k: v for k, v in expected("telegram-export").items() if k[1] == conv}
    assert report["counts"]["accounted"] and held(dev_server.url) == want


def test_a_group_chat_preset_without_its_side_stops_before_reading(tmp_path, dev_server):
    mapping = tmp_path / "d.yaml"
    mapping.write_text(yaml.safe_dump({"preset": "discord-export", "source": {"name": "d", "path": str(tmp_path)}}))
    res = runner.invoke(app, ["preview", str(mapping)])
    assert res.exit_code == 1 and "set constants.self" in res.output and "Traceback" not in res.output


SAMPLE_PRESETS = {
    "chatgpt-export.json": "chatgpt-export",
    "claude-export.zip": "claude-export",
    "dialogue-sessions.json": "dialogue-sessions",
    "discord-export": "discord-export",
    "openai-chat.jsonl": "openai-chat",
    "sharegpt.json": "sharegpt",
    "table-json-column.csv": "table-json-column",
    "telegram-export": "telegram-export",
    "whatsapp-txt": "whatsapp-txt",
    "slack-export.zip": "slack-export",
}


def _repacked(src: Path, tmp_path: Path) -> Path:
    """A folder zipped, a zip unzipped, a file zipped: as people pass exports around."""
    if src.suffix == ".zip":
        out = tmp_path / f"{src.stem}-unzipped"
        with zipfile.ZipFile(src) as z:
            z.extractall(out)
        return out
    out = tmp_path / f"{src.stem}-packed.zip"
    with zipfile.ZipFile(out, "w") as z:
        for f in sorted(src.rglob("*")) if src.is_dir() else [src]:
            if f.is_file():
                z.write(f, f"export/{f.relative_to(src) if src.is_dir() else f.name}")
    return out


@pytest.mark.parametrize("sample", sorted(SAMPLE_PRESETS))
def test_detect_names_the_preset_of_every_sample_as_is_and_repacked(sample, tmp_path):
    for path in (SAMPLES / sample, _repacked(SAMPLES / sample, tmp_path)):
        res = runner.invoke(app, ["detect", str(path)])
        assert res.exit_code == 0, res.output
        found = [line.split(":", 1)[0] for line in res.stdout.splitlines() if not line.startswith(" ")]
        assert found == [SAMPLE_PRESETS[sample]], (path, res.output)
        assert f"preset: {SAMPLE_PRESETS[sample]}" in res.stdout and f"path: {path.resolve()}" in res.stdout


def test_detect_names_a_bare_whatsapp_text_what_has_no_preset_and_what_it_looked_for(tmp_path):
    wa = tmp_path / "WhatsApp Chat with Ann.txt"
    wa.write_text("31/12/2023, 21:41 - Ann: happy new year\n31/12/2023, 21:42 - Bo: you too\n")
    slack = tmp_path / "slack.zip"
    with zipfile.ZipFile(slack, "w") as z:
        z.writestr("users.json", "[]")
        z.writestr("channels.json", "[]")
        z.writestr("general/2024-01-02.json", '[{"type": "message", "ts": "1.0", "text": "hi"}]')
    res = runner.invoke(app, ["detect", str(wa)])
    assert res.exit_code == 0 and res.stdout.startswith("whatsapp-txt: a WhatsApp chat export"), res.output
    res = runner.invoke(app, ["detect", str(slack)])
    assert res.exit_code == 0 and res.stdout.startswith("slack-export: a Slack workspace export (1 day files"), (
        res.output
    )
    odd = tmp_path / "notes.json"
    odd.write_text('{"title": "groceries", "items": ["milk"]}')
    res = runner.invoke(app, ["detect", str(odd)])
    assert res.exit_code == 2 and "no preset reads" in res.stderr and "chat_messages" in res.stderr
    assert "Traceback" not in res.output


def test_preset_auto_chooses_at_load_time_and_the_report_says_so(tmp_path, dev_server):
    report = sync(tmp_path, dev_server.url, "auto", SAMPLES / "telegram-export")  # self read from the export
    assert report["counts"]["accounted"] and held(dev_server.url) == expected("telegram-export")
    assert any("preset auto chose telegram-export" in n for n in report["notes"]), report["notes"]


def test_whatsapp_text_with_bad_lines_costs_those_lines_with_their_numbers(tmp_path):
    """Text before the first header, a line that is not UTF-8, a line over the record limit,
    an impossible date: each one quarantined row naming its line; the rest are messages."""
    from core.config import preset_mapping
    from tasks.extract import Slice, open_source

    f = tmp_path / "WhatsApp Chat with Ann.txt"
    f.write_bytes(
        b"exported by a tool that wrote this first\n"
        b"31/12/2023, 21:41 - Ann: hi\nsecond line\n"
        + "31/12/2023, 21:43 - Ann: caf\xe9\n".encode("latin-1")
        + b"31/12/2023, 21:44 - Dee: "
        + b"x" * (2 << 20)
        + b"\n"
        + b"13/13/2023, 21:45 - Ann: impossible\n"
        + b"1/1/2024, 09:00 - Dee: happy new year\n"
    )
    m = preset_mapping("whatsapp-txt", f, {"constants": {"self": "Dee"}, "source": {"max_record_bytes": 1 << 20}})
    source = open_source(m)
    bad: list = []
    rows = [r for unit in source.units(Slice()) for _, rb in source.iter_batches(unit, bad) for r in rb.to_pylist()]
    assert [(b.where, b.reason.kind) for b in bad] == [
        ("line 1", "no header"),
        ("line 4", "not UTF-8"),
        ("line 5", "too long"),
    ]
    assert [(r["line"], r["sender"], r["text"], r["time"]) for r in rows] == [
        (2, "Ann", "hi\nsecond line", "2023-12-31T21:41:00"),
        (6, "Ann", "impossible", "2023-13-13T21:45:00"),  # day first (13 > 12): validation quarantines it
        (7, "Dee", "happy new year", "2024-01-01T09:00:00"),
    ]


def test_each_member_of_a_slack_channel_of_four_holds_it_once(tmp_path, dev_server):
    report = sync(tmp_path, dev_server.url, "slack-export-each", SAMPLES / "slack-export.zip")
    got = held(dev_server.url)
    general = {user: msgs for (user, conv), msgs in got.items() if conv == "slack-C01GEN"}
    assert sorted(general) == ["slack-U01DEE", "slack-U02SAMK", "slack-U03SAMR", "slack-U04NOOR"]
    assert {len(m) for m in general.values()} == {11}  # the channel once each (the bot's post too), no bot among them
    own = [role for role, text, _ in general["slack-U03SAMR"] if role == "user"]
    assert len(own) == 2 and report["counts"]["accounted"]


def test_slack_threads_as_their_own_conversations(tmp_path, dev_server):
    settings = {**(sample_settings("slack-export") or {}), "source": {"slack_threads": "own"}}
    sync(tmp_path, dev_server.url, "slack-export", SAMPLES / "slack-export.zip", settings)
    convs = sorted(conv for _, conv in held(dev_server.url))
    thread = [c for c in convs if "/" in c]
    assert len(thread) == 1 and thread[0].startswith("slack-C01GEN/")
    assert [t for _, t, _ in held(dev_server.url)[("slack-U01DEE", thread[0])]] == [
        "Sam: Anyone up for bouldering on Sunday? @here",
        "Yes, @Sam! 10am?",
        "Sam: See you there",
    ]


def test_slack_day_files_that_are_not_days_cost_themselves_only(tmp_path):
    """A day cut off, a day that is an object, an entry that is not a message or has no ts:
    one BadRow each, the rest of the export loads; an unknown mention stays its id."""
    from core.config import preset_mapping
    from tasks.extract import Slice, open_source

    root = tmp_path / "export"
    (root / "general").mkdir(parents=True)
    (root / "users.json").write_text(json.dumps([{"id": "U1", "name": "ann", "profile": {"display_name": "Ann"}}]))
    (root / "channels.json").write_text(json.dumps([{"id": "C1", "name": "general", "members": ["U1"]}]))
    day = [
        {"type": "message", "user": "U1", "text": "hi <@U999> and <@U1>", "ts": "1704100000.000100"},
        "not a message",
        {"type": "message", "user": "U1", "text": "no ts"},
    ]
    (root / "general" / "2024-01-01.json").write_text(json.dumps(day))
    (root / "general" / "2024-01-02.json").write_text('[{"type": "message", "text": "cut off')
    (root / "general" / "2024-01-03.json").write_text('{"not": "a day"}')
    (root / "general" / "2024-01-04.json").write_text("")
    source = open_source(preset_mapping("slack-export", root, {"constants": {"self": "U1"}}))
    bad: list = []
    rows = [r for u in source.units(Slice()) for _, rb in source.iter_batches(u, bad) for r in rb.to_pylist()]
    assert [r["text"] for r in rows] == ["hi @U999 and @Ann"]
    assert sorted(b.reason.kind for b in bad) == ["not JSON", "not a day of messages", "not a message", "not a message"]


def _only(want: dict, users: set[str]) -> dict:
    return {k: v for k, v in want.items() if k[0] in users}


@pytest.mark.parametrize(
    ("preset", "perspective", "as_preset"),
    [
        ("slack-export", "each", "slack-export-each"),
        ("discord-export", "each", "discord-export-each"),
        ("telegram-export", "each", "telegram-export-each"),
        ("discord-export-each", "self", "discord-export"),
    ],
)
def test_one_perspective_key_picks_the_side(preset, perspective, as_preset, tmp_path, dev_server):
    """`perspective: self | each` on a group-chat preset loads what its side's preset loads."""
    sample = EXPORTS[as_preset][0]
    settings = {**(sample_settings(preset.removesuffix("-each")) or {}), "perspective": perspective}
    report = sync(tmp_path, dev_server.url, preset, SAMPLES / sample, settings)
    assert report["counts"]["accounted"]
    assert held(dev_server.url) == expected(as_preset)


def test_a_perspective_list_loads_those_participants_only(tmp_path, dev_server):
    """A Slack channel of 4 people with perspective: each holds it 4 times; a list of two
    ids holds it twice, as those two; the other members get nothing."""
    every = expected("slack-export-each")
    members = {k[0] for k in every if k[1] == "slack-C01GEN"}
    assert len(members) == 4
    two = sorted(members)[:2]
    settings = {**(sample_settings("slack-export") or {}), "perspective": [u.removeprefix("slack-") for u in two]}
    report = sync(tmp_path, dev_server.url, "slack-export", SAMPLES / "slack-export.zip", settings)
    assert report["counts"]["accounted"]
    assert held(dev_server.url) == _only(every, set(two))


def test_a_discord_perspective_list(tmp_path, dev_server):
    every = expected("discord-export-each")
    one = sorted({k[0] for k in every})[0]
    settings = {"perspective": [one.removeprefix("discord-")]}
    sync(tmp_path, dev_server.url, "discord-export", SAMPLES / "discord-export", settings)
    assert held(dev_server.url) == _only(every, {one})


def test_perspective_each_where_a_preset_has_one_side_says_so(tmp_path):
    from core.config import load_mapping
    from core.errors import ConfigError

    m = tmp_path / "m.yaml"
    m.write_text("preset: chatgpt-export\nsource: {name: c, path: x}\nperspective: each\n")
    with pytest.raises(ConfigError, match="one side only"):
        load_mapping(m)
