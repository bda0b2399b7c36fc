"""Peak RSS of one dry-run sync (extract, validate, map, stage, batch, ledger lookups), in
its own process so the numbers of different sizes do not mix. Prints JSON.

The peak is VmHWM from /proc/self/status: the high-water mark of this process's own memory.
getrusage's ru_maxrss is not used: Linux carries it across exec, so a child started from
a big parent reports the parent's size (the first version of this benchmark measured the
runner that way: 727 / 1163 MiB where this process never went past ~600 MiB)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from benchmarks.pipeline_bench import ours, reset


def high_water_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024  # kB
    raise RuntimeError("no VmHWM in /proc/self/status")


if __name__ == "__main__":
    mapping, work = Path(sys.argv[1]), Path(sys.argv[2])
    reset(work)
    report, phases, seconds = ours(mapping, work, outbox=True)
    print(
        json.dumps(
            {
                "messages": report.counts.read,
                "planned": report.counts.planned,
                "seconds": seconds,
                "peak_rss_bytes": high_water_bytes(),
                "at": time.time(),
            }
        )
    )
