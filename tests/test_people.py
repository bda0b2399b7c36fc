"""One person across apps (`people:`): the exports' samples and a WhatsApp group chat synced
through the CLI into the dev-server over HTTP, with the people map in the run config or the
mapping. Expectations are written here by hand: the samples' own `<preset>.expected.jsonl`
(computed from their model, not from the presets) with the map's changes spelled out, and a
group chat whose every message is listed."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import requests
import yaml
from typer.testing import CliRunner

from core.config import PRESETS
from memos_etl.cli import app
from tests.helpers import sample_settings

runner = CliRunner()
SAMPLES = PRESETS / "samples"

#: Dee exported all three samples: U01DEE in Slack, user5000001 in Telegram, Dee in WhatsApp
PEOPLE = {
    "dee": {
        "name": "Dee",
        "slack": "U01DEE",
        "telegram": "user5000001",
        "whatsapp": "Dee",
        "discord": 310000000000000001,  # a snowflake written without quotes
    },
    "noor": {"name": "Noor", "slack": "U04NOOR"},
    "bob": {"name": "Bob Stone", "telegram": ["user5000002"]},
    "samk": {"name": "Sam Kim", "slack": "U02SAMK", "whatsapp": "Sam K"},
}


def write_config(tmp_path: Path, url: str, sources: dict[str, dict], people: dict | None) -> Path:
    """A run config with each source's mapping beside it and `people` shared."""
    files = {}
    for name, body in sources.items():
        files[name] = str(tmp_path / f"{name}.yaml")
        Path(files[name]).write_text(yaml.safe_dump({**body, "source": {"name": name, **body["source"]}}))
    cfg = tmp_path / "memos-etl.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "sources": files,
                "target": {"base_url": url, "backoff_base_s": 0.01, "backoff_cap_s": 0.05},
                "state": {"work_dir": str(tmp_path / "state"), "ledger_url": f"sqlite:///{tmp_path / 'ledger.db'}"},
                **({"people": people} if people is not None else {}),
            }
        )
    )
    return cfg


