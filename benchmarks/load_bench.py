"""Load throughput against the limits: our sync, the quick-start loop, 10 threads unthrottled.

The dev-server runs in its own process with a set latency and both MemOS limits enforced
(requests per second, tokens per window). Each loader runs for the same `duration` on the
same data; the share of the ceiling is the tokens the server accepted in that time divided
by what the token limit allows in it (tokens_per_window x duration / window). The token
window is shortened (MemOS: 60 s) so several windows fit in seconds; our limiter is told
the same window, and counts tokens the way the server does (UTF-8 bytes / 3).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow.parquet as pq
import requests

from core.config import RunConfig, load_mapping

ROOT = Path(__file__).resolve().parent.parent


class Server:
    def __init__(self, port: int):
        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "memos_etl.cli", "dev-server", "--port", str(port), "--db", ":memory:"],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                requests.get(self.url + "/_dev/stats", timeout=1)
                return
            except requests.RequestException:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError("dev-server did not start")

    def reset(self, **faults) -> None:
        requests.post(self.url + "/_dev/reset", timeout=10).raise_for_status()
        requests.post(self.url + "/_dev/faults", json=faults, timeout=10).raise_for_status()

    def outcome(self, duration: float) -> dict:
        msgs = requests.get(self.url + "/_dev/messages", timeout=60).json()
        stats = requests.get(self.url + "/_dev/stats", timeout=10).json()
        rejected = sum(c["count"] for c in stats["by_code"] if c["code"] in (40300, 40309))
        if not msgs:
            return {"tokens": 0, "messages": 0, "rejected": rejected, "duplicates": 0, "requests": 0}
        t0 = min(m["created_at"] for m in msgs)
        inside = [m for m in msgs if m["created_at"] < t0 + duration]
        seen: set = set()
        dups = 0
        for m in msgs:
            k = (m["user_id"], m["conversation_id"], m["content"])
            dups += k in seen
            seen.add(k)
        return {
            "tokens": sum(math.ceil(len(m["content"].encode()) / 3) for m in inside),
            "messages": len(inside),
            "rejected": rejected,
            "duplicates": dups,
            "requests": stats["add_ok"],
        }

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def requests_of(mapping_path: Path) -> list[dict]:
    """The dataset as quick-start request bodies: one per conversation (20 messages)."""
    m = load_mapping(mapping_path)
    convs: dict = {}
    for f in sorted(Path(m.source.path).glob("*.parquet")):
        for r in pq.read_table(f).to_pylist():
            convs.setdefault((r["user"], r["conversation_id"]), []).append(
                {"role": r["speaker"], "content": r["text"], "chat_time": r["sent_at"].isoformat()}
            )
    return [{"user_id": u, "conversation_id": c, "messages": msgs} for (u, c), msgs in convs.items()]


def plain_loop(url: str, bodies: list[dict], duration: float) -> None:
    """The MemOS quick start: one request after another, no rate control, no retry."""
    s = requests.Session()
    end = time.monotonic() + duration
    for b in bodies:
        if time.monotonic() >= end:
            return
        s.post(url + "/add/message", json=b, timeout=30)


def threads_loop(url: str, bodies: list[dict], duration: float, threads: int = 10) -> None:
    """What MemOS's evaluation scripts do: a thread pool, no rate control."""
    end = time.monotonic() + duration
    local = threading.local()

    def send(b):
        if time.monotonic() >= end:
            return
        if not hasattr(local, "s"):
            local.s = requests.Session()
        local.s.post(url + "/add/message", json=b, timeout=30)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(send, bodies))


def ours(url: str, mapping_path: Path, work: Path, duration: float, limits: dict, concurrency: int) -> dict:
    """Our sync, stopped after `duration` seconds of sending (a drain, like SIGTERM)."""
    from core import shutdown
    from flows.runner import run

    cfg = RunConfig()
    cfg.target.base_url = url
    cfg.target.name = f"bench-{time.time_ns()}"
    cfg.target.new_target = True  # a fresh dev-server each time: a different MemOS, on purpose
    cfg.state.work_dir = str(work)
    cfg.load.concurrency = concurrency
    cfg.load.requests_per_second = limits["rps"]
    cfg.load.tokens_per_minute = limits["tokens_per_window"]
    cfg.load.token_window_s = limits["window_s"]
    cfg.load.bytes_per_token = 3
    cfg.load.message_overhead_tokens = 0
    cfg.load.request_overhead_tokens = 0
    started = threading.Event()

    def progress(phase, done, total):
        if phase == "load":
            started.set()

    def stopper():
        started.wait()
        time.sleep(duration + 0.5)
        shutdown.requested.set()

    t = threading.Thread(target=stopper, daemon=True)
    t.start()
    try:
        report = run(load_mapping(mapping_path), cfg, progress=progress)
    finally:
        shutdown.requested.clear()
    return report.to_dict()["counts"]


def bench(
    mapping_path: Path, work: Path, port: int, duration: float = 15.0, sweep=(1, 2, 4, 8, 16), latency_ms: float = 50.0
) -> dict:
    limits = {"rps": 40, "tokens_per_window": 150_000, "window_s": 5.0}
    faults = {
        "latency_ms": latency_ms,
        "rps": limits["rps"],
        "tokens_per_minute": limits["tokens_per_window"],
        "token_window_s": limits["window_s"],
    }
    # a sliding window admits a full window's worth at its start: over a run of whole windows
    # the most the server can accept is tokens_per_window x windows
    windows = max(1, round(duration / limits["window_s"]))
    duration = windows * limits["window_s"]
    ceiling = limits["tokens_per_window"] * windows
    bodies = requests_of(mapping_path)
    server = Server(port)
    out: dict = {
        "limits": {
            **limits,
            "latency_ms": latency_ms,
            "duration_s": duration,
            "tokens_per_minute_equivalent": limits["tokens_per_window"] * 60 / limits["window_s"],
        },
        "loaders": {},
        "sweep": {},
    }
    try:
        for name, fn in (
            ("quick-start loop", lambda: plain_loop(server.url, bodies, duration)),
            ("10 threads, no rate control", lambda: threads_loop(server.url, bodies, duration)),
        ):
            server.reset(**faults)
            fn()
            o = server.outcome(duration)
            out["loaders"][name] = {**o, "share": o["tokens"] / ceiling}
        for c in sweep:
            server.reset(**faults)
            counts = ours(server.url, mapping_path, work / f"c{c}", duration, limits, c)
            o = server.outcome(duration)
            out["sweep"][c] = {**o, "share": o["tokens"] / ceiling, "throttled": counts["throttled"]}
        best = max(out["sweep"], key=lambda c: out["sweep"][c]["share"])
        out["loaders"][f"memos-etl (concurrency {best})"] = out["sweep"][best]
    finally:
        server.stop()
    return out


if __name__ == "__main__":
    print(json.dumps(bench(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])), indent=2))
