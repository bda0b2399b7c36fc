"""Peak RSS of one dry-run sync (extract, validate, map, stage, batch, ledger lookups), in
its own process so the numbers of different sizes do not mix. Prints JSON."""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

from benchmarks.pipeline_bench import ours, reset

if __name__ == "__main__":
    mapping, work = Path(sys.argv[1]), Path(sys.argv[2])
    reset(work)
    report, phases, seconds = ours(mapping, work, outbox=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    print(json.dumps({"messages": report.counts.read, "planned": report.counts.planned, "seconds": seconds,
                      "peak_rss_bytes": peak, "at": time.time()}))
