"""Extract + validate + map (+ ledger) throughput, no-op re-sync cost, Prefect's share.

Everything runs in this process on generated Parquet (benchmarks/data.py), against a target
that answers at once in-process, so what is measured is our pipeline, not a network.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import defaultdict
from pathlib import Path

import pyarrow.parquet as pq

from core.client import Reply, body_json
from core.config import RunConfig, load_mapping

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")


class InstantTarget:
    """A MemOS stand-in that accepts every request at once, in-process: no network, no server."""

    kind = "cloud"
    route = "/add/message"

    def __init__(self):
        self.requests = 0
        self.messages = 0

    def add_payload(self, batch) -> str:
        return body_json(
            {"user_id": batch.user_id, "conversation_id": batch.conversation_id, "info": batch.info},
            batch.messages_json,
        )

    def add(self, batch) -> Reply:
        self.requests += 1
        self.messages += batch.n_messages
        return Reply(data={}, task_id=None)

    def get_messages(self, *a, **k):
        return []

    def close(self) -> None:
        pass


def files_of(mapping_path: Path) -> list[str]:
    m = load_mapping(mapping_path)
    return sorted(str(p) for p in Path(m.source.path).glob("*.parquet"))


def bare_read(files: list[str], batch_rows: int = 65_536) -> tuple[int, float]:
    t = time.perf_counter()
    n = 0
    for f in files:
        for rb in pq.ParquetFile(f).iter_batches(batch_size=batch_rows):
            n += rb.num_rows
    return n, time.perf_counter() - t


def plain_loop(files: list[str], per_request: int = 50, batch_rows: int = 65_536) -> tuple[int, float]:
    """Read the batches and build the JSON payloads in plain Python: no validation, no ledger.
    Column-wise to Python lists, rows grouped by conversation, one json.dumps per request."""
    import pyarrow.compute as pc

    t = time.perf_counter()
    n = 0
    for f in files:
        for rb in pq.ParquetFile(f).iter_batches(batch_size=batch_rows):
            users = rb.column("user").to_pylist()
            convs_ = rb.column("conversation_id").to_pylist()
            roles = rb.column("speaker").to_pylist()
            texts = rb.column("text").to_pylist()
            times = pc.cast(rb.column("sent_at"), "string").to_pylist()
            convs: dict = defaultdict(list)
            for u, c, r, x, ts in zip(users, convs_, roles, texts, times):
                convs[(u, c)].append({"role": r, "content": x, "chat_time": ts})
            for (user, conv), msgs in convs.items():
                for i in range(0, len(msgs), per_request):
                    json.dumps({"user_id": user, "conversation_id": conv, "messages": msgs[i : i + per_request]})
                    n += len(msgs[i : i + per_request])
    return n, time.perf_counter() - t


def config(work: Path, workers: int = 2) -> RunConfig:
    cfg = RunConfig()
    cfg.state.work_dir = str(work)
    cfg.target.name = "bench"
    cfg.load.concurrency = workers
    cfg.load.requests_per_second = 0
    cfg.load.tokens_per_minute = 0
    return cfg


class Phases:
    """Progress callback that notes when each phase started and finished."""

    def __init__(self):
        self.start = time.perf_counter()
        self.marks: dict[str, float] = {}

    def __call__(self, phase: str, done: int, total: int) -> None:
        now = time.perf_counter()
        self.marks.setdefault(f"{phase}_start", now)
        if done >= total:
            self.marks[f"{phase}_end"] = now

    def seconds(self, phase: str) -> float:
        return self.marks.get(f"{phase}_end", 0) - self.marks.get(f"{phase}_start", 0)


def ours(mapping_path: Path, work: Path, outbox: bool = False, workers: int = 2):
    """One full sync (or a plan with `outbox`) through pipeline.run; returns (report, phases, seconds)."""
    from flows.runner import run, thread_fanout

    cfg = config(work, workers)
    phases = Phases()
    t = time.perf_counter()
    report = run(
        load_mapping(mapping_path),
        cfg,
        target=InstantTarget(),
        stage_fanout=thread_fanout(workers),
        load_fanout=thread_fanout(workers),
        progress=phases,
        outbox=(work / "outbox.jsonl") if outbox else None,
    )
    return report, phases, time.perf_counter() - t


def planned_rate(mapping: Path, work: Path, per: str = "planned") -> dict:
    """One dry run (a plan into the outbox) from an empty state: its seconds, counts and messages
    a minute (`per`: the messages planned, or read: a messy input's quarantined rows count too)."""
    reset(work)
    report, _, seconds = ours(mapping, work, outbox=True)
    c = report.counts
    counted = {"read": c.read, "planned": c.planned, "quarantined": c.quarantined}
    return {"seconds": seconds, **counted, "per_min": counted[per] / seconds * 60}


def table_against_parquet(parquet: Path, table: Path, base: Path, kind: str, rounds: int = 2) -> dict:
    """Dry runs of a table source and of the same messages as Parquet files, alternated after a
    warm-up of the table (imports, its first open) so the machine's noise falls on both; the
    ratio of their best rates."""
    planned_rate(table, base / f"work-{kind}-warm")
    out: dict = {"parquet": [], kind: []}
    for _ in range(rounds):
        out["parquet"].append(planned_rate(parquet, base / f"work-{kind}-parquet"))
        out[kind].append(planned_rate(table, base / f"work-{kind}-plan"))
    best = {k: max(r["per_min"] for r in out[k]) for k in ("parquet", kind)}
    out["ratio"] = best[kind] / best["parquet"]
    return out


def reset(work: Path) -> None:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
