"""`memos-etl verify`: what the target made of delivered requests, against the dev-server's
faults: an add answered ok that stored nothing, an add whose memories were made twice, and an
erasure answered with success whose memories linger. Each is found and reported (exit 2); a
clean sync verifies clean (exit 0), on the cloud API and the open-source server's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from memos_etl.cli import app
from tests.helpers import chat_rows, sample_mapping_at, set_faults, stored_messages, write_jsonl

runner = CliRunner()


def setup(tmp_path: Path, url: str, kind: str) -> str:
    data = tmp_path / "data"
    write_jsonl(data / "a.jsonl", chat_rows(6, 4))  # users u0, u1; 6 conversations of 4 messages
    cfg = {
        "sources": {"chats": str(sample_mapping_at(tmp_path, data))},
        "target": {"base_url": url, "kind": kind, "extraction_wait_s": 0.5, "name": "dev", "max_attempts": 2},
        "load": {"max_messages_per_request": 2},
        "state": {"work_dir": str(tmp_path / "state")},
    }
    p = tmp_path / "memos-etl.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return str(p)


def verify(cfg: str, *args: str) -> tuple[int, dict]:
    res = runner.invoke(app, ["verify", "chats", "-c", cfg, "--no-prefect", "--json", *args])
    assert "Traceback" not in res.output, res.output
    assert res.exit_code in (0, 2), res.output
    return res.exit_code, json.loads(res.output[res.output.index("{") :])


@pytest.mark.parametrize("kind", ["cloud", "self-hosted"])
def test_a_clean_sync_verifies_clean(kind, tmp_path, dev_server):
    cfg = setup(tmp_path, dev_server.url, kind)
    assert runner.invoke(app, ["sync", "chats", "-c", cfg, "--no-prefect"]).exit_code == 0
    code, out = verify(cfg, "--all")
    assert code == 0 and out["status"] == "clean", out
    assert out["checked"] == out["delivered"] == 12 and out["outcomes"] == {"ok": 12}
    # the default: a seeded sample, the same requests each time
    code, a = verify(cfg, "--sample", "5", "--seed", "3")
    code, b = verify(cfg, "--sample", "5", "--seed", "3")
    assert a["checked"] == 5 and a["seed"] == 3 and a == b
    # the same target name, unreachable: an error (exit 1), not a finding
    from memos_etl.devserver import free_port

    dead = ["--target-url", f"http://127.0.0.1:{free_port()}"]
    res = runner.invoke(app, ["verify", "chats", "-c", cfg, "--no-prefect", *dead])
    assert res.exit_code == 1 and "error:" in res.output and "Traceback" not in res.output, res.output
    # another target name: nothing delivered there, and it says so
    body = yaml.safe_load(Path(cfg).read_text())
    body["target"]["name"] = "elsewhere"
    Path(cfg).write_text(yaml.safe_dump(body))
    code, out = verify(cfg)
    assert code == 0 and out["checked"] == 0 and "no delivered requests of" in out["notes"][0], out


@pytest.mark.parametrize("kind", ["cloud", "self-hosted"])
def test_stored_nothing_repeated_and_a_lingering_erasure_are_found(kind, tmp_path, dev_server):
    cfg = setup(tmp_path, dev_server.url, kind)
    set_faults(dev_server.url, script=[{"pass": True}, {"store_nothing": True}, {"duplicate": True}])
    res = runner.invoke(app, ["sync", "chats", "-c", cfg, "--no-prefect"])
    assert res.exit_code == 0, res.output
    # erased: a conversation the faults above did not touch (4 messages stored, as sent)
    user, conv = next(
        k for k, msgs in sorted(stored_messages(dev_server.url).items()) if len(msgs) == len(set(msgs)) == 4
    )
    set_faults(dev_server.url, deletes_linger=True)
    res = runner.invoke(app, ["erase", "--user", user, "--conversation", conv, "-c", cfg, "--yes"])
    assert res.exit_code in (0, 2), res.output
    code, out = verify(cfg, "--all")
    assert code == 2 and out["status"] == "findings", out
    assert out["outcomes"] == {"ok": 8, "stored nothing": 1, "repeated": 1}, out  # the erased 2 aside
    nothing = next(f for f in out["findings"] if f["outcome"] == "stored nothing")
    twice = next(f for f in out["findings"] if f["outcome"] == "repeated")
    assert nothing["memories"] == 0 and twice["memories"] == 4 and twice["extra_copies"] == 2, out
    [erasure] = out["erasures"]
    assert (erasure["user_id"], erasure["conversation_id"]) == (user, conv)
    assert erasure["memories_left"] == 4 and not erasure["clean"], erasure
    # the text lines say the same
    res = runner.invoke(app, ["verify", "chats", "-c", cfg, "--no-prefect", "--all"])
    assert res.exit_code == 2 and "stored nothing: request" in res.output and "4 memories and" in res.output, res.output
