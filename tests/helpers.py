"""Independent expectations for the end-to-end tests: plain Python over the raw files, sharing
no code with the pipeline, so a mapping or ordering bug in the pipeline shows up as a diff."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import requests
import yaml

SAMPLE_MAPPING = Path(__file__).resolve().parent.parent / "schemas" / "mappings" / "sample.yaml"

ROLES = {"user": "user", "human": "user", "assistant": "assistant", "ai": "assistant", "bot": "assistant"}


def _time(value):
    try:
        dt = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def expected_messages(files: list[Path]) -> tuple[dict, int]:
    """(user, conversation) -> [(role, content, chat_time)] in order, and the number of bad rows."""
    rows = [json.loads(line) for f in files for line in f.read_text().splitlines()]
    return expected_from_rows(rows)


def expected_from_rows(rows: list[dict]) -> tuple[dict, int]:
    convs: dict = defaultdict(list)
    bad = 0
    for r in rows:
        role = ROLES.get((r.get("speaker") or "").strip().lower())
        sent = r.get("sent_at")
        when = _time(sent.isoformat() if isinstance(sent, datetime) else sent)
        text = r.get("text") or ""
        if (
            not text.strip()
            or role is None
            or not r.get("conversation_id")
            or not r.get("user")
            or len(r["user"]) > 100
            or when is None
        ):
            bad += 1
            continue
        if r.get("image_caption"):
            text += "\n[image: " + r["image_caption"] + "]"
        convs[(r["user"], r["conversation_id"])].append((r["turn"], role, text, when))
    return {k: [v[1:] for v in sorted(rows)] for k, rows in convs.items()}, bad


def stored_messages(server_url: str) -> dict:
    convs: dict = defaultdict(list)
    for m in requests.get(server_url + "/_dev/messages", timeout=30).json():
        convs[(m["user_id"], m["conversation_id"])].append((m["role"], m["content"], m["chat_time"]))
    return dict(convs)


def stored_infos(server_url: str) -> list[dict]:
    return [m["info"] for m in requests.get(server_url + "/_dev/messages", timeout=30).json()]


def stats(server_url: str) -> dict:
    return requests.get(server_url + "/_dev/stats", timeout=10).json()


def set_faults(server_url: str, **faults) -> None:
    requests.post(server_url + "/_dev/faults", json=faults, timeout=10).raise_for_status()


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def chat_rows(
    conversations: int, turns: int, start_turn: int = 1, prefix: str = "c", user: str = "u", users: int = 2
) -> list[dict]:
    rows = []
    for c in range(conversations):
        for t in range(start_turn, start_turn + turns):
            rows.append(
                {
                    "message_id": f"{prefix}{c}-{t}",
                    "user": f"{user}{c % users}",
                    "conversation_id": f"{prefix}{c}",
                    "session": 1,
                    "turn": t,
                    "speaker": "user" if t % 2 else "assistant",
                    "text": f"conversation {prefix}{c} turn {t}: " + "words " * (t % 7),
                    "sent_at": f"2024-03-{1 + t // 24:02d}T{t % 24:02d}:00:00+00:00",
                    "image_caption": None,
                }
            )
    return rows


def sample_mapping_at(tmp_path: Path, data_dir: Path, name: str = "mapping.yaml", **changes) -> Path:
    """The sample mapping, reading `data_dir` instead, with top-level keys replaced by `changes`."""
    body = yaml.safe_load(SAMPLE_MAPPING.read_text())
    body["source"]["path"] = str(data_dir)
    body.update(changes)
    p = tmp_path / name
    p.write_text(yaml.safe_dump(body))
    return p


def without_network(cmd: list[str]) -> list[str] | None:
    """`cmd` run in a network namespace with only a down loopback (nothing reachable), or None
    where this machine cannot make one."""
    import shutil
    import subprocess

    if shutil.which("unshare") and subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0:
        return ["unshare", "-n", *cmd]
    return None


def sample_settings(preset: str) -> dict | None:
    """What a mapping sets to use `preset` on its sample (schemas/presets/samples/<preset>.settings.yaml)."""
    import yaml

    from core.config import PRESETS

    p = PRESETS / "samples" / f"{preset}.settings.yaml"
    return yaml.safe_load(p.read_text()) if p.exists() else None


def store_config(
    tmp_path: Path, server: str, preset: str, section: str, settings: dict, extra: dict | None = None, load=None
) -> Path:
    """A run config with one source `chats` read by `preset` from a store (source.<section>:
    `settings`, plus the test's own keys under `extra[section]`), into the dev-server at
    `server`, its state under tmp_path."""
    extra = dict(extra or {})
    src = {"name": "chats", section: {**settings, **extra.pop(section, {})}}
    (tmp_path / "m.yaml").write_text(yaml.safe_dump({"preset": preset, "source": src, **extra}))
    cfg = tmp_path / "memos-etl.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "sources": {"chats": str(tmp_path / "m.yaml")},
                "target": {"base_url": server, "backoff_base_s": 0.01, "backoff_cap_s": 0.05},
                **({"load": load} if load else {}),
                "state": {"work_dir": str(tmp_path / "state"), "ledger_url": f"sqlite:///{tmp_path / 'ledger.db'}"},
            }
        )
    )
    return cfg


def store_cli(cfg: Path, *args: str) -> dict:
    """`memos-etl ARGS chats -c CFG --json` for a store_config source, its JSON answer (exit 0)."""
    from typer.testing import CliRunner

    from memos_etl.cli import app

    res = CliRunner().invoke(app, [*args, "chats", "-c", str(cfg), "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout[res.stdout.index("{") :])


def store_sync(cfg: Path) -> dict:
    return store_cli(cfg, "sync", "--no-prefect")


# --- the guarantees every LangChain chat-history store passes (tests/test_redis.py, tests/test_dynamodb.py)


def redaction_holds(make, configure, server: str) -> None:
    """The mapping's `redact:` on a store's rows: e-mail addresses hashed (the same token in
    every message), a phone number replaced, a message with an IP address dropped (counted,
    read = outcomes); content blocks redacted after they are joined. What the dev-server holds
    is byte for byte the text with each value swapped for its token, and holds no value; a
    re-run sends nothing; a message appended later is redacted too and the redacted old ones are
    not 'changed after delivery'. `make(session)`: a LangChain history of the store;
    `configure(extra)`: the run config, `extra` added to the mapping; MEMOS_ETL_REDACT_SECRET
    set to tests.test_redact.SECRET (its `token` is the expected hash)."""
    from langchain_core.messages import AIMessage, HumanMessage

    from tests.test_langchain import messages_of
    from tests.test_redact import token

    mail, other, phone, ip = "ana.lopez@example.com", "bo.chen@example.org", "+1 415-555-0134", "10.20.30.40"
    frank, gina = make("frank"), make("gina")
    frank.add_message(HumanMessage(f"my mail is {mail}, write me"))
    gina.add_message(HumanMessage("who answers the billing questions?"))
    frank.add_message(AIMessage(f"Noted: {mail}. Call {phone} if it bounces."))
    gina.add_message(AIMessage(content=[{"type": "text", "text": f"Write to {other}"}, {"type": "text", "text": "ok"}]))
    frank.add_message(HumanMessage(f"the box at {ip} is down"))
    frank.add_message(AIMessage("Rebooting it now."))
    want = {
        ("frank", "frank"): [
            ("user", f"my mail is {token(mail)}, write me"),
            ("assistant", f"Noted: {token(mail)}. Call <PHONE_NUMBER> if it bounces."),
            ("assistant", "Rebooting it now."),
        ],
        ("gina", "gina"): [
            ("user", "who answers the billing questions?"),
            ("assistant", f"Write to {token(other)}\nok"),
        ],
    }
    cfg = configure({"redact": {"operators": {"EMAIL_ADDRESS": "hash", "IP_ADDRESS": "drop_message"}}})
    c = store_sync(cfg)["counts"]
    assert messages_of(server) == want
    assert c["read"] == 6 and c["delivered"] == 5 and c["redaction_dropped"] == 1 and c["accounted"], c
    assert c["redaction"]["EMAIL_ADDRESS"]["found"] == 3 and c["redaction"]["IP_ADDRESS"]["messages"] == 1, c
    raw = json.dumps(requests.get(server + "/_dev/messages", timeout=30).json())
    assert not any(v in raw for v in (mail, other, phone, ip)), raw  # nowhere: content, info, ids

    again = store_sync(cfg)["counts"]
    assert again["requests"] == 0 and again["delivered"] == 0 and again["changed_after_delivery"] == 0, again
    assert again["accounted"], again

    frank.add_message(HumanMessage(f"also cc {other} please"))
    grew = store_sync(cfg)["counts"]
    assert grew["delivered"] == 1 and grew["changed_after_delivery"] == 0 and grew["accounted"], grew
    want[("frank", "frank")].append(("user", f"also cc {token(other)} please"))
    assert messages_of(server) == want
    raw = json.dumps(requests.get(server + "/_dev/messages", timeout=30).json())
    assert not any(v in raw for v in (mail, other, phone, ip)), raw


def two_syncs_at_once(cfg: Path, server: str, want: dict, before: int) -> None:
    """Two `memos-etl sync` processes of `cfg`'s source at the same moment, one ledger (the
    dev-server answers 20 ms late, so their sending overlaps): the conversation leases give
    each conversation to one of them (the other counts it busy and leaves it pending); neither
    fails; the store holds each message once, in order, and what the two delivered adds up to
    what the source holds (a third run sends what was left pending, and only that). `want`:
    what MemOS must end with, (user, conversation) -> [(role, content)]; `before`: how many of
    those messages it held already."""
    import subprocess
    import sys

    from tests.conftest import ROOT
    from tests.test_langchain import messages_of

    total = sum(len(v) for v in want.values())
    set_faults(server, latency_ms=20)
    cmd = [sys.executable, "-m", "memos_etl.cli", "sync", "chats", "-c", str(cfg), "--no-prefect", "--json"]
    procs = [subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in "ab"]
    reports = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode in (0, 2), out[-3000:] + err[-3000:]  # completed, or incomplete: pending
        assert "Traceback" not in out + err, out[-3000:] + err[-3000:]
        reports.append(json.loads(out[out.index("{") :])["counts"])
    set_faults(server, latency_ms=0)
    # they ran at once: at least one found conversations leased by the other
    assert any(r["leased_elsewhere"] for r in reports), reports
    assert all(r["accounted"] for r in reports), reports
    assert stats(server)["messages"] == before + sum(r["delivered"] for r in reports) <= total, reports
    final = store_sync(cfg)["counts"]  # whatever was pending behind a lease
    assert before + sum(r["delivered"] for r in reports) + final["delivered"] == total, (reports, final)
    assert final["pending"] == 0 and final["leased_elsewhere"] == 0, final
    assert messages_of(server) == want  # every message once, in order
    assert stats(server)["messages"] == total


def fleet_config(path: Path, sources: dict, server_url: str, rps: float, ledger_url: str, **extra) -> Path:
    """A run config at `path` for a fleet of processes sharing one ledger (`ledger_url`) and one
    fleet-wide rate of `rps` requests a second into the dev-server at `server_url`; `extra`
    adds top-level sections (backfill: ...)."""
    path.write_text(
        yaml.safe_dump(
            {
                "sources": sources,
                "target": {"base_url": server_url, "name": "fleet", "backoff_base_s": 0.05, "backoff_cap_s": 0.5},
                # each process alone would send at `rps`; only the fleet limit keeps them together under it
                "load": {
                    "max_messages_per_request": 4,
                    "concurrency": 4,
                    "requests_per_second": rps,
                    "tokens_per_minute": 0,
                    "fleet_limit": "memos-etl-test",
                },
                "state": {"work_dir": str(path.parent / "state"), "ledger_url": ledger_url},
                **extra,
            }
        )
    )
    return path
