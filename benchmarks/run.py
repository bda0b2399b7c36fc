"""Run every benchmark, side by side in one run, and print one table of ratios.

    uv run python -m benchmarks.run            # about 20 minutes on 2 cores
    uv run python -m benchmarks.run --quick    # smaller sizes, to try it out

Results: benchmarks/results/results.json, results.md and load_vs_concurrency.png.
Generated data lives in $MEMOS_ETL_BENCH_DIR (default /tmp/memos-etl-bench).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import core  # noqa: E402,F401  (the no-telemetry defaults)

os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")

from benchmarks import (  # noqa: E402
    apps_bench,
    cli_bench,
    conversation_bench,
    delta_bench,
    documents_bench,
    dynamodb_bench,
    exports_bench,
    iceberg_bench,
    load_bench,
    messy_bench,
    pipeline_bench,
    prefect_bench,
    redis_bench,
    whatsapp_bench,
)
from benchmarks.data import edit, generate, generate_chatgpt_export, generate_openai_chat, generate_personal  # noqa: E402
from memos_etl.devserver import free_port  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def per_min(n: int, s: float) -> float:
    return n / s * 60 if s else 0.0


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
    out["ours_plan"] = {
        "seconds": s,
        "per_min": per_min(report.counts.planned, s),
        "extract_validate_map_stage_s": phases.seconds("extract"),
        "batch_lookup_write_s": phases.seconds("load"),
    }
    log(f"ours (dry run) {per_min(report.counts.planned, s) / 1e6:.2f}M/min")
    out["redaction"] = redaction(base, n)
    # the same messages as OpenAI-chat JSONL (20 a line, two files): streamed, exploded on columns
    nested = generate_openai_chat(base / f"oa{n}", n)
    work = base / "work-nested"
    pipeline_bench.reset(work)
    report, phases, s = pipeline_bench.ours(nested, work, outbox=True)
    out["nested_plan"] = {
        "seconds": s,
        "per_min": per_min(report.counts.planned, s),
        "ratio_to_flat": per_min(report.counts.planned, s) / out["ours_plan"]["per_min"],
        "quarantined": report.counts.quarantined,
    }
    log(
        f"nested (OpenAI chat JSONL) dry run {per_min(report.counts.planned, s) / 1e6:.2f}M/min, "
        f"{out['nested_plan']['ratio_to_flat']:.2f} of flat"
    )
    # the full path with ledger writes (sent + delivered per request) on a smaller set
    small = generate(base / f"m{ledger_n}", ledger_n)
    work = base / "work-full"
    pipeline_bench.reset(work)
    report, phases, s = pipeline_bench.ours(small, work)
    out["ours_full_ledger"] = {
        "messages": ledger_n,
        "seconds": s,
        "per_min": per_min(report.counts.delivered, s),
        "requests": report.counts.requests,
        "requests_per_s": report.counts.requests / phases.seconds("load") if phases.seconds("load") else 0.0,
        "extract_s": phases.seconds("extract"),
        "load_s": phases.seconds("load"),
    }
    log(f"ours (full, ledger writes) {per_min(report.counts.delivered, s) / 1e6:.2f}M/min")
    again, _, s2 = pipeline_bench.ours(small, work)
    out["noop"] = {
        "seconds": s2,
        "requests": again.counts.requests,
        "units_skipped": again.counts.units_skipped,
        "ratio_to_extract": s2 / phases.seconds("extract") if phases.seconds("extract") else 0.0,
    }
    log(f"no-op re-sync {s2:.2f}s, {again.counts.requests} requests")
    # the source edited after delivery: 1% of the messages changed, every file re-read
    edited = edit(small, every=100)
    changed, _, s3 = pipeline_bench.ours(small, work)
    c = changed.counts
    out["changed_1pct"] = {
        "seconds": s3,
        "edited": edited,
        "changed_after_delivery": c.changed_after_delivery,
        "already_delivered": c.already_delivered,
        "requests": c.requests,
        "conversations_listed": len(c.changes),
        "ratio_to_full": s3 / s if s else 0.0,
    }
    log(
        f"re-sync with {edited} edited messages {s3:.2f}s ({s3 / s:.3f} of the full sync), "
        f"{c.changed_after_delivery} changed after delivery, {c.requests} requests"
    )
    return out


def redaction(base: Path, n: int) -> dict:
    """Dry runs of one dataset with ~2% personal data, without and with `redact:` (the default
    entities), side by side; and the cloud API's message ceiling for the same messages."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from core.budget import estimate_tokens
    from core.config import LoadConfig

    plain, redacted = generate_personal(base / f"pii{n}", n)
    out: dict = {"messages": n}
    for name, mapping in (("without", plain), ("with", redacted)):
        work = base / f"work-pii-{name}"
        pipeline_bench.reset(work)
        report, phases, s = pipeline_bench.ours(mapping, work, outbox=True)
        c = report.counts
        out[name] = {
            "seconds": s,
            "per_min": per_min(c.planned, s),
            "planned": c.planned,
            "read_by_presidio": c.redaction_candidates,
            "redacted": c.redacted,
            "entities": c.redaction,
        }
        log(
            f"dry run {name} redaction {per_min(c.planned, s) / 1e6:.3f}M/min"
            + (f", {c.redaction_candidates} read by Presidio, {c.redacted} redacted" if name == "with" else "")
        )
    text = pq.read_table(next((base / f"pii{n}" / "data").glob("*.parquet")), columns=["text"]).column("text")
    load = LoadConfig()
    tokens = float(estimate_tokens(pc.fill_null(text.combine_chunks(), ""), load).mean())
    out["api_ceiling_per_min"] = load.tokens_per_minute / tokens  # 400k tokens a minute per key
    out["ratio"] = out["with"]["per_min"] / out["without"]["per_min"]
    out["times_ceiling"] = out["with"]["per_min"] / out["api_ceiling_per_min"]
    return out


