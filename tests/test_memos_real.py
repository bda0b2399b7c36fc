"""memos-etl against the real open-source MemOS server, not only our dev-server.

The server is MemOS itself (PyPI `MemoryOS`, pinned in deployments/memos-local/requirements.txt)
in its own virtualenv, started by deployments/memos-local/stack.py with PostgreSQL+pgvector, a
real MiniLM embedder and an LLM stand-in (see that folder). The module sets the virtualenv up
when it can (about 10 s with uv; it needs torch's CPU wheel on disk, as this machine kind has)
and skips with the reason when it cannot; MEMOS_ETL_REQUIRE_MEMOS=1 (set by .ci/run) turns that
skip into a failure.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import requests
import yaml

from core.config import TargetConfig
from memos_etl.devserver import DevServer
from tests.helpers import write_jsonl

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.memos_real


def _stack():
    spec = importlib.util.spec_from_file_location(
        "memos_local_stack", ROOT / "deployments" / "memos-local" / "stack.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def memos():
    """Base URL of a running MemOS server, fresh for this module."""
    stack = _stack()
    try:
        if not stack.is_set_up():
            stack.setup()
    except (stack.StackError, subprocess.CalledProcessError, OSError) as exc:
        reason = f"the local MemOS server cannot be set up on this machine: {exc}"
        if os.environ.get("MEMOS_ETL_REQUIRE_MEMOS"):
            pytest.fail(reason)
        pytest.skip(reason)
    # not under pytest's tmp dirs: those are root-only, and as root PostgreSQL runs as `postgres`
    run_dir = Path(tempfile.mkdtemp(prefix="memos-local-"))
    state = stack.up(run_dir)
    try:
        yield state["base_url"]
    finally:
        stack.down(run_dir, grace_s=1.0)  # a throwaway stack: its 10 s of graceful shutdown buy nothing here
        shutil.rmtree(run_dir, ignore_errors=True)


# Three users, five conversations; each user's facts are their own, so a search that finds
# another user's fact is a leak, and every fact is distinctive enough to search for.
CONVERSATIONS = {
    ("ada", "pets"): [
        ("user", "I adopted a border collie called Pixel in April."),
        ("assistant", "Pixel is a lovely name. Collies need a lot of exercise."),
        ("user", "Pixel already fetches the frisbee at the park every morning."),
        ("assistant", "Frisbee is a great outlet for a herding dog."),
    ],
    ("ada", "garden"): [
        ("user", "My tomatoes keep splitting after heavy rain."),
        ("assistant", "Water evenly and mulch: splitting comes from uneven watering."),
    ],
    ("ben", "climbing"): [
        ("user", "My favourite crag is Stanage Edge in the Peak District."),
        ("assistant", "Gritstone classics: try Flying Buttress."),
        ("user", "I led my first HVS there last weekend."),
    ],
    ("ben", "baking"): [
        ("user", "I bake rye bread with caraway seeds every Sunday."),
        ("assistant", "Rye likes a longer proof and a sourdough starter."),
    ],
    ("cy", "music"): [
        ("user", "I am learning the cello and practising the Bach prelude in G major."),
        ("assistant", "Start slowly with a metronome and focus on string crossings."),
    ],
}


def _write_source(tmp_path: Path, run: str) -> tuple[Path, dict, dict]:
    """The conversations as a JSONL file in the bundled sample's layout, a memos-etl config
    for it, and what was sent: (user, text) -> chat_time."""
    rows, sent_times = [], {}
    for (user, conv), msgs in CONVERSATIONS.items():
        for turn, (role, text) in enumerate(msgs, 1):
            when = f"2024-04-{1 + len(sent_times) % 27:02d}T{8 + turn:02d}:30:00+00:00"
            rows.append(
                {
                    "message_id": f"{conv}-{turn}",
                    "user": f"{user}-{run}",
                    "conversation_id": conv,
                    "session": 1,
                    "turn": turn,
                    "speaker": role,
                    "text": text,
                    "sent_at": when,
                    "image_caption": None,
                }
            )
            sent_times[(f"{user}-{run}", text)] = when.replace("+00:00", "Z")
    write_jsonl(tmp_path / "data" / "chats.jsonl", rows)
    mapping = yaml.safe_load((ROOT / "schemas" / "mappings" / "sample.yaml").read_text())
    mapping["source"]["path"] = str(tmp_path / "data")
    config = {
        "sources": {"chats": mapping},
        "target": {"kind": "self-hosted", "base_url": "SET-BELOW"},
        "load": {"max_messages_per_request": 2, "concurrency": 2},
        "state": {"work_dir": str(tmp_path / "state")},
    }
    return tmp_path / "memos-etl.yaml", config, sent_times


def _cli(*args: str, config: Path) -> str:
    r = subprocess.run(
        [sys.executable, "-m", "memos_etl.cli", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def _report(text: str) -> dict:
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition("  ")
        if value.strip():
            out[key.strip()] = value.strip()
    return out


def _memories(base: str, user: str) -> list[dict]:
    r = requests.post(base + "/product/get_all", json={"user_id": user, "memory_type": "text_mem"}, timeout=60)
    r.raise_for_status()
    return [n for cube in r.json()["data"] for group in cube["memories"] for n in group["nodes"]]


def _wait_extracted(base: str, user: str, timeout: float = 180.0) -> list[dict]:
    """Until the user's memories are all past MemOS's fast stage (its background extraction
    replaces each `is_fast` memory with what the LLM extracted). /product/scheduler/wait is no
    help here: without Redis its task tracker is empty and it answers "idle" at once."""
    deadline = time.monotonic() + timeout
    while True:
        nodes = _memories(base, user)
        if nodes and not any(n["metadata"].get("is_fast") for n in nodes):
            return nodes
        if time.monotonic() > deadline:
            raise AssertionError(f"{user}: extraction not done after {timeout}s: {nodes}")
        time.sleep(1.0)


def test_sync_into_real_memos_search_finds_each_users_facts_and_rerun_adds_nothing(memos, tmp_path):
    from core.client import SelfHostedTarget

    run = f"{time.time_ns() % 10**8}"
    path, config, sent_times = _write_source(tmp_path, run)
    n_messages = len(sent_times)
    config["target"]["base_url"] = memos
    path.write_text(yaml.safe_dump(config))

    first = _report(_cli("sync", "chats", "--no-prefect", config=path))
    expected_requests = sum(-(-len(m) // 2) for m in CONVERSATIONS.values())
    assert first["status"] == "completed", first
    assert int(first["read"]) == n_messages and int(first["delivered"]) == n_messages, first
    assert int(first["add requests"]) == expected_requests and int(first["failed requests"]) == 0, first

    users = sorted({f"{u}-{run}" for u, _ in CONVERSATIONS})
    extracted = {u: _wait_extracted(memos, u) for u in users}

    # what MemOS kept: every message we sent, with the conversation as its session and the
    # original time as chat_time (in the memories' sources), under the right user only
    for user, nodes in extracted.items():
        sent = {(text, when) for (u, text), when in sent_times.items() if u == user}
        seen = set()
        for n in nodes:
            for src in n["metadata"].get("sources") or []:
                src = json.loads(src) if isinstance(src, str) else src
                if src.get("content"):
                    seen.add((src["content"], src.get("chat_time")))
        assert sent <= seen, (user, sent - seen)
        # provenance survives: `source` is a name MemOS drops from info, so it goes as etl_source
        infos = [n["metadata"].get("info") or {} for n in nodes]
        assert all(i.get("etl_source") == "sample-chats" and i.get("batch_key") for i in infos), infos
        sessions = {n["metadata"]["session_id"] for n in nodes}
        assert sessions == {c for u, c in CONVERSATIONS if f"{u}-{run}" == user}

    # verify: every request MemOS accepted made memories under its batch key (its own
    # duplicates, if any, are reported as `repeated`, not counted against us)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "memos_etl.cli",
            "verify",
            "chats",
            "--all",
            "--no-prefect",
            "--json",
            "--config",
            str(path),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert r.returncode in (0, 2), r.stdout + r.stderr
    verified = json.loads(r.stdout[r.stdout.index("{") :])
    assert verified["checked"] == expected_requests, verified
    assert verified["outcomes"].get("stored nothing", 0) == 0 and verified["outcomes"].get("ok", 0) > 0, verified
    assert verified["listings"] == len(users), verified  # one listing per user

    # our self-hosted adapter's search, through MemOS's own /product/search
    target = SelfHostedTarget(TargetConfig(kind="self-hosted", base_url=memos), None)
    checks = [
        ("ada", "What is my dog called?", "Pixel", "pets"),
        ("ben", "Where do I go climbing?", "Stanage", "climbing"),
        ("ben", "What bread do I bake?", "rye", "baking"),
        ("cy", "Which instrument am I learning?", "cello", "music"),
    ]
    for user, query, needle, conv in checks:
        hits = target.search(f"{user}-{run}", query, 5)
        assert any(
            needle.lower() in (h["memory_value"] or "").lower() and h["conversation_id"] == conv for h in hits
        ), (user, query, hits)
    # and nobody else's: ben's memories know nothing of Pixel
    assert not any(
        "pixel" in (h["memory_value"] or "").lower() for h in target.search(f"ben-{run}", "border collie Pixel", 10)
    )

    counts = {u: len(nodes) for u, nodes in extracted.items()}
    # a re-run adds nothing: unchanged files are skipped ...
    second = _report(_cli("sync", "chats", "--no-prefect", config=path))
    assert int(second["add requests"]) == 0 and int(second["read"]) == 0, second
    # ... and with the file manifest reset, every message is read again and the ledger drops it
    _cli("reset", "chats", "--yes", config=path)
    third = _report(_cli("sync", "chats", "--no-prefect", config=path))
    assert int(third["read"]) == n_messages and int(third["already delivered"]) == n_messages, third
    assert int(third["add requests"]) == 0, third
    time.sleep(3)  # anything sent would have produced fast memories by now
    assert {u: len(_memories(memos, u)) for u in users} == counts


def test_sync_add_mode_fine_extraction_answers_with_the_memories(memos, tmp_path):
    """async_mode false + mode fine: MemOS extracts before answering, so the memories are
    searchable as soon as the run ends, none left at the fast stage."""
    from core.client import SelfHostedTarget

    run = f"{time.time_ns() % 10**8}"
    path, config, sent_times = _write_source(tmp_path, run)
    config["target"].update(base_url=memos, async_mode=False, mode="fine")
    path.write_text(yaml.safe_dump(config))
    report = _report(_cli("sync", "chats", "--no-prefect", config=path))
    assert report["status"] == "completed" and int(report["delivered"]) == len(sent_times), report
    nodes = _memories(memos, f"cy-{run}")
    assert nodes and not any(n["metadata"].get("is_fast") for n in nodes)
    hits = SelfHostedTarget(TargetConfig(kind="self-hosted", base_url=memos), None).search(
        f"cy-{run}", "Which instrument am I learning?", 3
    )
    assert any("cello" in (h["memory_value"] or "") for h in hits), hits


def test_forget_leaves_no_memory_of_the_erased_user_or_conversation(memos, tmp_path):
    """`forget` through MemOS 2.0.33's own /product/delete_memory: a whole user, and one
    conversation of another; their memories are gone from the listing and from search, and
    stay gone once background extraction is over."""
    from core.client import SelfHostedTarget

    run = f"{time.time_ns() % 10**8}"
    path, config, sent_times = _write_source(tmp_path, run)
    config["target"]["base_url"] = memos
    path.write_text(yaml.safe_dump(config))
    _cli("sync", "chats", "--no-prefect", config=path)
    ada, ben = f"ada-{run}", f"ben-{run}"
    # forget does not wait for us: it waits for the fast stage itself before deleting
    _cli("erase", "--user", ada, "--yes", config=path)
    _cli("erase", "--user", ben, "--conversation", "baking", "--yes", config=path)
    target = SelfHostedTarget(TargetConfig(kind="self-hosted", base_url=memos), None)
    for _ in range(2):  # now, and after any extraction still running would have landed
        assert _memories(memos, ada) == []
        assert {n["metadata"]["session_id"] for n in _memories(memos, ben)} == {"climbing"}
        assert not any("pixel" in (h["memory_value"] or "").lower() for h in target.search(ada, "dog Pixel", 10))
        assert not any("rye" in (h["memory_value"] or "").lower() for h in target.search(ben, "rye bread", 10))
        time.sleep(5)
    # (that no later run loads them again is the same ledger code whatever the target:
    # tests/test_forget.py shows it against the dev-server)


def test_replace_leaves_no_memory_of_the_old_text(memos, tmp_path):
    """on_change: replace against MemOS 2.0.33: an edited conversation's memories are deleted
    and the conversation sent again; afterwards nothing MemOS holds for it says the old text."""
    from core.client import SelfHostedTarget

    run = f"{time.time_ns() % 10**8}"
    path, config, _ = _write_source(tmp_path, run)
    config["target"]["base_url"] = memos
    config["sources"]["chats"]["on_change"] = "replace"
    path.write_text(yaml.safe_dump(config))
    _cli("sync", "chats", "--no-prefect", config=path)
    ada = f"ada-{run}"
    assert any("Pixel" in json.dumps(n) for n in _wait_extracted(memos, ada))

    data = tmp_path / "data" / "chats.jsonl"
    rows = [json.loads(x) for x in data.read_text().splitlines()]
    for r in rows:  # ada's dog was never called Pixel: the source is corrected
        if r["user"] == ada and r["conversation_id"] == "pets":
            r["text"] = (
                r["text"]
                .replace("a border collie called Pixel", "a greyhound called Rocket")
                .replace("Pixel is a lovely name. Collies", "Rocket is a lovely name. Greyhounds")
                .replace("Pixel already fetches", "Rocket already fetches")
            )
    write_jsonl(data, rows)
    report = _report(_cli("sync", "chats", "--no-prefect", config=path))
    assert int(report["changed after delivery"].split()[0]) == 3, report
    assert report["rewritten conversations"].startswith("1:") and "completed" in report["rewritten conversations"]
    nodes = _wait_extracted(memos, ada)
    stale = [n for n in nodes if "pixel" in json.dumps(n).lower()]
    assert not stale, json.dumps(stale, indent=1)[:6000]  # no memory, no source
    assert {n["metadata"]["session_id"] for n in nodes} == {"pets", "garden"}
    assert any("rocket" in json.dumps(n).lower() for n in nodes if n["metadata"]["session_id"] == "pets")
    # and search shows nothing of the old text. (It is not required to find the new one: in 2 of
    # 5 full-module runs here /product/search answered [] for ada for a minute while the listing
    # above already held the rewritten memories; that was the failure that had this test
    # skipped. The listing is what says whether MemOS holds the old text.)
    hits = SelfHostedTarget(TargetConfig(kind="self-hosted", base_url=memos), None).search(ada, "my dog", 10)
    assert not any("pixel" in (h["memory_value"] or "").lower() for h in hits), hits


PROBES = {
    "valid": {"user_id": "probe", "session_id": "s", "messages": [{"role": "user", "content": "probe valid"}]},
    "bad role": {"user_id": "probe", "session_id": "s", "messages": [{"role": "robot", "content": "hi"}]},
    "content not text": {"user_id": "probe", "session_id": "s", "messages": [{"role": "user", "content": 5}]},
    "no content": {"user_id": "probe", "session_id": "s", "messages": [{"role": "user"}]},
    "user_id not text": {"user_id": 5, "session_id": "s", "messages": [{"role": "user", "content": "x"}]},
    "no user_id": {"session_id": "s", "messages": [{"role": "user", "content": "no user"}]},
    "no session_id": {"user_id": "probe", "messages": [{"role": "user", "content": "no session"}]},
    "empty messages": {"user_id": "probe", "session_id": "s", "messages": []},
    "blank content": {"user_id": "probe", "session_id": "s", "messages": [{"role": "user", "content": "  "}]},
    "300-char user": {"user_id": "u" * 300, "session_id": "s", "messages": [{"role": "user", "content": "long"}]},
    "not an object": [1, 2],
    "not JSON": "nope",
}


def _answer(base: str, body) -> tuple:
    data = body if isinstance(body, str) else json.dumps(body)
    r = requests.post(base + "/product/add", data=data, headers={"content-type": "application/json"}, timeout=60)
    env = r.json()
    shape = type(env.get("data")).__name__
    if isinstance(env.get("data"), list):
        shape += f"[{len(env['data'])}]" if not env["data"] else "[memory items]"
        assert all({"memory", "memory_id", "memory_type", "cube_id"} <= set(x) for x in env["data"])
    return r.status_code, env.get("code"), shape


def test_dev_server_answers_product_add_like_the_real_server(memos):
    with DevServer() as dev:
        for name, body in PROBES.items():
            assert _answer(dev.url, body) == _answer(memos, body), name


DELETE_PROBES = {
    "no mode": {},
    "by id": {"memory_ids": ["00000000-0000-0000-0000-000000000000"]},
    "by user": {"user_id": "nobody-here"},
    "by user and session": {"user_id": "nobody-here", "session_id": "s"},
}


def test_dev_server_answers_delete_memory_like_the_real_server(memos):
    def answer(base, body):
        r = requests.post(base + "/product/delete_memory", json=body, timeout=60)
        env = r.json()
        return r.status_code, env.get("code"), env.get("message"), env.get("data")

    with DevServer() as dev:
        for name, body in DELETE_PROBES.items():
            assert answer(dev.url, body) == answer(memos, body), name


class CuttingProxy:
    """A loopback HTTP proxy in front of MemOS that forwards everything but cuts one
    /product/add: `after` forwards it and drops the answer once MemOS has stored it; `before`
    drops the request before MemOS sees it. The client sees a dropped connection either way."""

    def __init__(self, upstream: str, mode: str):
        import http.server
        import socketserver
        import threading
        import urllib.request

        self.mode, self.cut, self.adds = mode, 0, 0
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                first_add = self.path == "/product/add" and proxy.cut == 0
                if self.path == "/product/add":
                    proxy.adds += 1
                if first_add and proxy.mode == "before":
                    proxy.cut += 1
                    self.connection.close()  # MemOS never sees it
                    return
                req = urllib.request.Request(
                    upstream + self.path, data=body, method="POST", headers={"content-type": "application/json"}
                )
                with urllib.request.urlopen(req, timeout=300) as r:
                    data, status = r.read(), r.status
                if first_add:  # stored by MemOS: the answer is lost on the way back
                    proxy.cut += 1
                    self.connection.close()
                    return
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


@pytest.mark.parametrize("mode", ["after", "before"])
def test_a_cut_answer_is_found_landed_and_a_cut_request_is_resent(memos, tmp_path, mode):
    """Against MemOS 2.0.33 through a proxy that cuts one add: cut after MemOS stored it, the
    request is found among the session's memories (info.batch_key) and not resent; cut before,
    it is found missing and sent again. Either way the run completes with 0 in doubt and no
    --resend-in-doubt, each request's memories are there once; then `rollback RUN` leaves
    none of the run's memories."""
    run = f"{time.time_ns() % 10**8}"
    path, config, sent_times = _write_source(tmp_path, run)
    proxy = CuttingProxy(memos, mode)
    try:
        config["target"]["base_url"] = proxy.url
        config["target"]["name"] = "memos-real"  # the same server, later reached without the proxy
        config["target"]["timeout_s"] = 60
        config["load"]["concurrency"] = 1
        path.write_text(yaml.safe_dump(config))
        report = _report(_cli("sync", "chats", "--no-prefect", config=path))
    finally:
        proxy.close()
    assert proxy.cut == 1
    assert report["status"] == "completed" and report["in doubt"] == "0", report
    landed, missing = (int(x) for x in re.findall(r"(\d+) landed, (\d+) missing", report["in-doubt checks"])[0])
    assert (landed, missing) == ((1, 0) if mode == "after" else (0, 1)), report
    import sqlite3

    with sqlite3.connect(tmp_path / "state" / "ledger.db") as c:
        delivered = {k for (k,) in c.execute("SELECT batch_key FROM batches WHERE status = 'delivered'")}
    # on the wire: each request reached MemOS once (cut before: that one was sent again)
    assert proxy.adds == len(delivered) + (1 if mode == "before" else 0)
    users = sorted({u for u, _ in sent_times})
    keys = set()
    for user in users:
        keys |= {n["metadata"]["info"]["batch_key"] for n in _wait_extracted(memos, user)}
    assert keys == delivered  # every delivered request, the cut one included, made memories
    run_id = report["run"]
    config["target"]["base_url"] = memos
    path.write_text(yaml.safe_dump(config))
    _cli("rollback", run_id, "--yes", config=path)
    for user in users:
        assert not [n for n in _memories(memos, user) if (n["metadata"].get("info") or {}).get("run_id") == run_id]