def sync(cfg: Path, source: str) -> dict:
    res = runner.invoke(app, ["sync", source, "-c", str(cfg), "--no-prefect", "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout[res.stdout.index("{") :])
    assert report["counts"]["accounted"] and report["counts"]["quarantined"] == 0, report["counts"]
    return report


def held(url: str) -> dict:
    convs: dict = defaultdict(list)
    for m in requests.get(url + "/_dev/messages", timeout=30).json():
        convs[(m["user_id"], m["conversation_id"])].append((m["role"], m["content"], m["chat_time"]))
    return dict(convs)


def expected(preset: str, user: str, names: dict[str, str]) -> dict:
    """The sample's expected messages with their user `user` and the names in front of others'
    text swapped as `names` says (the export's name -> the map's)."""
    convs: dict = defaultdict(list)
    for line in (SAMPLES / f"{preset}.expected.jsonl").read_text(encoding="utf-8").splitlines():
        m = json.loads(line)
        content = m["content"]
        for old, new in names.items():
            if m["role"] == "assistant" and content.startswith(f"{old}: "):
                content = f"{new}: {content[len(old) + 2 :]}"
        convs[(user, m["conversation_id"])].append((m["role"], content, m["chat_time"]))
    return dict(convs)


def test_one_person_across_slack_telegram_and_whatsapp_is_one_memos_user(tmp_path, dev_server):
    samples = {"slack-export": "slack-export.zip", "telegram-export": "telegram-export", "whatsapp-txt": "whatsapp-txt"}
    sources = {}
    for preset, sample in samples.items():
        body = {"preset": preset, "source": {"path": str(SAMPLES / sample)}, **(sample_settings(preset) or {})}
        sources[preset] = body
    sources["slack-export"]["constants"] = {"self": "dee"}  # the exporting person named by key
    cfg = write_config(tmp_path, dev_server.url, sources, PEOPLE)
    for preset in samples:
        sync(cfg, preset)
    want = {
        # Slack: Noor's display name is נור, the map's Noor; two people show as "Sam", one mapped
        **expected("slack-export", "dee", {"נור": "Noor"}),
        **expected("telegram-export", "dee", {"Bob": "Bob Stone"}),
        **expected("whatsapp-txt", "dee", {"Sam K": "Sam Kim"}),
    }
    for conv in [k for k in want if k[1].startswith("slack-")]:  # the mapped Sam is Sam Kim, the other stays Sam
        want[conv] = [
            (r, f"Sam Kim: {c[5:]}" if r == "assistant" and c.startswith("Sam: ") and c[5:] in SAM_KIM else c, t)
            for r, c, t in want[conv]
        ]
    got = held(dev_server.url)
    assert {user for user, _ in got} == {"dee"}  # one MemOS user, not slack-U01DEE, telegram-..., whatsapp-Dee
    assert got == want


#: what U02SAMK says in the Slack sample (its day files read by hand); U03SAMR shows as Sam too
SAM_KIM = {"Anyone up for bouldering on Sunday? @here", "Moved it to 11am", "Did you find the shoes?"}


def test_a_telegram_perspective_list_names_people_by_key(tmp_path, dev_server):
    body = {
        "preset": "telegram-export",
        "perspective": ["dee", "bob"],  # keys: Dee and Bob's sides, not Carol's
        "source": {"path": str(SAMPLES / "telegram-export")},
    }
    cfg = write_config(tmp_path, dev_server.url, {"telegram": body}, PEOPLE)
    sync(cfg, "telegram")
    want: dict = defaultdict(list)
    users = {"telegram-user5000001": "dee", "telegram-user5000002": "bob"}
    names = {"Bob": "Bob Stone"}  # Dee is Dee in the map as in the export
    for line in (SAMPLES / "telegram-export-each.expected.jsonl").read_text(encoding="utf-8").splitlines():
        m = json.loads(line)
        if m["user_id"] not in users:
            continue
        who, sep, text = m["content"].partition(": ")
        content = f"{names.get(who, who)}: {text}" if m["role"] == "assistant" and sep else m["content"]
        want[(users[m["user_id"]], m["conversation_id"])].append((m["role"], content, m["chat_time"]))
    assert held(dev_server.url) == dict(want)


CHAT = (
    "05/04/2024, 10:01 - Dana Whitfield: Lunch today?\n"
    "05/04/2024, 10:02 - +1 555 0199: Who is this?\n"
    "05/04/2024, 10:03 - Ravi: Yes, 1pm\n"
    "works for me\n"
    "05/04/2024, 10:04 - +1 555 0142: Sorry, new phone: Dana\n"
    "05/04/2024, 10:05 - Lee: Count me in\n"
)
GROUP_PEOPLE = {
    "dana": {"name": "Dana", "whatsapp": ["Dana Whitfield", "+1 555 0142"], "slack": "U01DANA"},
    "ravi": {"name": "Ravi Kumar", "whatsapp": "Ravi"},
    "mo": {"whatsapp": "Mo"},  # mapped, but silent in this chat: not one of its holders
}


def _group(tmp_path: Path) -> Path:
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "WhatsApp Chat with Lunch crew.txt").write_text(CHAT, encoding="utf-8")
    return folder


def _lunch(me: str) -> list[tuple[str, str, str]]:
    """The chat from `me`'s side (dana or ravi), by hand."""
    mine = {"dana": {0, 3}, "ravi": {2}}[me]
    lines = [
        ("Dana", "Lunch today?", "10:01"),
        ("+1 555 0199", "Who is this?", "10:02"),
        ("Ravi Kumar", "Yes, 1pm\nworks for me", "10:03"),
        ("Dana", "Sorry, new phone: Dana", "10:04"),
        ("Lee", "Count me in", "10:05"),
    ]
    return [
        ("user", text, f"2024-04-05T{hm}:00Z") if i in mine else ("assistant", f"{who}: {text}", f"2024-04-05T{hm}:00Z")
        for i, (who, text, hm) in enumerate(lines)
    ]


def test_a_whatsapp_group_chat_loads_each_mapped_speakers_side(tmp_path, dev_server):
    body = {"preset": "whatsapp-txt", "perspective": "each", "source": {"path": str(_group(tmp_path))}}
    cfg = write_config(tmp_path, dev_server.url, {"lunch": body}, GROUP_PEOPLE)
    report = sync(cfg, "lunch")
    assert report["counts"]["delivered"] == 10  # 5 messages, 2 holders: Dana (2 ids) and Ravi
    assert held(dev_server.url) == {
        ("dana", "whatsapp-Lunch crew"): _lunch("dana"),
        ("ravi", "whatsapp-Lunch crew"): _lunch("ravi"),
    }


def test_a_whatsapp_group_chat_loads_the_listed_peoples_side_with_the_mappings_own_people(tmp_path, dev_server):
    body = {
        "preset": "whatsapp-txt",
        "perspective": ["ravi"],
        "source": {"path": str(_group(tmp_path))},
        "people": GROUP_PEOPLE,  # in the mapping: the run config has none
    }
    cfg = write_config(tmp_path, dev_server.url, {"lunch": body}, None)
    sync(cfg, "lunch")
    assert held(dev_server.url) == {("ravi", "whatsapp-Lunch crew"): _lunch("ravi")}


def _fails(tmp_path: Path, url: str, people: dict, mapping_people: dict | None = None) -> str:
    body = {"preset": "whatsapp-txt", "perspective": "each", "source": {"path": str(_group(tmp_path))}}
    if mapping_people is not None:
        body["people"] = mapping_people
    cfg = write_config(tmp_path, url, {"lunch": body}, people)
    res = runner.invoke(app, ["sync", "lunch", "-c", str(cfg), "--no-prefect"])
    assert res.exit_code != 0 and "Traceback" not in res.output, res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1, res.output
    return lines[0]


def test_an_id_claimed_by_two_people_stops_the_run_naming_both(tmp_path, dev_server):
    line = _fails(tmp_path, dev_server.url, {"dana": {"whatsapp": "Dana"}, "dee": {"whatsapp": ["Dee", "Dana"]}})
    assert "whatsapp id 'Dana' is claimed by two people: dana and dee" in line, line
    assert held(dev_server.url) == {}


def test_an_id_claimed_in_the_mapping_and_the_config_stops_the_run(tmp_path, dev_server):
    line = _fails(tmp_path, dev_server.url, {"dana": {"whatsapp": "Dana"}}, {"ana": {"whatsapp": "Dana"}})
    assert "lunch.yaml" in line and "claimed by two people: dana and ana" in line, line


def test_an_unknown_app_stops_the_run_listing_the_known_ones(tmp_path, dev_server):
    line = _fails(tmp_path, dev_server.url, {"dana": {"whatsapp": "Dana", "signal": "+1 555 0142"}})
    assert "people.dana" in line and "unknown app 'signal' (known: slack, telegram, whatsapp, discord" in line, line


def test_a_whatsapp_group_chat_from_each_side_needs_the_people_map(tmp_path, dev_server):
    line = _fails(tmp_path, dev_server.url, {})
    assert "needs a people: map with whatsapp names" in line, line
