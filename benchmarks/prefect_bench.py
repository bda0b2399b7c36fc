"""Prefect's share of a run: the same dry-run sync as a flow with task runs, and called directly."""

from __future__ import annotations

import time
from pathlib import Path

from benchmarks.pipeline_bench import config, reset


def bench(mapping_path: Path, work: Path, large: Path | None = None) -> dict:
    """Best of 3 interleaved flow/direct runs on `mapping_path`; with `large`, also best of 2 on
    that input: the same fixed cost per flow run over a longer run."""
    from prefect.task_runners import ThreadPoolTaskRunner

    from flows.heartbeat import in_process
    from flows.sync import sync_flow
    from memos_etl.config import load_mapping
    from memos_etl.pipeline import run, thread_map

    cfg = config(work / "cfg", 2)
    flow = sync_flow.with_options(task_runner=ThreadPoolTaskRunner(max_workers=2))
    t = time.perf_counter()
    reset(work / "warm")
    flow(str(mapping_path), None, {**config(work / "warm", 2).model_dump(exclude={"sources"})},
         outbox=str(work / "warm" / "o.jsonl"))  # starts the local API server: not part of a run
    boot = time.perf_counter() - t
    out = {"server_start_and_first_flow_s": boot}

    def timed(kind: str, mapping: Path, w: Path) -> float:
        """One dry run of `mapping` as the flow or as direct calls, in a fresh work dir."""
        reset(w)
        cfg.state.work_dir = str(w)
        t = time.perf_counter()
        if kind == "flow":
            with in_process():  # as the CLI and run_sync call it (flows/heartbeat.py)
                flow(str(mapping), None, cfg.model_dump(exclude={"sources"}), outbox=str(w / "o.jsonl"))
        else:
            run(load_mapping(mapping), cfg, outbox=w / "o.jsonl", stage_map=thread_map(2), load_map=thread_map(2))
        return time.perf_counter() - t

    for name in ("direct", "flow", "direct2", "flow2", "direct3", "flow3"):  # interleaved, 3x: the machine is noisy
        out[name] = timed(name.rstrip("23"), mapping_path, work / name)
    direct = min(out["direct"], out["direct2"], out["direct3"])
    flow_s = min(out["flow"], out["flow2"], out["flow3"])
    out["share"] = max(0.0, (flow_s - direct) / flow_s)
    out["overhead_s"] = flow_s - direct
    if large is not None:
        times: dict[str, list[float]] = {"direct": [], "flow": []}
        for i in range(2):
            for kind in ("direct", "flow"):
                w = work / f"large-{kind}{i}"
                times[kind].append(timed(kind, large, w))
                reset(w)  # the 1M outbox is large: not kept
        d, f = min(times["direct"]), min(times["flow"])
        out["large"] = {"direct_s": d, "flow_s": f, "share": max(0.0, (f - d) / f)}
    return out
