"""One long conversation, ordered from sorted runs on disk (tasks/order.py) when its bucket is
bigger than load.sort_in_memory_bytes: the same requests, keys, order and ledger as the
in-memory path, through the CLI into the dev-server. A tiny threshold makes a few thousand
messages spill."""

from __future__ import annotations

import json
import logging
import random
import signal
import sqlite3
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import requests
import yaml
from typer.testing import CliRunner

from memos_etl.cli import app
from tasks.batch import sort_conversations
from tasks.buckets import read_bucket
from tasks.map import MAPPED_SCHEMA
from tasks.order import bucket_parts, sort_runs
from tests.helpers import chat_rows, expected_messages, sample_mapping_at, stats, write_jsonl
from tests.test_crash import rerun_until_done, start, wait_for_sending

runner = CliRunner()
SPILL = 100_000  # bytes: the long conversation's bucket (~1 MB staged) spills, the short ones do not


def long_rows(n: int, seed: int = 5) -> list[list[dict]]:
    """Three files: one conversation of `n` messages and 40 short ones, shuffled over the
    files, with what ordering must get right: repeated message ids (another text: the first
    in order wins), turns given twice (chat_time decides), rows without a turn (ordered
    after, by chat_time), texts of very different lengths (requests cut by tokens too)."""
    rng = random.Random(seed)
    rows = []
    for t in range(1, n + 1):
        rows.append(
            {
                "message_id": f"long-{t}",
                "user": "u-long",
                "conversation_id": "channel",
                "session": 1,
                "turn": t if t % 97 else t - 1,
                "speaker": "Human" if t % 3 else "Assistant",
                "text": f"message {t} " + "words " * rng.choice((1, 3, 30, 200)),
                "sent_at": f"2024-01-{1 + t // 2000:02d}T{t // 60 % 24:02d}:{t % 60:02d}:00Z",
                "image_caption": None,
            }
        )
    for r in rows[::151]:
        r.pop("turn")
    rows += chat_rows(conversations=40, turns=20, users=7)
    dups = [dict(r, text=r["text"] + " (again)") for r in rng.sample(rows, 25)]
    rng.shuffle(rows)
    files = [rows[i::3] for i in range(3)]
    files[2] += dups
    return files


def job(tmp_path, dev_server, name: str, spill: int | None, rows: list[list[dict]], **load) -> tuple:
    data = tmp_path / "data"
    if not data.exists():
        for i, part in enumerate(rows):
            write_jsonl(data / f"part-{i}.jsonl", part)
    mapping = sample_mapping_at(tmp_path, data)
    cfg = {
        "target": {
            "base_url": dev_server.url,
            "timeout_s": 5,
            "in_doubt_grace_s": 0.05,
            "backoff_base_s": 0.01,
            "backoff_cap_s": 0.1,
        },
        "load": {"max_tokens_per_request": 1500, "requests_per_second": 0, "tokens_per_minute": 0, **load},
        "state": {"work_dir": str(tmp_path / name)},
    }
    if spill is not None:
        cfg["load"]["sort_in_memory_bytes"] = spill
    run_yaml = tmp_path / f"{name}.yaml"
    run_yaml.write_text(yaml.safe_dump(cfg))
    return mapping, run_yaml, tmp_path / name / "ledger.db"