#: rows per file in the memory benchmark's data: the larger input is more files of the same
#: kind, as a lake grows. (Peak memory follows the batch a reader holds, min(file rows,
#: source.batch_rows); with 10 files at both sizes the 1M files would be smaller than one batch
#: and the comparison would measure batch sizes, not input size.)
MEMORY_FILE_ROWS = 100_000


def peak(mapping: Path, work: Path) -> dict:
    res = subprocess.run(
        [sys.executable, "-m", "benchmarks.memory", str(mapping), str(work)], cwd=ROOT, capture_output=True, text=True
    )
    if res.returncode:
        raise RuntimeError(res.stderr[-3000:])
    return json.loads(res.stdout.strip().splitlines()[-1])


def memory(base: Path, sizes: list[int]) -> dict:
    out = {}
    for n in sizes:
        out[n] = peak(generate(base / f"mem-data{n}", n, files=max(1, n // MEMORY_FILE_ROWS)), base / f"mem{n}")
        log(f"memory {n}: {out[n]['peak_rss_bytes'] / 2**20:.0f} MiB")
    return out


def nested_memory(base: Path, sizes: list[int], export_bytes: int) -> dict:
    """Peak RSS of nested dry runs: OpenAI-chat JSONL in two files at each size (the files grow
    with the input: memory must not), and one ChatGPT-export conversations.json of export_bytes."""
    out: dict = {"openai_chat": {}}
    for n in sizes:
        out["openai_chat"][n] = peak(generate_openai_chat(base / f"oa{n}", n), base / f"mem-oa{n}")
        log(f"nested memory {n}: {out['openai_chat'][n]['peak_rss_bytes'] / 2**20:.0f} MiB")
    mapping = generate_chatgpt_export(base / "chatgpt-export", export_bytes)
    out["chatgpt_export"] = peak(mapping, base / "mem-chatgpt")
    out["chatgpt_export"]["file_bytes"] = (base / "chatgpt-export" / "conversations.json").stat().st_size
    log(
        f"ChatGPT export {out['chatgpt_export']['file_bytes'] / 2**30:.2f} GiB: "
        f"{out['chatgpt_export']['peak_rss_bytes'] / 2**20:.0f} MiB"
    )
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
    ax.set_title(
        f"dev-server {load['limits']['latency_ms']:.0f} ms latency, {load['limits']['rps']} rps, "
        f"{load['limits']['tokens_per_window']} tokens / {load['limits']['window_s']:.0f} s"
    )
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def table(r: dict) -> list[tuple[str, str, str, str]]:
    rows = []
    t = r["transform"]
    plain = t["plain_loop"]["per_min"]
    ours_pm = t["ours_plan"]["per_min"]
    rows.append(
        (
            "extract+validate+map+ledger lookups (dry run)",
            f"{ours_pm / 1e6:.2f}M msg/min",
            f"{ours_pm / plain:.2f} of plain loop, {ours_pm / t['bare_read']['per_min']:.3f} of bare read",
            ">= 5M/min, >= 0.3 of plain loop",
        )
    )
    if "nested_plan" in t:
        nst = t["nested_plan"]
        rows.append(
            (
                "nested dry run: OpenAI-chat JSONL, same messages",
                f"{nst['per_min'] / 1e6:.2f}M msg/min",
                f"{nst['ratio_to_flat']:.2f} of the flat Parquet dry run",
                ">= 0.5 of flat",
            )
        )
    if "redaction" in t:
        rd = t["redaction"]
        rows.append(
            (
                f"dry run with redaction, {rd['messages']:,} messages, ~2% personal data",
                f"{rd['with']['per_min'] / 1e6:.2f}M msg/min ({rd['with']['read_by_presidio']:,} read by Presidio)",
                f"{rd['ratio']:.2f} of the same dry run without; {rd['times_ceiling']:.0f}x the API's "
                f"{rd['api_ceiling_per_min'] / 1e3:.1f}k msg/min",
                ">= 10x the API ceiling (>= 100k msg/min)",
            )
        )
    rows.append(
        (
            "  bare pyarrow read / plain-Python loop",
            f"{t['bare_read']['per_min'] / 1e6:.1f}M / {plain / 1e6:.1f}M msg/min",
            "reference",
            "",
        )
    )
    p = t["ours_plan"]
    rows.append(
        (
            "  where the dry run's time goes",
            f"{p['extract_validate_map_stage_s']:.1f}s extract+validate+map"
            f"+stage, {p['batch_lookup_write_s']:.1f}s batch+lookup+outbox",
            "",
            "",
        )
    )
    f = t["ours_full_ledger"]
    rows.append(
        (
            "full sync, ledger writes, instant target",
            f"{f['per_min'] / 1e6:.2f}M msg/min",
            f"{f['requests_per_s']:.0f} requests/s of ledger (MemOS allows ~50)",
            "",
        )
    )
    n = t["noop"]
    rows.append(
        (
            "no-op re-sync",
            f"{n['seconds']:.2f}s, {n['requests']} requests",
            f"{n['ratio_to_extract']:.3f} of the full sync's extract time",
            "<= 0.05, 0 requests",
        )
    )
    if "changed_1pct" in t:
        ch = t["changed_1pct"]
        rows.append(
            (
                "re-sync, 1% edited after delivery (on_change: report)",
                f"{ch['seconds']:.2f}s, {ch['changed_after_delivery']:,} of {ch['edited']:,} edits seen, "
                f"{ch['requests']} requests",
                f"{ch['ratio_to_full']:.3f} of the full sync",
                "<= 0.1, every edit counted, 0 requests",
            )
        )
    if "messy" in r:
        rows.extend(messy_bench.rows(r["messy"]))
    if "exports" in r:
        rows.extend(exports_bench.rows(r["exports"]))
    if "apps" in r:
        rows.extend(apps_bench.rows(r["apps"]))
    if "whatsapp" in r:
        rows.extend(exports_bench.rows(r["whatsapp"]) + whatsapp_bench.rows(r["whatsapp_reader"]))
    if "delta" in r:
        rows.extend(delta_bench.rows(r["delta"]))
    if "iceberg" in r:
        rows.extend(iceberg_bench.rows(r["iceberg"]))
    if "redis" in r:
        rows.extend(redis_bench.rows(r["redis"]))
    if "dynamodb" in r:
        rows.extend(dynamodb_bench.rows(r["dynamodb"]))
    if "librechat" in r:
        rows.extend(exports_bench.rows(r["librechat"]))
    if "documents" in r:
        rows.extend(documents_bench.rows(r["documents"]))
    m = r["memory"]
    sizes = sorted(m, key=int)
    if len(sizes) >= 2:
        a, b = m[sizes[0]], m[sizes[-1]]
        rows.append(
            (
                f"peak RSS, {int(sizes[0]):,} vs {int(sizes[-1]):,} messages",
                f"{a['peak_rss_bytes'] / 2**20:.0f} / {b['peak_rss_bytes'] / 2**20:.0f} MiB",
                f"{b['peak_rss_bytes'] / a['peak_rss_bytes']:.2f}x",
                "<= 1.2x, < 1 GiB",
            )
        )
    if "nested_memory" in r:
        nm = r["nested_memory"]
        ns = sorted(nm["openai_chat"], key=int)
        a, b = nm["openai_chat"][ns[0]], nm["openai_chat"][ns[-1]]
        rows.append(
            (
                f"nested peak RSS, {int(ns[0]):,} vs {int(ns[-1]):,} messages (2 files each)",
                f"{a['peak_rss_bytes'] / 2**20:.0f} / {b['peak_rss_bytes'] / 2**20:.0f} MiB",
                f"{b['peak_rss_bytes'] / a['peak_rss_bytes']:.2f}x",
                "<= 1.2x, < 1 GiB",
            )
        )
        ce = nm["chatgpt_export"]
        rows.append(
            (
                f"ChatGPT export, one {ce['file_bytes'] / 2**30:.2f} GiB conversations.json "
                f"({ce['messages']:,} messages)",
                f"{ce['peak_rss_bytes'] / 2**20:.0f} MiB peak RSS",
                f"{ce['peak_rss_bytes'] / ce['file_bytes']:.2f} of the file's size, "
                f"{ce['messages'] / ce['seconds'] * 60 / 1e6:.2f}M msg/min",
                "< 1 GiB",
            )
        )
    if "conversation" in r:
        cv = r["conversation"]
        one, flat = cv["one_conversation"], cv["flat"]
        rows.append(
            (
                f"dry run, {one['messages']:,} messages in one conversation (JSONL)",
                f"{one['peak_rss_bytes'] / 2**20:.0f} MiB peak RSS, {one['per_min'] / 1e6:.2f}M msg/min",
                f"{cv['rss_ratio']:.2f}x the peak of {flat['messages']:,} in 20-message conversations "
                f"({flat['peak_rss_bytes'] / 2**20:.0f} MiB); {cv['speed_ratio']:.2f} of its msg/min",
                "<= 1.2x",
            )
        )
    if "cli" in r:
        c = r["cli"]
        rows.append(
            (
                "`memos-etl --help` / `memos-etl status`",
                f"{c['help_s']:.2f}s / {c['status_s']:.2f}s",
                f"{c['help_s'] / c['python_pass_s']:.0f}x / {c['status_s'] / c['python_pass_s']:.0f}x "
                f"`python -c pass` ({c['python_pass_s'] * 1000:.0f} ms)",
                "< 1 s each",
            )
        )
        rows.append(
            (
                "demo: time to first request",
                f"{c['demo_first_request_s']:.1f}s after start",
                f"{c['demo_first_request_after_run_start_s']:.1f}s after its run started "
                f"(Prefect's API server starts before), whole demo {c['demo_s']:.0f}s",
                "reported",
            )
        )
        if "sync_wall" in c:
            w = c["sync_wall"]
            rows.append(
                (
                    "CLI sync of the sample: wall time / its report's duration",
                    f"with Prefect {w['prefect_wall_s']:.1f}s (shared server; the first command, which starts "
                    f"it, {w['cold'][0]:.1f}s), --no-prefect {w['no_prefect_wall_s']:.1f}s",
                    f"{w['prefect_ratio']:.2f}x with Prefect, {w['no_prefect_ratio']:.2f}x without",
                    "<= 1.5x",
                )
            )
    pr = r["prefect"]
    rows.append(
        (
            "Prefect's share of a run",
            f"{pr['share'] * 100:.1f}%",
            f"+{pr['overhead_s']:.2f}s per run: flow {pr['flow_s']:.2f}s vs direct {pr['direct_s']:.2f}s, "
            f"medians of {len(pr['runs']['flow'])} pairs "
            f"(API server start {pr['server_start_and_first_flow_s']:.0f}s, once per process)",
            "<= 10%",
        )
    )
    if "large" in pr:
        lg = pr["large"]
        rows.append(
            (
                f"  the same on the {lg.get('messages', 0):,}-message dry run",
                f"{lg['share'] * 100:.1f}%",
                f"+{lg['overhead_s']:.2f}s per run: flow {lg['flow_s']:.1f}s vs direct {lg['direct_s']:.1f}s",
                "",
            )
        )
    for name, v in r["load"]["loaders"].items():
        rows.append(
            (
                f"load: {name}",
                f"{v['share']:.2f} of ceiling",
                f"{v['rejected']} rejected, {v['duplicates']} duplicates, {v['messages']} messages",
                ">= 0.9, 0 rejected, 0 duplicates" if name.startswith("memos-etl") else "comparison",
            )
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="small sizes (about 3 minutes)")
    ap.add_argument(
        "--skip",
        default="",
        help="comma-separated: transform,memory,nested,conversation,cli,prefect,load,messy,exports,whatsapp,apps,"
        "delta,iceberg,redis,dynamodb,librechat,documents",
    )
    args = ap.parse_args()
    base = Path(os.environ.get("MEMOS_ETL_BENCH_DIR", "/tmp/memos-etl-bench"))
    base.mkdir(parents=True, exist_ok=True)
    big, ledger_n, mem, pref, dur = (
        (1_000_000, 1_000_000, [1_000_000, 5_000_000], 100_000, 15.0)
        if not args.quick
        else (200_000, 50_000, [100_000, 500_000], 50_000, 10.0)
    )
    export_bytes = (1 << 30) if not args.quick else (64 << 20)
    skip = set(filter(None, args.skip.split(",")))
    results: dict = {"machine": {"cpus": os.cpu_count()}, "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    t0 = time.perf_counter()
    if "transform" not in skip:
        results["transform"] = transform(base, big, ledger_n)
    if "prefect" not in skip:
        results["prefect"] = prefect_bench.bench(
            generate(base / f"m{pref}", pref), base / "prefect", large=generate(base / f"m{big}", big)
        )
        if "large" in results["prefect"]:
            results["prefect"]["large"]["messages"] = big
        log(f"prefect share {results['prefect']['share'] * 100:.1f}%")
    if "memory" not in skip:
        results["memory"] = memory(base, mem)
    if "nested" not in skip:
        results["nested_memory"] = nested_memory(base, mem, export_bytes)
    if "conversation" not in skip:
        results["conversation"] = conversation_bench.bench(base, *conversation_bench.sizes(args.quick), log=log)
    if "cli" not in skip:
        ledger_work = base / "work-full" if (base / "work-full" / "ledger.db").exists() else base / "cli-empty"
        results["cli"] = cli_bench.bench(ledger_work, base / "demo")
        log(
            f"cli: --help {results['cli']['help_s']:.2f}s, status {results['cli']['status_s']:.2f}s, "
            f"demo first request {results['cli']['demo_first_request_s']:.1f}s"
        )
    if "messy" not in skip:
        results["messy"] = messy_bench.run(base, big, peak)
        log(
            f"messy JSONL {results['messy']['messy']['ratio']:.2f} of clean, "
            f".gz {results['messy']['gz']['ratio']:.2f}, "
            f".zst {results['messy']['zst']['ratio']:.2f}"
        )
    if "exports" not in skip:  # the slowest export preset (measured: Claude's, walked per message)
        results["exports"] = exports_bench.run(base, big, peak, preset="claude-export")
        e = results["exports"]
        log(f"claude-export {e['export']['per_min'] / 1e6:.2f}M msg/min, {e['ratio']:.2f} of flat")
    if "whatsapp" not in skip:  # the line reader: every language's headers, notices and the chronology rule
        results["whatsapp"] = exports_bench.run(base, big, peak, preset="whatsapp-txt")
        w = results["whatsapp"]
        log(f"whatsapp-txt {w['export']['per_min'] / 1e6:.2f}M msg/min, {w['ratio']:.2f} of flat")
        results["whatsapp_reader"] = whatsapp_bench.run(base, big)
        log(f"whatsapp reader {results['whatsapp_reader']['ratio']:.2f} of {whatsapp_bench.BEFORE}'s")
    if "apps" not in skip:  # every AI-app preset at a tenth of the size, the slowest at the full size
        results["apps"] = apps_bench.run(base, big, peak, survey_n=big // 10, log=log)
        log(f"{results['apps']['preset']} {results['apps']['ratio']:.2f} of flat")
    if "delta" not in skip:
        results["delta"] = delta_bench.run(base, big, log=log)
    if "iceberg" not in skip:
        results["iceberg"] = iceberg_bench.run(base, big, log=log)
    if "redis" not in skip:  # sessions of 4 messages: the peak at 10x the sessions, and against flat Parquet
        if shutil.which("redis-server"):
            sessions, small = (100_000, 10_000) if not args.quick else (20_000, 2_000)
            results["redis"] = redis_bench.run(base, sessions, peak, small=small, log=log)
        else:
            log("redis: no redis-server on PATH, skipped")
    if "dynamodb" not in skip:  # moto's paged scan is quadratic in the table: 30,000 sessions, not 100,000
        sessions, small = (30_000, 3_000) if not args.quick else (10_000, 1_000)
        results["dynamodb"] = dynamodb_bench.run(base, sessions, peak, log=log, small=small)
    if "librechat" not in skip:  # a mongoexport through the tree step, a fifth of the size
        results["librechat"] = exports_bench.run(base, big // 5, peak, preset="librechat")
        log(f"librechat {results['librechat']['ratio']:.2f} of flat")
    if "documents" not in skip:  # a no-op re-sync against the first sync; change detection
        n_docs, big_docs = (10_000, 100_000) if not args.quick else (2_000, 20_000)
        results["documents"] = documents_bench.run(base, n_docs, big_docs, log=log)
    if "load" not in skip:
        results["load"] = load_bench.bench(generate(base / "mload", 20_000), base / "load", free_port(), duration=dur)
        log("load done")
    results["seconds"] = time.perf_counter() - t0
    RESULTS.mkdir(parents=True, exist_ok=True)
    # a part of the benchmarks (--skip) does not replace the full run's results
    parts = sorted(k for k in results if k not in ("machine", "started", "seconds"))
    # and a --quick run (small sizes) writes beside the full run's results, never over them
    name = "results.json" if not skip else f"results-{'-'.join(parts)}.json"
    if args.quick:
        name = name.replace("results", "results-quick", 1)
    (RESULTS / name).write_text(json.dumps(results, indent=2, default=str))
    if not {"transform", "memory", "prefect", "load"} & skip:
        rows = table(results)
        w = [max(len(r[i]) for r in rows) for i in range(4)]
        head = ("benchmark", "measured", "ratio", "target")
        if not args.quick:  # the committed table and plot are the full run's
            plot(results["load"], RESULTS / "load_vs_concurrency.png")
            lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
            lines += ["| " + " | ".join(r) + " |" for r in rows]
            md = "\n".join(lines)
            (RESULTS / "results.md").write_text(
                f"Run {results['started']} on {os.cpu_count()} cores, {results['seconds']:.0f} s in all.\n\n{md}\n"
            )
        for r in [head] + rows:
            print("  ".join(c.ljust(w[i]) for i, c in enumerate(r)))
        print(f"\n{results['seconds']:.0f} s; results in {RESULTS}/{name}")
    else:  # a part of the benchmarks: its own rows
        part_rows = (
            (messy_bench.rows(results["messy"]) if "messy" in results else [])
            + (exports_bench.rows(results["exports"]) if "exports" in results else [])
            + (apps_bench.rows(results["apps"]) if "apps" in results else [])
            + (exports_bench.rows(results["whatsapp"]) if "whatsapp" in results else [])
            + (whatsapp_bench.rows(results["whatsapp_reader"]) if "whatsapp_reader" in results else [])
            + (delta_bench.rows(results["delta"]) if "delta" in results else [])
            + (iceberg_bench.rows(results["iceberg"]) if "iceberg" in results else [])
            + (redis_bench.rows(results["redis"]) if "redis" in results else [])
            + (dynamodb_bench.rows(results["dynamodb"]) if "dynamodb" in results else [])
            + (exports_bench.rows(results["librechat"]) if "librechat" in results else [])
            + (documents_bench.rows(results["documents"]) if "documents" in results else [])
        )
        for r in part_rows:
            print("  ".join(r))


if __name__ == "__main__":
    main()
