"""Track: after a run, ask MemOS Cloud how the asynchronous extraction of its requests went.

With `async_mode` MemOS acknowledges a request at once and extracts memories in the
background; a failure there is invisible to the loader unless we poll `/get/status` for
the task ids the ledger recorded. Optional (`target.track_extraction`), bounded by
`target.extraction_wait_s`.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

from core.errors import TerminalBatchError, TransientError
from core.ledger import Ledger

_RUNNING = {"running", "pending", "queued", "waiting", "processing", "in_progress"}
_DONE = {"completed", "success", "succeeded", "done", "finished"}


def track_extraction(
    client, ledger: Ledger, run_id: str, wait_s: float, stop: threading.Event, poll_s: float = 1.0
) -> dict[str, int]:
    """Final status of each extraction task of a run: completed | failed | running | unknown."""
    out: Counter = Counter()
    todo = ledger.run_task_ids(run_id)
    deadline = time.monotonic() + wait_s
    while todo:
        still = []
        for task_id in todo:
            try:
                status = client.task_status(task_id).lower()
            except (TransientError, TerminalBatchError):
                status = "unknown"
            if status in _RUNNING and time.monotonic() < deadline and not stop.is_set():
                still.append(task_id)
            elif status in _DONE:
                out["completed"] += 1
            elif status in _RUNNING:
                out["running"] += 1
            else:
                out[status if status == "failed" else "unknown"] += 1
        todo = still
        if todo:
            stop.wait(poll_s)
    return dict(out)
