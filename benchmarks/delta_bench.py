"""Delta Lake tables beside plain Parquet of the same messages, side by side in one run.

The dry-run messages (benchmarks/data.py's files) written again as a Delta table by the
`deltalake` package (one commit a file, the change data feed on): a dry run of the table
against a dry run of the Parquet files, alternated after a warm-up; then the table's full
sync (ledger writes, the in-process instant target), a sync with no commit since (no data file
read), and a nightly sync after an UPDATE of 1% of the rows (the feed's rows only) against the
full sync's time; and the peak memory of a nightly sync after an UPDATE of every row (a feed
of the whole table twice, pre- and post-images) against the full sync's, each in a process of
its own."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from benchmarks.data import generate
from benchmarks.pipeline_bench import ours, reset, table_against_parquet

#: deltalake's writers run in a child: its runtime may abort a process at interpreter exit
#: (STACK-NOTES.md), which must not be the benchmark's
_WRITER = """
import json, sys
import pyarrow.parquet as pq
from deltalake import DeltaTable, write_deltalake
step = json.loads(sys.argv[1])
if "files" in step:
    for i, f in enumerate(step["files"]):
        conf = {"delta.enableChangeDataFeed": "true"} if i == 0 else None
        write_deltalake(step["table"], pq.read_table(f), mode="append", configuration=conf)
if "update" in step:
    DeltaTable(step["table"]).update(updates={"text": "concat(text, ' (edited)')"}, predicate=step["update"])
