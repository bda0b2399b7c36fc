"""Graceful stop: the first SIGTERM or Ctrl-C drains the run, a second one exits at once.

Draining means: no new request is started; requests in flight finish and are recorded;
everything not sent is reported pending; the process exits with a resumable ledger.
"""

from __future__ import annotations

import signal
import threading

requested = threading.Event()


def install() -> None:
    """Route SIGTERM and SIGINT to a drain (main thread only)."""

    def handle(signum, _frame):
        if requested.is_set():
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)
            return
        requested.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handle)
