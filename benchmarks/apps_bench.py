"""The slowest AI-app preset (langgraph-checkpoint: a msgpack blob a thread, decoded message by
message in Python) beside a flat SQL table of the same messages, both dry-run through the SQL
source: its speed as a share of the flat path's, and its peak RSS at two sizes.

The checkpoint database is written with the real serializer (langgraph's JsonPlusSerializer,
LangChain's message classes) into the tables SqliteSaver.setup() creates, a checkpoint a thread
(THREAD messages each): what a LangGraph app's newest checkpoints hold."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import yaml

from benchmarks.pipeline_bench import ours, reset

THREAD = 100  # messages a thread


def _write(base: Path, n: int) -> tuple[Path, Path]:
    """(langgraph mapping, flat mapping) for `n` messages, written once."""
    d = base / f"apps-langgraph-{n}"
    lg_map, flat_map = d / "langgraph.yaml", d / "flat.yaml"
    if (d / "done").exists():
        return lg_map, flat_map
    from langchain_core.messages import AIMessage, HumanMessage
    from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
    from langgraph.checkpoint.sqlite import SqliteSaver

    d.mkdir(parents=True, exist_ok=True)
    for f in ("graph.db", "flat.db"):
        (d / f).unlink(missing_ok=True)
    serde = JsonPlusSerializer()
    graph = sqlite3.connect(d / "graph.db", check_same_thread=False)
    SqliteSaver(graph).setup()
    flat = sqlite3.connect(d / "flat.db")
    flat.execute("CREATE TABLE messages (id INTEGER PRIMARY KEY, thread_id TEXT, role TEXT, content TEXT, key TEXT)")
    row = 0
    for t in range(-(-n // THREAD)):
        thread, msgs, flat_rows = f"user{t % 50}:t{t}", [], []
        for i in range(min(THREAD, n - t * THREAD)):
            text = f"message {i} of thread {t}: " + "plan the week, book the train, call the garden shop " * (1 + i % 3)
            cls, role = (HumanMessage, "user") if i % 2 == 0 else (AIMessage, "assistant")
            msgs.append(cls(content=text, id=f"m{t}-{i}"))
            row += 1
            flat_rows.append((row, thread, role, text, f"{thread}:m{t}-{i}"))
        cid = f"1f0{t:05x}-0000-6000-8000-000000000000"
        checkpoint = {"v": 4, "id": cid, "ts": "2025-01-01T00:00:00+00:00", "versions_seen": {},
                      "channel_values": {"messages": msgs}, "channel_versions": {"messages": 1}}  # fmt: skip
        kind, blob = serde.dumps_typed(checkpoint)
        graph.execute(
            "INSERT INTO checkpoints (thread_id, checkpoint_ns, checkpoint_id, type, checkpoint) "
            "VALUES (?, '', ?, ?, ?)",
            (thread, cid, kind, blob),
        )
        flat.executemany("INSERT INTO messages VALUES (?, ?, ?, ?, ?)", flat_rows)
    graph.commit()
    flat.commit()
    graph.close()
    flat.close()
    lg_map.write_text(
        yaml.safe_dump(
            {
                "preset": "langgraph-checkpoint",
                "source": {"name": "lg-bench", "sql": {"url": f"sqlite:///{d / 'graph.db'}"}},
            }
        )
    )
    flat_map.write_text(
        yaml.safe_dump(
            {
                "source": {
                    "name": "lg-flat",
                    "type": "sql",
                    "sql": {
                        "url": f"sqlite:///{d / 'flat.db'}",
                        "table": "messages",
                        "cursor_column": "id",
                        "key_column": "id",
                    },  # fmt: skip
                },
                "fields": {
                    "user_id": "thread_id",
                    "conversation_id": "thread_id",
                    "role": "role",
                    "content": "content",
                    "seq": "id",
                    "source_key": "key",
                },  # fmt: skip
            }
        )
    )
    (d / "done").write_text("")
    return lg_map, flat_map


def _plan(mapping: Path, work: Path) -> dict:
    reset(work)
    report, _, seconds = ours(mapping, work, outbox=True)
    c = report.counts
    return {"seconds": seconds, "read": c.read, "planned": c.planned, "per_min": c.planned / seconds * 60}


def run(base: Path, n: int, peak) -> dict:
    """`peak(mapping, work)` measures a dry run's peak RSS in its own process (benchmarks.run)."""
    small, _ = _write(base, max(THREAD, n // 5))
    lg, flat = _write(base, n)
    _plan(flat, base / "work-apps-warm")  # imports and caches, not measured
    out: dict = {"preset": "langgraph-checkpoint", "messages": n}
    out["flat"] = _plan(flat, base / "work-apps-flat")
    out["app"] = _plan(lg, base / "work-apps")
    out["ratio"] = out["app"]["per_min"] / out["flat"]["per_min"]
    out["peak_small"] = peak(small, base / "mem-apps-small")["peak_rss_bytes"]
    out["peak"] = peak(lg, base / "mem-apps")["peak_rss_bytes"]
    return out


def rows(m: dict) -> list[tuple[str, str, str, str]]:
    a, f = m["app"], m["flat"]
    return [
        (
            f"{m['preset']} dry run (SQLite), {m['messages']:,} messages in threads of {THREAD}",
            f"{a['per_min'] / 1e6:.2f}M msg/min, flat SQL table {f['per_min'] / 1e6:.2f}M",
            f"{m['ratio']:.2f} of flat; peak RSS {m['peak'] / 2**20:.0f} MiB, "
            f"{m['peak'] / m['peak_small']:.2f}x that of a fifth of it",
            ">= 0.3 of flat, RSS <= 1.2x",
        )
    ]


if __name__ == "__main__":
    import json
    import os
    import sys

    from benchmarks.run import peak

    size = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    where = Path(os.environ.get("MEMOS_ETL_BENCH_DIR", "/tmp/memos-etl-bench"))
    result = run(where, size, peak)
    print(json.dumps(result, indent=1))
    print(rows(result)[0])
