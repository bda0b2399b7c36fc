"""Peak RSS of one dry-run sync (extract, validate, map, stage, batch, ledger lookups), or
of a delivering one (`--deliver`, from the state kept with `--keep`), in
its own process so the numbers of different sizes do not mix. Prints JSON.

The peak is VmHWM from /proc/self/status: the high-water mark of this process's own memory.
getrusage's ru_maxrss is not used: Linux carries it across exec, so a child started from
a big parent reports the parent's size (the first version of this benchmark measured the
runner that way: 727 / 1163 MiB where this process never went past ~600 MiB)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from benchmarks.pipeline_bench import ours, reset


def high_water_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024  # kB
    raise RuntimeError("no VmHWM in /proc/self/status")


if __name__ == "__main__":
    # MAPPING WORK [--deliver] [--keep]: a dry run by default; --deliver syncs into the
    # in-process instant target (ledger writes); --keep starts from the state WORK holds
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("mapping", type=Path)
    ap.add_argument("work", type=Path)
    ap.add_argument("--deliver", action="store_true")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    if not args.keep:
        reset(args.work)
    report, phases, seconds = ours(args.mapping, args.work, outbox=not args.deliver)
    c = report.counts
    print(
        json.dumps(
            {
                "messages": c.read,
                "planned": c.planned,
                "delivered": c.delivered,
                "changed": c.changed_after_delivery,
                "seconds": seconds,
                "peak_rss_bytes": high_water_bytes(),
                "at": time.time(),
            }
        ),
        flush=True,
    )
