"""One conversation of millions of messages, dry run: peak memory and throughput against the
same kind of input spread over many short conversations.

A group chat or support channel exported over years is one conversation. Its bucket is
ordered from sorted runs on disk (tasks/order.py), so the peak should not grow with it.
Data: flat JSONL in the bundled sample's shape (message_id, user, conversation_id, session,
turn, speaker, text, sent_at, image_caption), FILE_ROWS messages a file. The long
conversation's messages are dealt round-robin over its files (each file in order, the
bucket not), as several overlapping exports of one channel would be.

    uv run python -m benchmarks.conversation_bench [--quick]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import yaml

from benchmarks.data import TURNS, WORDS

ROOT = Path(__file__).resolve().parent.parent
FILE_ROWS = 100_000  # messages a file at every size: the reader's batches are the same


def generate_jsonl(out: Path, messages: int, one_conversation: bool, seed: int = 7) -> Path:
    """`messages` rows of sample-shaped JSONL under out/data, in one conversation or in
    conversations of TURNS messages; returns the mapping file (the sample mapping's fields)."""
    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    phrases = np.array([" ".join(rng.choice(WORDS, 24)) for _ in range(997)])
    files = max(1, -(-messages // FILE_ROWS))
    for f in range(files):
        if one_conversation:  # round-robin: file f holds messages f, f + files, f + 2 * files, ...
            i = np.arange(f, messages, files, dtype=np.int64)
            conv, turn = np.zeros(len(i), dtype=np.int64), i + 1
        else:
            i = np.arange(f * FILE_ROWS, min(messages, (f + 1) * FILE_ROWS), dtype=np.int64)
            conv, turn = i // TURNS, i % TURNS + 1
        sent = np.datetime64("2024-01-01T00:00:00", "s") + (conv * 3600 + turn * 30).astype("timedelta64[s]")
        s = pa.array
        line = pc.binary_join_element_wise(
            '{"message_id": "m',
            s(i).cast(pa.string()),
            '", "user": "u',
            s(conv % 5000).cast(pa.string()),
            '", "conversation_id": "c',
            s(conv).cast(pa.string()),
            '", "session": 1, "turn": ',
            s(turn).cast(pa.string()),
            ', "speaker": "',
            s(np.where(turn % 2 == 1, "Human", "Assistant")),
            '", "text": "',
            s(phrases[i % len(phrases)]),
            '", "sent_at": "',
            s(np.datetime_as_string(sent, unit="s")),
            'Z", "image_caption": null}',
            "",
        )
        with open(data / f"part-{f:04d}.jsonl", "w", encoding="utf-8") as fh:
            for chunk in range(0, len(line), 20_000):
                fh.write("\n".join(line.slice(chunk, 20_000).to_pylist()))
                fh.write("\n")
    mapping = {
        "source": {"name": "bench-long" if one_conversation else "bench-flat", "format": "jsonl", "path": str(data)},
        "fields": {
            "user_id": "user",
            "conversation_id": "conversation_id",
            "role": "speaker",
            "content": "text",
            "chat_time": "sent_at",
            "seq": "turn",
            "source_key": "message_id",
            "info": '{{"session": {session}}}',
        },
        "content_append": [{"column": "image_caption", "template": "\n[image: {}]"}],
        "time": {"formats": ["iso"], "timezone": "UTC"},
        "tags": ["memos-etl-sample"],
    }
    path = out / "mapping.yaml"
    path.write_text(yaml.safe_dump(mapping, sort_keys=False))
    return path


def dry_run(mapping: Path, work: Path) -> dict:
    """benchmarks.memory in a process of its own: seconds, planned messages, peak RSS."""
    res = subprocess.run(
        [sys.executable, "-m", "benchmarks.memory", str(mapping), str(work)], cwd=ROOT, capture_output=True, text=True
    )
    if res.returncode:
        raise RuntimeError(res.stderr[-3000:])
    out = json.loads(res.stdout.strip().splitlines()[-1])
    out["per_min"] = out["planned"] / out["seconds"] * 60 if out["seconds"] else 0.0
    return out


def bench(base: Path, flat_n: int, long_n: int, log=print) -> dict:
    """Dry runs of `flat_n` messages in conversations of TURNS and of `long_n` in one."""
    out: dict = {}
    for name, n, one in (("flat", flat_n, False), ("one_conversation", long_n, True)):
        data = base / f"conv-{name}-{n}"
        mapping = data / "mapping.yaml"
        if not mapping.exists():
            generate_jsonl(data, n, one)
        out[name] = dry_run(mapping, base / f"work-conv-{name}")
        out[name]["messages"] = n
        log(f"{name} {n:,}: {out[name]['peak_rss_bytes'] / 2**20:.0f} MiB, {out[name]['per_min'] / 1e6:.2f}M msg/min")
    out["rss_ratio"] = out["one_conversation"]["peak_rss_bytes"] / out["flat"]["peak_rss_bytes"]
    out["speed_ratio"] = out["one_conversation"]["per_min"] / out["flat"]["per_min"]
    return out


def sizes(quick: bool) -> tuple[int, int]:
    return (100_000, 500_000) if quick else (1_000_000, 5_000_000)


if __name__ == "__main__":
    import os

    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    base = Path(os.environ.get("MEMOS_ETL_BENCH_DIR", "/tmp/memos-etl-bench"))
    print(json.dumps(bench(base, *sizes(args.quick)), indent=2))
