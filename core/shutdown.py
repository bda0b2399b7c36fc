"""Graceful stop: the first SIGTERM or Ctrl-C drains the run, a second one exits at once.

Draining means: no new request is started; requests in flight finish and are recorded;
everything not sent is reported pending; the process exits with a resumable ledger.
"""

from __future__ import annotations

import signal
import threading

requested = threading.Event()
_runs: set[threading.Event] = set()
_runs_lock = threading.Lock()
_relay: threading.Thread | None = None


def _relay_request() -> None:
    requested.wait()
    with _runs_lock:
        for stop in _runs:
            stop.set()


def subscribe(stop: threading.Event) -> None:
    """Until unsubscribe(stop), a drain request sets `stop`. One relay thread per process
    blocks on the request: no polling, and nothing to join (or wait out) when a run ends."""
    global _relay
    with _runs_lock:
        _runs.add(stop)
        if _relay is None:
            _relay = threading.Thread(target=_relay_request, name="memos-etl-drain", daemon=True)
            _relay.start()
    if requested.is_set():  # asked before this run began, or while it subscribed
        stop.set()


def unsubscribe(stop: threading.Event) -> None:
    with _runs_lock:
        _runs.discard(stop)


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
