"""Prefect's share of a run: the same dry-run sync as a flow with task runs, and called directly."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from benchmarks.pipeline_bench import config, reset


def bench(mapping_path: Path, work: Path, large: Path | None = None) -> dict:
    """Prefect's share of a dry run of `mapping_path` (7 flow/direct pairs); with `large`, also
    of that input (3 pairs): the same fixed cost per flow run over a longer run."""
    from core.config import load_mapping
    from flows.runner import run, thread_fanout
    from flows.sync import run_sync

    cfg = config(work / "cfg", 2)
    t = time.perf_counter()
    reset(work / "warm")  # the first run starts the local API server: not part of a run
    run_sync(str(mapping_path), config(work / "warm", 2), outbox=str(work / "warm" / "o.jsonl"))
    boot = time.perf_counter() - t
    out = {"server_start_and_first_flow_s": boot}

    def timed(kind: str, mapping: Path, w: Path) -> float:
        """One dry run of `mapping` as the flow or as direct calls, in a fresh work dir."""
        reset(w)
        cfg.state.work_dir = str(w)
        t = time.perf_counter()
        if kind == "flow":  # as the CLI runs it
            run_sync(str(mapping), cfg, outbox=str(w / "o.jsonl"))
        else:
            run(
                load_mapping(mapping),
                cfg,
                outbox=w / "o.jsonl",
                stage_fanout=thread_fanout(2),
                load_fanout=thread_fanout(2),
            )
        return time.perf_counter() - t

    def paired(mapping: Path, rounds: int, tag: str) -> dict:
        """`rounds` direct/flow pairs run back to back. A run's time here varies by a fifth
        from one run to the next (2 shared cores), more than the cost measured, so the share is
        the median of the pairs' differences over the median flow run, not best against best."""
        times: dict[str, list[float]] = {"direct": [], "flow": []}
        for i in range(rounds):
            for kind in ("direct", "flow"):
                w = work / f"{tag}-{kind}{i}"
                times[kind].append(timed(kind, mapping, w))
                reset(w)  # outboxes of the large input are large: not kept
        d, f = statistics.median(times["direct"]), statistics.median(times["flow"])
        overhead = statistics.median(b - a for a, b in zip(times["direct"], times["flow"]))
        return {"direct_s": d, "flow_s": f, "overhead_s": overhead, "share": max(0.0, overhead / f), "runs": times}

    out.update(paired(mapping_path, 7, "small"))
    if large is not None:
        out["large"] = paired(large, 3, "large")
    return out
