"""The fleet-wide rate limit kept in the state store (load.fleet_limit with the state-store
limiter, core/ledger/ratelimits.py), for real: several processes sharing one bucket in one
ledger (PostgreSQL, and one SQLite file) never send more than burst + rate x window in any
window, and wait rather than fail; two `memos-etl sync --no-prefect` processes with
load.fleet_limit deliver exactly into a dev-server that refuses anything faster than the limit,
and it refuses nothing; a run told to stop (SIGTERM) stops waiting for its booked turn at once;
`fleet_limiter: auto` decides without importing Prefect where nothing could point it at an API."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from bisect import bisect_left

import pytest
import sqlalchemy as sa
import yaml

from core.config.run import LoadConfig
from core.ledger import Ledger
from core.ledger.ratelimits import Bucket
from core.limiter import StateStoreFleetLimiter
from tests.conftest import ROOT
from tests.helpers import (
    chat_rows,
    expected_from_rows,
    expected_messages,
    fleet_config,
    sample_mapping_at,
    set_faults,
    stats,
    stored_messages,
    write_jsonl,
)

RPS, TPM, TOKEN_WINDOW_S, MAX_TOKENS = 20.0, 30_000.0, 2.0, 1_500
PROCESSES, SEND_S = 4, 6.0

# one process of the fleet: from `start` (wall clock) until `until`, acquire for requests of a
# random size and note when each was let through; prints those times as JSON
WORKER = """
import json, random, sys, time
from core.ledger import Ledger
from core.limiter import StateStoreFleetLimiter

url, seed, start, until = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
rps, tpm, window, max_tokens = (float(a) for a in sys.argv[5:9])
ledger = Ledger(url)
fleet = StateStoreFleetLimiter(ledger, "shared", rps, tpm, int(max_tokens), token_window_s=window)
rng = random.Random(seed)
sends, waited = [], 0.0
time.sleep(max(0.0, start - time.time()))
while time.time() < until:
    n = rng.randint(200, 1400)
    waited += fleet.acquire(n)
    sends.append((time.time(), n))
