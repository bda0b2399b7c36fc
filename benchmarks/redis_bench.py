"""The Redis source (tasks/extract/redis.py) through the langchain-redis preset: LangChain's
RedisChatMessageHistory lists (LPUSHed JSON of message_to_dict, written here with redis-py
pipelines in the library's own shape) in a redis-server this benchmark starts and stops.
Peak RSS of a dry run at SMALL and at `n` sessions of PER messages (bound: 1.2x: memory
follows a page of keys, not the keyspace), the dry run's msg/min against the flat Parquet
dry run of the same shape (as many messages, conversations of PER, benchmarks/data.py), and
the flat Parquet dry run's own peak at the two sizes (one file each): both grew with the
number of conversations while a loader cut a whole bucket into requests at once
(tasks/load/send.py, Sending.send_all).

    uv run python -m benchmarks.redis_bench 100000

`benchmarks.run` runs it as its `redis` part (`--quick`: 20,000 against 2,000 sessions).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from benchmarks.data import generate
from benchmarks.pipeline_bench import planned_rate
from memos_etl.devserver import free_port

PER = 4  # messages a session: human, ai, human, ai
SMALL = 10_000


def server(base: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    args = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen([*args, "--dir", str(base)], stdout=subprocess.DEVNULL)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("redis-server did not start")


def _dump(kind: str, text: str, ident: str) -> str:
    return json.dumps({"type": kind, "data": {"content": text, "type": kind, "id": ident, "additional_kwargs": {}}})


def fill(url: str, sessions: int) -> None:
    import redis

    r = redis.Redis.from_url(url)
    r.flushdb()
    pipe = r.pipeline(transaction=False)
    for s in range(sessions):
        for i in range(PER):
            kind = "human" if i % 2 == 0 else "ai"
            text = f"session {s} message {i}: " + "the quick brown fox jumps over the lazy dog " * 3
            pipe.lpush(f"message_store:u{s % 500}:s{s}", _dump(kind, text, f"m-{s}-{i}"))
        if s % 2000 == 1999:
            pipe.execute()
    pipe.execute()
    r.close()


def mapping(base: Path, url: str, sessions: int) -> Path:
    m = base / f"redis-{sessions}.yaml"
    body = {"preset": "langchain-redis", "source": {"name": f"redis-{sessions}", "redis": {"url": url}}}
    m.write_text(yaml.safe_dump(body))
    return m


def run(base: Path, n: int, peak, small: int = SMALL, log=print) -> dict:
    """The measures above at `small` and `n` sessions; `peak(mapping, work)` is
    benchmarks.run's peak RSS of a dry run in a process of its own."""
    base.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="memos-etl-redis-bench-"))
    proc, port = server(tmp)
    try:
        out: dict = {"sessions": n, "small": small, "messages": n * PER}
        maps = {}
        for db, size in ((1, small), (2, n)):
            url = f"redis://127.0.0.1:{port}/{db}"
            fill(url, size)
            maps[size] = mapping(base, url, size)
        flat = {size: generate(base / f"flat{PER}-{size * PER}", size * PER, files=1, turns=PER) for size in (small, n)}
        planned_rate(maps[small], base / "work-redis-warm")  # imports, first connection
        out["flat"] = max(
            (planned_rate(flat[n], base / "work-redis-flat") for _ in range(2)), key=lambda r: r["per_min"]
        )
        out["redis"] = max(
            (planned_rate(maps[n], base / "work-redis-plan") for _ in range(2)), key=lambda r: r["per_min"]
        )
        out["ratio"] = out["redis"]["per_min"] / out["flat"]["per_min"]
        out["peak_small"] = peak(maps[small], base / "mem-redis-small")["peak_rss_bytes"]
        out["peak"] = peak(maps[n], base / "mem-redis")["peak_rss_bytes"]
        out["peak_ratio"] = out["peak"] / out["peak_small"]
        out["flat_peak_small"] = peak(flat[small], base / "mem-flat-small")["peak_rss_bytes"]
        out["flat_peak"] = peak(flat[n], base / "mem-flat")["peak_rss_bytes"]
        out["flat_peak_ratio"] = out["flat_peak"] / out["flat_peak_small"]
        log(
            f"redis {n:,} sessions ({n * PER:,} messages): {out['redis']['per_min'] / 1e6:.2f}M msg/min "
            f"(planned {out['redis']['planned']:,}), flat Parquet {out['flat']['per_min'] / 1e6:.2f}M: "
            f"{out['ratio']:.2f} of flat; peak RSS {out['peak'] / 2**20:.0f} MiB, "
            f"{out['peak_ratio']:.2f}x that at {small:,} sessions ({out['peak_small'] / 2**20:.0f} MiB); "
            f"flat Parquet {out['flat_peak'] / 2**20:.0f} MiB, {out['flat_peak_ratio']:.2f}x"
        )
        return out
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)


def rows(m: dict) -> list[tuple[str, str, str, str]]:
    """Rows for the results table."""
    mib = 2**20
    return [
        (
            f"Redis (langchain-redis) dry run, {m['sessions']:,} sessions of {PER} messages",
            f"{m['redis']['per_min'] / 1e6:.2f}M msg/min, flat Parquet of the same shape "
            f"{m['flat']['per_min'] / 1e6:.2f}M",
            f"{m['ratio']:.2f} of flat",
            "reported",
        ),
        (
            f"Redis dry run peak RSS, {m['small']:,} vs {m['sessions']:,} sessions",
            f"{m['peak_small'] / mib:.0f} / {m['peak'] / mib:.0f} MiB",
            f"{m['peak_ratio']:.2f}x",
            "<= 1.2x",
        ),
        (
            f"flat Parquet dry run peak RSS, {m['small']:,} vs {m['sessions']:,} conversations of {PER} (one file)",
            f"{m['flat_peak_small'] / mib:.0f} / {m['flat_peak'] / mib:.0f} MiB",
            f"{m['flat_peak_ratio']:.2f}x",
            "<= 1.2x",
        ),
    ]


if __name__ == "__main__":
    from benchmarks.run import peak

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    res = run(Path(tempfile.gettempdir()) / "memos-etl-bench", n, peak)
    print(json.dumps(res, indent=2, default=str))
