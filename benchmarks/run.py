"""Run every benchmark, side by side in one run, and print one table of ratios.

    uv run python -m benchmarks.run            # about 10 minutes on 2 cores
    uv run python -m benchmarks.run --quick    # smaller sizes, to try it out

Results: benchmarks/results/results.json, results.md and load_vs_concurrency.png.
Generated data lives in $MEMOS_ETL_BENCH_DIR (default /tmp/memos-etl-bench).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")

from benchmarks import load_bench, pipeline_bench, prefect_bench  # noqa: E402
from benchmarks.data import edit, generate  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def per_min(n: int, s: float) -> float:
    return n / s * 60 if s else 0.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def transform(base: Path, n: int, ledger_n: int) -> dict:
    mapping = generate(base / f"m{n}", n)
    files = pipeline_bench.files_of(mapping)
    import great_expectations  # noqa: F401  (its import, 5-10 s here, is not throughput)

    out: dict = {"messages": n}
    rows, s = pipeline_bench.bare_read(files)
    out["bare_read"] = {"seconds": s, "per_min": per_min(rows, s)}
    log(f"bare read {per_min(rows, s) / 1e6:.1f}M/min")
    rows, s = pipeline_bench.plain_loop(files)
    out["plain_loop"] = {"seconds": s, "per_min": per_min(rows, s)}
    log(f"plain loop {per_min(rows, s) / 1e6:.1f}M/min")
    work = base / "work-plan"
    pipeline_bench.reset(work)
    report, phases, s = pipeline_bench.ours(mapping, work, outbox=True)
    out["ours_plan"] = {"seconds": s, "per_min": per_min(report.counts.planned, s),
                        "extract_validate_map_stage_s": phases.seconds("extract"),
                        "batch_lookup_write_s": phases.seconds("load")}
    log(f"ours (dry run) {per_min(report.counts.planned, s) / 1e6:.2f}M/min")
    # the full path with ledger writes (sent + delivered per request) on a smaller set
    small = generate(base / f"m{ledger_n}", ledger_n)
    work = base / "work-full"
    pipeline_bench.reset(work)
    report, phases, s = pipeline_bench.ours(small, work)
    out["ours_full_ledger"] = {"messages": ledger_n, "seconds": s, "per_min": per_min(report.counts.delivered, s),
                               "requests": report.counts.requests,
                               "requests_per_s": report.counts.requests / phases.seconds("load")
                               if phases.seconds("load") else 0.0,
                               "extract_s": phases.seconds("extract"), "load_s": phases.seconds("load")}
    log(f"ours (full, ledger writes) {per_min(report.counts.delivered, s) / 1e6:.2f}M/min")
    again, _, s2 = pipeline_bench.ours(small, work)
    out["noop"] = {"seconds": s2, "requests": again.counts.requests, "units_skipped": again.counts.units_skipped,
                   "ratio_to_extract": s2 / phases.seconds("extract") if phases.seconds("extract") else 0.0}
    log(f"no-op re-sync {s2:.2f}s, {again.counts.requests} requests")
    # the source edited after delivery: 1% of the messages changed, every file re-read
    edited = edit(small, every=100)
    changed, _, s3 = pipeline_bench.ours(small, work)
    c = changed.counts
    out["changed_1pct"] = {"seconds": s3, "edited": edited, "changed_after_delivery": c.changed_after_delivery,
                           "already_delivered": c.already_delivered, "requests": c.requests,
                           "conversations_listed": len(c.changes), "ratio_to_full": s3 / s if s else 0.0}
    log(f"re-sync with {edited} edited messages {s3:.2f}s ({s3 / s:.3f} of the full sync), "
        f"{c.changed_after_delivery} changed after delivery, {c.requests} requests")
    return out


#: rows per file in the memory benchmark's data: the larger input is more files of the same
#: kind, as a lake grows. (Peak memory follows the batch a reader holds, min(file rows,
#: source.batch_rows); with 10 files at both sizes the 1M files would be smaller than one batch
#: and the comparison would measure batch sizes, not input size.)
MEMORY_FILE_ROWS = 100_000


def memory(base: Path, sizes: list[int]) -> dict:
    out = {}
    for n in sizes:
        mapping = generate(base / f"mem-data{n}", n, files=max(1, n // MEMORY_FILE_ROWS))
        res = subprocess.run([sys.executable, "-m", "benchmarks.memory", str(mapping), str(base / f"mem{n}")],
                             cwd=ROOT, capture_output=True, text=True)
        if res.returncode:
            raise RuntimeError(res.stderr[-3000:])
        out[n] = json.loads(res.stdout.strip().splitlines()[-1])
        log(f"memory {n}: {out[n]['peak_rss_bytes'] / 2**20:.0f} MiB")
    return out


def plot(load: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = sorted(load["sweep"], key=int)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([int(x) for x in xs], [load["sweep"][x]["share"] for x in xs], marker="o", label="memos-etl")
    others = [(n, v) for n, v in load["loaders"].items() if not n.startswith("memos-etl")]
    for (name, v), color in zip(others, ("tab:orange", "tab:red", "tab:green")):
        ax.axhline(v["share"], linestyle="--", color=color, label=f"{name} ({v['rejected']} rejected)")
    ax.axhline(1.0, color="grey", linewidth=0.8)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("conversations in flight (load.concurrency)")
    ax.set_ylabel("accepted tokens / token ceiling")
    ax.set_title(f"dev-server {load['limits']['latency_ms']:.0f} ms latency, {load['limits']['rps']} rps, "
                 f"{load['limits']['tokens_per_window']} tokens / {load['limits']['window_s']:.0f} s")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def table(r: dict) -> list[tuple[str, str, str, str]]:
    rows = []
    t = r["transform"]
    plain = t["plain_loop"]["per_min"]
    ours_pm = t["ours_plan"]["per_min"]
    rows.append(("extract+validate+map+ledger lookups (dry run)", f"{ours_pm / 1e6:.2f}M msg/min",
                 f"{ours_pm / plain:.2f} of plain loop, {ours_pm / t['bare_read']['per_min']:.3f} of bare read",
                 ">= 5M/min, >= 0.3 of plain loop"))
    rows.append(("  bare pyarrow read / plain-Python loop", f"{t['bare_read']['per_min'] / 1e6:.1f}M / "
                 f"{plain / 1e6:.1f}M msg/min", "reference", ""))
    p = t["ours_plan"]
    rows.append(("  where the dry run's time goes", f"{p['extract_validate_map_stage_s']:.1f}s extract+validate+map"
                 f"+stage, {p['batch_lookup_write_s']:.1f}s batch+lookup+outbox", "", ""))
    f = t["ours_full_ledger"]
    rows.append(("full sync, ledger writes, instant target", f"{f['per_min'] / 1e6:.2f}M msg/min",
                 f"{f['requests_per_s']:.0f} requests/s of ledger (MemOS allows ~50)", ""))
    n = t["noop"]
    rows.append(("no-op re-sync", f"{n['seconds']:.2f}s, {n['requests']} requests",
                 f"{n['ratio_to_extract']:.3f} of the full sync's extract time", "<= 0.05, 0 requests"))
    if "changed_1pct" in t:
        ch = t["changed_1pct"]
        rows.append(("re-sync, 1% edited after delivery (on_change: report)",
                     f"{ch['seconds']:.2f}s, {ch['changed_after_delivery']:,} of {ch['edited']:,} edits seen, "
                     f"{ch['requests']} requests", f"{ch['ratio_to_full']:.3f} of the full sync",
                     "<= 0.1, every edit counted, 0 requests"))
    m = r["memory"]
    sizes = sorted(m, key=int)
    if len(sizes) >= 2:
        a, b = m[sizes[0]], m[sizes[-1]]
        rows.append((f"peak RSS, {int(sizes[0]):,} vs {int(sizes[-1]):,} messages",
                     f"{a['peak_rss_bytes'] / 2**20:.0f} / {b['peak_rss_bytes'] / 2**20:.0f} MiB",
                     f"{b['peak_rss_bytes'] / a['peak_rss_bytes']:.2f}x", "<= 1.2x, < 1 GiB"))
    pr = r["prefect"]
    rows.append(("Prefect's share of a run", f"{pr['share'] * 100:.1f}%",
                 f"+{pr['overhead_s']:.2f}s per run: flow {pr['flow_s']:.2f}s vs direct {pr['direct_s']:.2f}s, medians of {len(pr['runs']['flow'])} pairs "
                 f"(API server start {pr['server_start_and_first_flow_s']:.0f}s, once per process)", "<= 10%"))
    if "large" in pr:
        lg = pr["large"]
        rows.append((f"  the same on the {lg.get('messages', 0):,}-message dry run", f"{lg['share'] * 100:.1f}%",
                     f"+{lg['overhead_s']:.2f}s per run: flow {lg['flow_s']:.1f}s vs direct {lg['direct_s']:.1f}s", ""))
    for name, v in r["load"]["loaders"].items():
        rows.append((f"load: {name}", f"{v['share']:.2f} of ceiling",
                     f"{v['rejected']} rejected, {v['duplicates']} duplicates, {v['messages']} messages",
                     ">= 0.9, 0 rejected, 0 duplicates" if name.startswith("memos-etl") else "comparison"))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="small sizes (about 3 minutes)")
    ap.add_argument("--skip", default="", help="comma-separated: transform,memory,prefect,load")
    args = ap.parse_args()
    base = Path(os.environ.get("MEMOS_ETL_BENCH_DIR", "/tmp/memos-etl-bench"))
    base.mkdir(parents=True, exist_ok=True)
    big, ledger_n, mem, pref, dur = ((1_000_000, 1_000_000, [1_000_000, 5_000_000], 100_000, 15.0) if not args.quick
                                     else (200_000, 50_000, [100_000, 500_000], 50_000, 10.0))
    skip = set(filter(None, args.skip.split(",")))
    results: dict = {"machine": {"cpus": os.cpu_count()}, "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    t0 = time.perf_counter()
    if "transform" not in skip:
        results["transform"] = transform(base, big, ledger_n)
    if "prefect" not in skip:
        results["prefect"] = prefect_bench.bench(generate(base / f"m{pref}", pref), base / "prefect",
                                                 large=generate(base / f"m{big}", big))
        if "large" in results["prefect"]:
            results["prefect"]["large"]["messages"] = big
        log(f"prefect share {results['prefect']['share'] * 100:.1f}%")
    if "memory" not in skip:
        results["memory"] = memory(base, mem)
    if "load" not in skip:
        results["load"] = load_bench.bench(generate(base / "mload", 20_000), base / "load", free_port(),
                                           duration=dur)
        log("load done")
    results["seconds"] = time.perf_counter() - t0
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "results.json").write_text(json.dumps(results, indent=2, default=str))
    if {"transform", "memory", "prefect", "load"} - skip == {"transform", "memory", "prefect", "load"}:
        plot(results["load"], RESULTS / "load_vs_concurrency.png")
        rows = table(results)
        w = [max(len(r[i]) for r in rows) for i in range(4)]
        head = ("benchmark", "measured", "ratio", "target")
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        md = "\n".join(lines)
        (RESULTS / "results.md").write_text(f"Run {results['started']} on {os.cpu_count()} cores, "
                                            f"{results['seconds']:.0f} s in all.\n\n{md}\n")
        for r in [head] + rows:
            print("  ".join(c.ljust(w[i]) for i, c in enumerate(r)))
        print(f"\n{results['seconds']:.0f} s; results in {RESULTS}/ (results.json, results.md, load_vs_concurrency.png)")


if __name__ == "__main__":
    main()