def sync(mapping, run_yaml) -> dict:
    res = runner.invoke(app, ["sync", str(mapping), "--config", str(run_yaml), "--no-prefect", "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.output[res.output.index("{") :])


def requests_by_conversation(server_url: str) -> dict:
    """(user, conversation) -> [(batch_key, [(role, content, chat_time), ...]), ...] in the order received."""
    out: dict = {}
    for m in requests.get(server_url + "/_dev/messages", timeout=30).json():
        reqs = out.setdefault((m["user_id"], m["conversation_id"]), [])
        if not reqs or reqs[-1][0] != m["info"]["batch_key"]:
            reqs.append((m["info"]["batch_key"], []))
        reqs[-1][1].append((m["role"], m["content"], m["chat_time"]))
    return out


def ledger_rows(path) -> tuple[list, list]:
    with sqlite3.connect(path) as db:
        batches = db.execute(
            "SELECT batch_key, user_id, conversation_id, status, n_messages, first_key, last_key, "
            "last_order FROM batches ORDER BY batch_key"
        ).fetchall()
        convs = db.execute(
            "SELECT user_id, conversation_id, last_order FROM conversations ORDER BY user_id, conversation_id"
        ).fetchall()
    return batches, convs


def comparable(counts: dict) -> dict:
    return {k: v for k, v in counts.items() if not k.endswith("_s")}


def spilled(caplog) -> int:
    """Buckets the runs so far ordered from sorted runs on disk (tasks/load/ logs each)."""
    return sum("sorted runs on disk" in r.getMessage() for r in caplog.records)


def test_spilled_bucket_sends_the_same_requests_as_in_memory_then_nothing(tmp_path, dev_server, caplog):
    caplog.set_level(logging.INFO, logger="memos_etl.load")
    rows = long_rows(3000)
    plain = job(tmp_path, dev_server, "in-memory", None, rows)
    first = sync(*plain[:2])
    want = requests_by_conversation(dev_server.url)
    assert first["counts"]["duplicates"] == 25 and first["counts"]["delivered"] == 3000 + 800
    assert len(want[("u-long", "channel")]) > 100  # cut by tokens and max_messages_per_request

    requests.post(dev_server.url + "/_dev/reset", timeout=10).raise_for_status()
    assert spilled(caplog) == 0
    on_disk = job(tmp_path, dev_server, "spilled", SPILL, rows)
    second = sync(*on_disk[:2])
    assert spilled(caplog) == 1  # the long conversation's bucket; the others are small
    assert requests_by_conversation(dev_server.url) == want  # same keys, same messages, same order
    assert comparable(second["counts"]) == comparable(first["counts"])
    assert ledger_rows(on_disk[2]) == ledger_rows(plain[2])
    assert not (tmp_path / "spilled" / "runs").exists() or not list((tmp_path / "spilled" / "runs").rglob("*.arrow"))

    before = stats(dev_server.url)["add_requests"]
    for f in (tmp_path / "data").glob("*.jsonl"):  # read again (not skipped as unchanged): all known
        f.write_text(f.read_text() + "\n")
    again = sync(*on_disk[:2])
    assert again["counts"]["requests"] == 0 and again["counts"]["delivered"] == 0
    assert stats(dev_server.url)["add_requests"] == before


def test_spilled_plan_is_the_in_memory_plan(tmp_path, dev_server, caplog):
    """A dry run, one loader: the outbox files are the same line for line (run ids aside)."""
    caplog.set_level(logging.INFO, logger="memos_etl.load")
    rows = long_rows(2000, seed=9)
    boxes = []
    for name, spill in (("a", None), ("b", SPILL)):
        mapping, run_yaml, _ = job(tmp_path, dev_server, name, spill, rows, concurrency=1)
        box = tmp_path / f"{name}.jsonl"
        res = runner.invoke(app, ["plan", str(mapping), "--config", str(run_yaml), "--outbox", str(box), "--json"])
        assert res.exit_code == 0, res.output
        run_id = json.loads(res.output[res.output.index("{") :])["run_id"]
        boxes.append(box.read_text().replace(run_id, "RUN"))
    assert spilled(caplog) == 1
    assert boxes[0] == boxes[1] and boxes[0].count("\n") > 80


def test_whole_conversation_policies_give_the_same_on_disk(tmp_path, dev_server, caplog):
    """What needs a whole conversation, on a bucket loaded in slices: a message edited late in
    the long conversation holds the new messages ordered before it (slices earlier) for the
    rewrite (on_change: replace), which sends it again whole; a conversation whose only user
    message comes last, in another file, is sent, one without any is quarantined (checks);
    time going backwards is counted across slices. Counts, requests and ledger as in memory."""
    caplog.set_level(logging.INFO, logger="memos_etl.load")
    long = [
        {
            "message_id": f"long-{t}",
            "user": "u-long",
            "conversation_id": "channel",
            "session": 1,
            "turn": t,
            "speaker": "user" if t % 5 == 0 else "assistant",
            "text": f"message {t} " + "words " * (t % 40),
            "image_caption": None,
            "sent_at": f"2024-01-01T{t // 3600:02d}:{t // 60 % 60:02d}:{t % 60:02d}Z",
        }
        for t in range(1, 2001)
    ]
    for r in long[::170]:
        r["sent_at"] = "2023-12-31T00:00:00Z"  # time going backwards
    first_day = [r for r in long if r["turn"] % 10]  # turns 10, 20, ... come the next day, late
    quiet = [
        dict(
            r,
            user="u-q",
            conversation_id=f"quiet-{r['conversation_id']}",
            speaker="assistant",
            message_id=f"q-{r['message_id']}",
        )
        for r in chat_rows(conversations=2, turns=200)
    ]
    day2 = [r for r in long if r["turn"] % 10 == 0] + [dict(quiet[0], speaker="user", message_id="q-user", turn=999)]
    results = []
    for name, spill in (("in-memory", None), ("on-disk", SPILL)):
        requests.post(dev_server.url + "/_dev/reset", timeout=10).raise_for_status()
        data = tmp_path / name / "data"
        write_jsonl(data / "day1.jsonl", first_day + quiet)
        _, run_yaml, ledger = job(tmp_path / name, dev_server, "state", spill, [], buckets=1, concurrency=1)
        mapping = sample_mapping_at(
            tmp_path / name,
            data,
            "policies.yaml",
            on_change="replace",
            checks={"conversation_needs_user_message": True},
        )
        first = sync(mapping, run_yaml)
        edited = [dict(r, text=r["text"] + " (edited)") if r["turn"] == 1999 else r for r in first_day]
        write_jsonl(data / "day1.jsonl", edited + quiet)
        write_jsonl(data / "day2.jsonl", day2)
        second = sync(mapping, run_yaml)
        rewrite = {k: v for k, v in second["rewrite"].items() if k != "run_id"}
        results.append(
            (
                comparable(first["counts"]),
                comparable(second["counts"]),
                rewrite,
                requests_by_conversation(dev_server.url),
                ledger_rows(ledger),
            )
        )
        if name == "in-memory":
            assert spilled(caplog) == 0
    assert spilled(caplog) == 3  # the first sync, the second, its rewrite
    a, b = results
    assert a[0]["quarantined"] == 400 and a[0]["out_of_order"] > 0
    assert a[1]["held_for_rewrite"] == 200 and a[1]["changed_after_delivery"] == 1 and a[2]["conversations"] == 1
    assert len(a[3][("u-long", "channel")]) and a[3][("u-q", "quiet-c0")] and ("u-q", "quiet-c1") not in a[3]
    assert sum(len(m) for _, m in a[3][("u-long", "channel")]) == 2000  # rewritten whole, in order
    for x, y in zip(a, b):
        assert x == y


def test_sorted_runs_merge_to_the_in_memory_order(tmp_path):
    """tasks/order.py alone: random keys with ties, nulls and repeats, many runs, small
    buffers: the merged slices are read_bucket(...).sort_by(SORT_KEYS), row for row."""
    rng = np.random.default_rng(3)
    stage = tmp_path / "stage"
    d = stage / "bucket=0000"
    d.mkdir(parents=True)
    n = 0
    for p in range(4):
        m = int(rng.integers(2000, 5000))
        seq = rng.integers(0, 300, m).astype(object)
        seq[rng.random(m) < 0.1] = None
        t = MAPPED_SCHEMA.empty_table().to_pydict()
        t.update(
            {
                "source_key": [f"k{int(x)}" for x in rng.integers(0, 9000, m)],
                "user_id": [f"u{int(x)}" for x in rng.integers(0, 3, m)],
                "conversation_id": [None if x == 0 else f"c{int(x)}" for x in rng.integers(0, 4, m)],
                "role": ["user"] * m,
                "content": [f"row {n + i}" for i in range(m)],
                "chat_time": [None if x == 0 else int(x) * 1_000_000 for x in rng.integers(0, 50, m)],
                "seq": list(seq),
                "source_file": [f"f{p % 2}"] * m,
                "source_row": [int(x) for x in rng.integers(0, 40, m)],
                "key_lo": list(range(n, n + m)),
                "key_hi": [0] * m,
            }
        )
        for c in ("agent_id", "app_id", "tags", "info", "deleted", "attachments"):
            t[c] = [None] * m
        table = pa.Table.from_pydict(t, schema=MAPPED_SCHEMA)
        with ipc.new_file(str(d / f"part-{p:05d}.arrow"), MAPPED_SCHEMA) as w:
            for s in range(0, m, 700):
                w.write_table(table.slice(s, 700))
        n += m
    want = sort_conversations(read_bucket(stage, 0))
    runs = sort_runs(bucket_parts(stage, 0), tmp_path / "order", 40_000, lambda part: part)
    slices = list(runs.ordered(1000))
    assert len(runs.runs) > 5 and len(slices) > 3
    got = pa.concat_tables(slices)
    assert runs.rows == got.num_rows == n
    assert got.column("content").to_pylist() == want.column("content").to_pylist()
    pairs = set(zip(want.column("user_id").to_pylist(), want.column("conversation_id").to_pylist()))
    assert sorted(runs.conversations, key=repr) == sorted(pairs, key=repr)
    runs.close()
    assert not (tmp_path / "order").exists()


def test_killed_mid_bucket_then_rerun_delivers_each_message_once_in_order(tmp_path, dev_server):
    """SIGKILL while the long conversation's spilled bucket is being sent, three times, then
    re-runs: every message once, in order."""
    data = tmp_path / "data"
    long = [
        {
            "message_id": f"long-{t}",
            "user": "u-long",
            "conversation_id": "channel",
            "session": 1,
            "turn": t,
            "speaker": "user" if t % 2 else "assistant",
            "text": f"message {t}",
            "image_caption": None,
            "sent_at": f"2024-01-01T{t // 3600:02d}:{t // 60 % 60:02d}:{t % 60:02d}Z",
        }
        for t in range(1, 2001)
    ]
    write_jsonl(data / "a.jsonl", long)
    write_jsonl(data / "b.jsonl", chat_rows(conversations=6, turns=20))
    mapping, run_yaml, _ = job(
        tmp_path, dev_server, "state", 50_000, [], max_messages_per_request=4, requests_per_second=60
    )
    cmd = [sys.executable, "-m", "memos_etl.cli", "sync", str(mapping), "--config", str(run_yaml), "--no-prefect"]
    expected = expected_messages([data / "a.jsonl", data / "b.jsonl"])[0]
    for wait in (0.3, 1.0, 0.6):
        proc = start(cmd)
        before = stats(dev_server.url)["add_requests"]
        assert wait_for_sending(dev_server.url, proc, before)
        deadline = stats(dev_server.url)["add_requests"] + int(wait * 60)
        while stats(dev_server.url)["add_requests"] < deadline and proc.poll() is None:
            time.sleep(0.02)
        assert proc.poll() is None, "the run finished before it was killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    rerun_until_done(cmd, dev_server, expected)