def test_dev_server_lists_memories_like_the_real_server(memos):
    """/product/get_memory as the adapter reads it: the envelope, text_mem[0] with its
    memories and total_nodes, each memory's id, session, info and sources (JSON text), on
    the real server and the dev-server alike; and get_memory without mem_cube_id is refused
    by both."""
    user = f"shape-{time.time_ns() % 10**8}"
    body = {
        "user_id": user,
        "session_id": "s1",
        "async_mode": "sync",
        "info": {"batch_key": "k1", "run_id": "r1"},
        "messages": [
            {"role": "user", "content": "My sister Lena lives in Graz."},
            {"role": "assistant", "content": "Graz is lovely."},
        ],
    }

    def shape(base: str):
        requests.post(base + "/product/add", json=body, timeout=120).raise_for_status()
        r = requests.post(
            base + "/product/get_memory",
            json={
                "mem_cube_id": user,
                "user_id": user,
                "page": 1,
                "page_size": 50,
                "include_preference": False,
                "include_tool_memory": False,
                "include_skill_memory": False,
            },
            timeout=60,
        )
        env = r.json()
        cube = env["data"]["text_mem"][0]
        nodes = cube["memories"]
        assert nodes and cube["total_nodes"] == len(nodes)
        for n in nodes:
            meta = n["metadata"]
            assert meta["session_id"] == "s1" and meta["info"] == body["info"]
            assert all(isinstance(x, str) and json.loads(x)["role"] in ("user", "assistant") for x in meta["sources"])
        bad = requests.post(base + "/product/get_memory", json={"user_id": user}, timeout=60)
        return (
            r.status_code,
            env["code"],
            sorted(env["data"]),
            sorted(cube),
            {k for n in nodes for k in n},
            bad.status_code,
        )

    with DevServer() as dev:
        assert shape(dev.url) == shape(memos)