print(json.dumps({"version": DeltaTable(step["table"]).version()}), flush=True)
"""


def _measured(mapping: Path, work: Path, fresh: bool) -> dict:
    """One delivering sync in a process of its own (benchmarks.memory): seconds, counts, peak RSS."""
    root = Path(__file__).resolve().parent.parent
    cmd = [sys.executable, "-m", "benchmarks.memory", str(mapping), str(work), "--deliver"]
    out = subprocess.run(cmd if fresh else [*cmd, "--keep"], capture_output=True, text=True, timeout=3600, cwd=root)
    lines = [x for x in out.stdout.splitlines() if x.startswith("{")]
    if not lines:  # deltalake's runtime may abort the process after its work (STACK-NOTES.md)
        raise RuntimeError(f"measured sync failed: {out.stderr[-2000:]}")
    return json.loads(lines[-1])


def _delta(**step) -> int:
    out = subprocess.run(
        [sys.executable, "-c", _WRITER, json.dumps(step)], capture_output=True, text=True, timeout=1800
    )
    if out.returncode != 0 and '"version"' not in out.stdout:
        raise RuntimeError(f"deltalake writer failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])["version"]


def _write(base: Path, n: int) -> tuple[Path, Path, Path]:
    """(parquet mapping, delta mapping, table) for `n` messages, the table written once."""
    parquet_map = generate(base / f"m{n}", n)
    d = base / f"delta{n}"
    table, delta_map = d / "table", d / "mapping.yaml"
    if not (d / "done").exists():
        import shutil

        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        files = sorted(str(p) for p in (base / f"m{n}" / "data").glob("*.parquet"))
        _delta(table=str(table), files=files)
        (d / "done").write_text("")
    m = yaml.safe_load(parquet_map.read_text())
    m["source"] = {"name": "bench-delta", "type": "delta", "delta": {"table": str(table)}}
    delta_map.write_text(yaml.safe_dump(m, sort_keys=False))
    return parquet_map, delta_map, table


def run(base: Path, n: int, log=print) -> dict:
    parquet, delta, table = _write(base, n)
    out: dict = {"messages": n, **table_against_parquet(parquet, delta, base, "delta")}
    best = {k: max(r["per_min"] for r in out[k]) for k in ("parquet", "delta")}
    log(f"delta dry run {best['delta'] / 1e6:.2f}M msg/min, {out['ratio']:.2f} of Parquet")

    # the nightly path: a full sync, a sync with no commit, a sync after 1% updated
    work = base / "work-delta-full"
    reset(work)
    version = _delta(table=str(table))
    full, _, s_full = ours(delta, work)
    out["full"] = {"seconds": s_full, "delivered": full.counts.delivered, "version": version}
    noop, _, s_noop = ours(delta, work)
    out["noop"] = {"seconds": s_noop, "read": noop.counts.read, "requests": noop.counts.requests}
    after = _delta(table=str(table), update="message_id LIKE '%00'")
    nightly, _, s_nightly = ours(delta, work)
    c = nightly.counts
    out["nightly"] = {
        "seconds": s_nightly,
        "version": after,
        "read": c.read,
        "changed_after_delivery": c.changed_after_delivery,
        "requests": c.requests,
        "ratio_to_full": s_nightly / s_full,
    }
    out["noop"]["ratio_to_full"] = s_noop / s_full
    log(
        f"delta full sync {s_full:.1f}s, no-op {s_noop:.2f}s, nightly after 1% updated {s_nightly:.2f}s "
        f"({s_nightly / s_full:.3f} of full; {c.changed_after_delivery:,} changed after delivery)"
    )
    # memory: a nightly after every row updated against the full sync, a process each
    mem = base / "work-delta-memory"
    full_mem = _measured(delta, mem, fresh=True)
    _delta(table=str(table), update="1 = 1")
    all_mem = _measured(delta, mem, fresh=False)
    out["memory"] = {
        "full": full_mem,
        "all_updated": all_mem,
        "ratio": all_mem["peak_rss_bytes"] / full_mem["peak_rss_bytes"],
    }
    log(
        f"delta peak memory: full sync {full_mem['peak_rss_bytes'] / 2**20:.0f} MiB, nightly after every row "
        f"updated {all_mem['peak_rss_bytes'] / 2**20:.0f} MiB ({out['memory']['ratio']:.2f}; "
        f"{all_mem['changed']:,} changed after delivery)"
    )
    # the next run of the benchmark starts from the table as generated, not the updated one
    (base / f"delta{n}" / "done").unlink()
    return out


def rows(m: dict) -> list[tuple[str, str, str, str]]:
    """Rows for the results table."""
    best = {k: max(m[k], key=lambda r: r["per_min"]) for k in ("parquet", "delta")}
    f, z, ni = m["full"], m["noop"], m["nightly"]
    out = [
        (
            f"Delta table dry run, {m['messages']:,} messages (10 commits)",
            f"{best['delta']['per_min'] / 1e6:.2f}M msg/min, the same as Parquet files "
            f"{best['parquet']['per_min'] / 1e6:.2f}M",
            f"{m['ratio']:.2f} of Parquet",
            ">= 0.8 of Parquet",
        ),
        (
            "Delta nightly sync after 1% of rows updated (change data feed)",
            f"{ni['seconds']:.2f}s, {ni['read']:,} read, {ni['changed_after_delivery']:,} changed after delivery, "
            f"{ni['requests']} requests",
            f"{ni['ratio_to_full']:.3f} of the full sync ({f['seconds']:.1f}s)",
            "<= 0.05 of the full sync",
        ),
        (
            "Delta sync with no commit since",
            f"{z['seconds']:.2f}s, {z['read']} read, {z['requests']} requests",
            f"{z['ratio_to_full']:.4f} of the full sync",
            "no data file read, 0 requests",
        ),
    ]
    if "memory" in m:
        mm = m["memory"]
        out.append(
            (
                "Delta nightly after every row updated (a feed of the table twice): peak memory",
                f"{mm['all_updated']['peak_rss_bytes'] / 2**20:.0f} MiB, {mm['all_updated']['changed']:,} changed "
                f"after delivery, beside the full sync's {mm['full']['peak_rss_bytes'] / 2**20:.0f} MiB",
                f"{mm['ratio']:.2f} of the full sync's peak",
                "<= 1.5 of the full sync's (the feed read twice, a chunk at a time; held whole it was 3.25)",
            )
        )
    return out
