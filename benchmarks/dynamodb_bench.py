"""The DynamoDB source (tasks/extract/dynamodb.py) through the langchain-dynamodb preset: items
in LangChain's DynamoDBChatMessageHistory shape (SessionId, a History list of message_to_dict
maps; written here with batch_write_item) in moto's DynamoDB server, started in a process of its
own on loopback. Peak RSS of a dry run at SMALL and at `n` sessions of PER messages (bound:
1.2x: memory follows a page of items, not the table), and the dry run's msg/min against the
flat Parquet dry run of as many messages (benchmarks/data.py). moto answers from Python, a page
at a time: the rate says more about moto than about DynamoDB, and is a floor for the reader.

    uv run python -m benchmarks.dynamodb_bench 100000
"""

from __future__ import annotations

import json
import os
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
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_EC2_METADATA_DISABLED": "true"}


def server() -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(400):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("moto's server did not start")


def _message(kind: str, text: str, ident: str) -> dict:
    return {
        "M": {"type": {"S": kind}, "data": {"M": {"content": {"S": text}, "type": {"S": kind}, "id": {"S": ident}}}}
    }


def fill(endpoint: str, table: str, sessions: int) -> None:
    import boto3

    db = boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1")
    db.create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "SessionId", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "SessionId", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    batch = []
    for s in range(sessions):
        history = []
        for i in range(PER):
            kind = "human" if i % 2 == 0 else "ai"
            text = f"session {s} message {i}: " + "the quick brown fox jumps over the lazy dog " * 3
            history.append(_message(kind, text, f"m-{s}-{i}"))
        item = {"SessionId": {"S": f"u{s % 500}:s{s}"}, "History": {"L": history}}
        batch.append({"PutRequest": {"Item": item}})
        if len(batch) == 25:  # BatchWriteItem's most
            db.batch_write_item(RequestItems={table: batch})
            batch = []
    if batch:
        db.batch_write_item(RequestItems={table: batch})


def mapping(base: Path, endpoint: str, table: str, sessions: int) -> Path:
    m = base / f"dynamodb-{sessions}.yaml"
    src = {"name": f"dynamodb-{sessions}", "dynamodb": {"table": table, "endpoint_url": endpoint}}
    m.write_text(yaml.safe_dump({"preset": "langchain-dynamodb", "source": src}))
    return m


def run(base: Path, n: int, peak, log=print, small: int = SMALL, rate: bool = True) -> dict:
    """`peak(mapping, work)` measures a dry run's peak RSS in its own process (benchmarks.run);
    `rate` false: the peaks alone (moto's scan of 100k items takes minutes a pass)."""
    base.mkdir(parents=True, exist_ok=True)
    for k, v in CREDENTIALS.items():
        os.environ.setdefault(k, v)
    proc, endpoint = server()
    try:
        out: dict = {"sessions": n, "small": small, "messages": n * PER}
        maps = {}
        for size in (small, n):
            table = f"Sessions{size}"
            fill(endpoint, table, size)
            maps[size] = mapping(base, endpoint, table, size)
        speed = ""
        if rate:
            flat = generate(base / f"dynamodb-flat-{n * PER}", n * PER, turns=PER)
            planned_rate(maps[small], base / "work-dynamodb-warm")  # imports, first connection
            flat_runs = (planned_rate(flat, base / "work-dynamodb-flat") for _ in range(2))
            out["flat"] = max(flat_runs, key=lambda r: r["per_min"])
            out["dynamodb"] = planned_rate(maps[n], base / "work-dynamodb-plan")
            out["ratio"] = out["dynamodb"]["per_min"] / out["flat"]["per_min"]
            speed = (
                f"{out['dynamodb']['per_min'] / 1e6:.3f}M msg/min (planned {out['dynamodb']['planned']:,}), "
                f"flat Parquet {out['flat']['per_min'] / 1e6:.2f}M: {out['ratio']:.3f} of flat; "
            )
        out["peak_small"] = peak(maps[small], base / "mem-dynamodb-small")["peak_rss_bytes"]
        out["peak"] = peak(maps[n], base / "mem-dynamodb")["peak_rss_bytes"]
        out["peak_ratio"] = out["peak"] / out["peak_small"]
        log(
            f"dynamodb {n:,} sessions ({n * PER:,} messages, moto): {speed}peak RSS {out['peak'] / 2**20:.0f} MiB, "
            f"{out['peak_ratio']:.2f}x that at {small:,} sessions ({out['peak_small'] / 2**20:.0f} MiB)"
        )
        return out
    finally:
        proc.kill()  # moto's server takes its time over SIGTERM; it holds nothing worth a clean stop
        proc.wait(timeout=10)


def rows(m: dict) -> list[tuple[str, str, str, str]]:
    """Rows for the results table."""
    out = []
    if "dynamodb" in m:
        out.append(
            (
                f"DynamoDB (langchain-dynamodb, moto) dry run, {m['sessions']:,} sessions of {PER} messages",
                f"{m['dynamodb']['per_min'] / 1e6:.3f}M msg/min, flat Parquet {m['flat']['per_min'] / 1e6:.2f}M",
                f"{m['ratio']:.3f} of flat (moto's paged scan re-reads the table from its start each page)",
                "reported",
            )
        )
    out.append(
        (
            f"DynamoDB dry run peak RSS, {m['small']:,} vs {m['sessions']:,} sessions",
            f"{m['peak_small'] / 2**20:.0f} / {m['peak'] / 2**20:.0f} MiB",
            f"{m['peak_ratio']:.2f}x",
            "<= 1.2x",
        )
    )
    return out


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    from benchmarks.run import peak

    res = run(Path(tempfile.gettempdir()) / "memos-etl-bench", n, peak, rate="--peaks" not in sys.argv)
    print(json.dumps(res, indent=2, default=str))