ledger.close()
print(json.dumps({"sends": sends, "waited": waited, "takes": fleet.takes}))
"""


def most_in_a_window(sends: list[tuple[float, int]], window: float) -> tuple[int, int]:
    """The most requests, and the most tokens, sent in any `window` seconds (windows starting
    at each send: the busiest window starts at one)."""
    times = [t for t, _ in sends]
    prefix = [0]
    for _, n in sends:
        prefix.append(prefix[-1] + n)
    most_requests = most_tokens = 0
    for i, t in enumerate(times):
        j = bisect_left(times, t + window)
        most_requests = max(most_requests, j - i)
        most_tokens = max(most_tokens, prefix[j] - prefix[i])
    return most_requests, most_tokens


@pytest.fixture(params=["postgresql", "sqlite"])
def ledger_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"  # several processes on one machine, one file
    return request.getfixturevalue("pg_ledger_url")


def test_processes_sharing_one_bucket_stay_under_every_window(ledger_url):
    ledger = Ledger(ledger_url)
    fleet = StateStoreFleetLimiter(ledger, "shared", RPS, TPM, MAX_TOKENS, token_window_s=TOKEN_WINDOW_S)
    fleet.ensure()  # full now, and idle for seconds before the fleet starts: a refill without its
    ledger.close()  # cap would hold far more than the burst by then
    start = time.time() + 4.0
    until = start + SEND_S
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [str(a) for a in (start, until, RPS, TPM, TOKEN_WINDOW_S, MAX_TOKENS)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, ledger_url, str(i), *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(PROCESSES)
    ]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err[-3000:]  # every process waited its turn: none failed
        results.append(json.loads(out))
    sends = sorted(s for r in results for s in r["sends"])
    assert all(r["sends"] for r in results), "a process never got a request through"
    assert sum(r["waited"] for r in results) > PROCESSES * SEND_S * 0.5  # they waited, not failed

    # the bucket's own bound: burst + rate x window in any window, with a little room for the
    # time between the database's take and the process noting it
    slack = 0.05
    req_bound = fleet.req_burst + fleet.req_rate * (1.0 + slack)
    tok_bound = fleet.tok_burst + fleet.tok_rate * (TOKEN_WINDOW_S + slack)
    most_requests, _ = most_in_a_window(sends, 1.0)
    _, most_tokens = most_in_a_window(sends, TOKEN_WINDOW_S)
    print(
        f"{len(sends)} requests, {sum(n for _, n in sends)} tokens in {SEND_S}s from {PROCESSES} processes; "
        f"busiest 1 s: {most_requests} requests (bound {req_bound:.1f}, server limit {RPS:g}); "
        f"busiest {TOKEN_WINDOW_S:g} s: {most_tokens} tokens (bound {tok_bound:.0f}, limit {TPM:g}); "
        f"statements per request {sum(r['takes'] for r in results) / len(sends):.2f}"
    )
    assert most_requests <= req_bound and most_requests <= RPS
    assert most_tokens <= tok_bound and most_tokens <= TPM
    # ... and not far under it: the fleet gets the rate it is allowed (tokens bind here)
    span = sends[-1][0] - sends[0][0]
    allowed = min(fleet.req_burst + fleet.req_rate * span, (fleet.tok_burst + fleet.tok_rate * span) / 800)
    assert len(sends) >= 0.7 * allowed, (len(sends), allowed)


def test_two_cli_runs_share_the_rate_through_the_ledger(dev_server, pg_ledger_url, tmp_path):
    rps = 12
    set_faults(dev_server.url, latency_ms=20, rps=rps)  # the server refuses anything faster
    sources, want = {}, {}
    for name in ("left", "right"):
        rows = chat_rows(12, 16, prefix=f"{name}-c", user=f"{name}-u")
        write_jsonl(tmp_path / name / "chats.jsonl", rows)
        mapping = sample_mapping_at(tmp_path, tmp_path / name, name=f"{name}.yaml")
        body = yaml.safe_load(mapping.read_text())
        body["source"]["name"] = name
        mapping.write_text(yaml.safe_dump(body))
        sources[name] = str(mapping)
        want.update(expected_from_rows(rows)[0])
    # fleet_limiter auto: no Prefect API here, so the state store
    cfg = fleet_config(tmp_path / "fleet.yaml", sources, dev_server.url, rps, pg_ledger_url)
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "memos_etl.cli", "sync", name, "-c", str(cfg), "--no-prefect", "--json"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in sources
    ]
    for p in runs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, out[-2000:] + err[-3000:]
        report = json.loads(out[out.index("{") :])
        assert report["status"] == "completed" and report["counts"]["delivered"] == 192, report

    assert stored_messages(dev_server.url) == want  # every message once, in order
    s = stats(dev_server.url)
    throttled = sum(c["count"] for c in s["by_code"] if c["code"] in (40300, 40309))
    assert throttled == 0 and s["add_ok"] == s["add_requests"] == 96, s
    # what the server saw: its busiest second, and the two runs sending at the same time
    hits = sorted(
        t for (t,) in dev_server.store.query("SELECT at FROM hits WHERE route IN ('/add/message', '/product/add')")
    )
    busiest = max(bisect_left(hits, t + 1.0) - i for i, t in enumerate(hits))
    rows = dev_server.store.query("SELECT user_id, min(created_at), max(created_at) FROM messages GROUP BY user_id")
    spans = {side: [(lo, hi) for u, lo, hi in rows if u.startswith(side)] for side in sources}
    left = (min(lo for lo, _ in spans["left"]), max(hi for _, hi in spans["left"]))
    right = (min(lo for lo, _ in spans["right"]), max(hi for _, hi in spans["right"]))
    overlap = min(left[1], right[1]) - max(left[0], right[0])
    print(
        f"96 requests over {hits[-1] - hits[0]:.1f}s ({len(hits) / (hits[-1] - hits[0]):.1f}/s), busiest second "
        f"{busiest} (limit {rps}); the two runs sent together for {overlap:.1f}s"
    )
    assert busiest <= rps
    assert overlap > 3.0, "the two runs did not send at the same time: nothing was shared"
    eng = sa.create_engine(pg_ledger_url)
    with eng.connect() as c:  # auto chose the ledger: the limit's row is there
        assert c.execute(sa.text("SELECT name FROM rate_limits")).scalars().all() == ["memos-etl-test"]
    eng.dispose()


def test_config_picks_the_state_store(tmp_path):
    from core.config.run import LoadConfig
    from core.limiter import fleet_limiter

    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    assert fleet_limiter(LoadConfig(), ledger) is None  # no fleet_limit: per process only
    fleet = fleet_limiter(LoadConfig(fleet_limit="shared", fleet_limiter="state_store", token_window_s=2.0), ledger)
    assert isinstance(fleet, StateStoreFleetLimiter)
    assert fleet.tok_rate == (400_000 * 0.97 - fleet.tok_burst) / 2.0  # the run's token window
    assert fleet.acquire(100) < 0.05 and fleet.takes == 1  # a full bucket: no wait, one statement
    with pytest.raises(ValueError):
        LoadConfig(fleet_limiter="redis")
    ledger.close()


# a `memos-etl` CLI that says at exit whether Prefect was imported (the last line of stderr)
CLI_NOTING_PREFECT = """
import atexit, runpy, sys
atexit.register(lambda: print(f"prefect imported: {'prefect' in sys.modules}", file=sys.stderr))
sys.argv[0] = "memos-etl"
runpy.run_module("memos_etl.cli", run_name="__main__", alter_sys=True)
"""


def test_sigterm_ends_a_wait_for_the_fleet_at_once_and_leaves_the_rest_pending(dev_server, tmp_path):
    """A fleet of one request a second (spaced 2 s: core/limiter.py), four lanes; once the first
    request is sent, another worker of the fleet (this test, on the same ledger) books ten turns,
    so the run's other lanes book theirs 20 s and more ahead. SIGTERM then drains the run in
    about a second (it used to sleep out its bookings); nothing more is sent, the rest is
    pending, and Prefect is never imported (auto chose the state store without asking it)."""
    data = tmp_path / "data"
    write_jsonl(data / "a.jsonl", chat_rows(conversations=8, turns=4))
    mapping = sample_mapping_at(tmp_path, data)
    cfg = tmp_path / "run.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "target": {"base_url": dev_server.url},
                "load": {
                    "max_messages_per_request": 4,
                    "concurrency": 4,
                    "buckets": 4,
                    "requests_per_second": 1,
                    "tokens_per_minute": 0,
                    "fleet_limit": "slow",
                },
                "state": {"work_dir": str(tmp_path / "state")},
            }
        )
    )
    home = tmp_path / "prefect-home"  # no profile, no PREFECT_API_URL: nothing names a Prefect API
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(home), PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-c", CLI_NOTING_PREFECT, "sync", str(mapping), "-c", str(cfg), "--no-prefect", "--json"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while stats(dev_server.url)["add_requests"] == 0:
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        other = StateStoreFleetLimiter(
            Ledger(f"sqlite:///{tmp_path / 'state' / 'ledger.db'}"), "slow", 1, 0, LoadConfig().max_tokens_per_request
        )
        for _ in range(10):  # another worker's turns, booked without waiting for them
            other.store.take_rate(
                "slow", Bucket(1, other.req_burst, other.req_rate), Bucket(0, other.tok_burst, other.tok_rate)
            )
        time.sleep(2.0)  # the other lanes pass the per-process limiter (1 a second) and book their turns
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        stopping = time.monotonic()
        out, err = proc.communicate(timeout=60)
        drained_s = time.monotonic() - stopping
    finally:
        if proc.poll() is None:
            proc.kill()
    print(f"drained {drained_s:.2f}s after SIGTERM")
    assert proc.returncode == 3, out + err[-3000:]
    report = json.loads(out[out.index("{") :])
    counts = report["counts"]
    assert report["status"] == "interrupted"
    assert counts["delivered"] == 4 and counts["pending"] == 28, counts  # one request sent, the rest waits
    assert stats(dev_server.url)["add_requests"] == 1
    assert drained_s < 5.0, f"the run slept out its booked turns: {drained_s:.1f}s"
    assert err.rstrip().endswith("prefect imported: False"), err[-2000:]

    # the next run sends the rest, once and in order
    body = yaml.safe_load(cfg.read_text())
    body["load"].pop("fleet_limit")
    body["load"]["requests_per_second"] = 0
    cfg.write_text(yaml.safe_dump(body))
    again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr[-3000:]
    assert stored_messages(dev_server.url) == expected_messages([data / "a.jsonl"])[0]


# where the limiter's choice is made: prints reports_to_prefect() and whether Prefect got imported
CHOICE = """
import sys
from core.limiter import reports_to_prefect
print(reports_to_prefect(), "prefect" in sys.modules)
"""


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        (None, "False False"),  # nothing names an API: decided without Prefect
        ("env", "True True"),  # PREFECT_API_URL: Prefect's limits, as before
        ("profile with an API", "True True"),  # the active profile sets one: asked, and yes
        ("profile without one", "False True"),  # a profiles file exists: asked, and no
    ],
)
def test_auto_asks_prefect_only_where_an_api_could_be_configured(tmp_path, setting, expected):
    home = tmp_path / "prefect-home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(home), PYTHONPATH=str(ROOT))
    if setting == "env":
        env["PREFECT_API_URL"] = "http://127.0.0.1:9/api"
    elif setting is not None:
        url = 'PREFECT_API_URL = "http://127.0.0.1:9/api"' if setting == "profile with an API" else ""
        (home / "profiles.toml").write_text(f'active = "mine"\n\n[profiles.mine]\n{url}\n')
    out = subprocess.run([sys.executable, "-c", CHOICE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split("\n")[-2] == expected


@pytest.mark.parametrize("limit", [1, 1.5, 2, 3, 20, 100])
def test_a_small_request_limit_is_spaced_under_it_not_cut_to_a_tenth(limit):
    """With a burst of one request, requests come at least 1/rate apart, so a 1 s window holds
    at most 1 + floor(rate) of them: that stays within the limit, and a limit of 1 a second gets
    about one request every 2 s (it once got one every 10 s)."""
    fleet = StateStoreFleetLimiter(None, "x", limit, 0, 1000)
    assert fleet.req_burst == 1
    assert 1 + int(fleet.req_rate) <= limit
    assert fleet.req_rate >= limit * 0.97 / 2
