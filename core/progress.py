"""Progress of long runs: terminal bars for the CLI, a progress artifact in the Prefect UI.

The pipeline reports (phase, done, total) for its two coarse phases: units extracted and
buckets loaded. Sinks registered here get every report; the CLI registers a terminal bar,
the flows a Prefect progress artifact. A run's progress is 40% extract, 60% load.
"""

from __future__ import annotations

import contextvars
import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

Sink = Callable[[str, int, int], None]
sinks: list[Sink] = []  # process-wide: the CLI adds its bar before a flow runs in-process

WEIGHTS = {"extract": 0.4, "load": 0.6}


def report(phase: str, done: int, total: int) -> None:
    for sink in list(sinks):
        try:
            sink(phase, done, total)
        except Exception:  # progress is never worth failing a run over
            pass


def combined(*extra: Sink) -> Sink:
    def both(phase: str, done: int, total: int) -> None:
        report(phase, done, total)
        for s in extra:
            try:
                s(phase, done, total)
            except Exception:
                pass

    return both


class TerminalBars:
    """rich progress bars on stderr, one per phase; nothing when stderr is not a terminal."""

    def __init__(self, label: str = ""):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.enabled = sys.stderr.isatty()
        self._tasks: dict[str, int] = {}
        self._lock = threading.Lock()
        self.bars = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            transient=False,
            disable=not self.enabled,
        )
        self.label = label

    def __enter__(self) -> TerminalBars:
        self.bars.start()
        sinks.append(self)
        return self

    def __exit__(self, *exc) -> None:
        if self in sinks:
            sinks.remove(self)
        self.bars.stop()

    def __call__(self, phase: str, done: int, total: int) -> None:
        with self._lock:
            if phase not in self._tasks:
                unit = "files" if phase == "extract" else "buckets"
                self._tasks[phase] = self.bars.add_task(f"{self.label}{phase} ({unit})", total=max(total, 1))
            self.bars.update(self._tasks[phase], completed=done, total=max(total, 1))  # type: ignore[arg-type]  # add_task gave it: a TaskID


log = logging.getLogger("core.progress")


class PrefectProgress:
    """A Prefect progress artifact (0-100) for the current flow run, updated at most once a second.

    API calls go out on a background thread, one at a time (each costs tens of milliseconds and
    must not hold up the run, or the file or bucket that reported): first the artifact's
    creation at 0%, then updates, the latest value winning. The final 100% is sent by the
    caller's thread after the one in flight, so it is there when the run ends. The threads
    carry the caller's context: the artifact belongs to the flow run it was made in."""

    def __init__(self, key: str, description: str):
        self.id: Any = None  # the artifact, once created
        self.state: dict[str, float] = {}
        self._last = time.monotonic()  # it is made at 0%: the first update can wait a second
        self._lock = threading.Lock()
        self._sending: threading.Thread | None = self._start(self._create, key, description)

    def __call__(self, phase: str, done: int, total: int) -> None:
        with self._lock:
            self.state[phase] = done / total if total else 1.0
            pct = round(min(100.0 * sum(WEIGHTS.get(p, 0) * f for p, f in self.state.items()), 100.0), 1)
            now = time.monotonic()
            if pct < 100.0:
                if now - self._last < 1.0 or (self._sending is not None and self._sending.is_alive()):
                    return
                self._last = now
                self._sending = self._start(self._send, pct)
                return
            sending = self._sending
        if sending is not None:
            sending.join(timeout=10)  # the artifact must exist, and an older value not land after 100%
        self._send(pct)

    @staticmethod
    def _start(fn, *args) -> threading.Thread:
        t = threading.Thread(
            target=contextvars.copy_context().run, args=(fn, *args), daemon=True, name="memos-etl-progress"
        )
        t.start()
        return t

    def _create(self, key: str, description: str) -> None:
        from prefect.artifacts import create_progress_artifact

        try:
            self.id = create_progress_artifact(progress=0.0, key=key, description=description)
        except Exception as exc:  # progress is informative: never fail a run over it
            log.warning("progress artifact not created: %s", exc)

    def _send(self, pct: float) -> None:
        from prefect.artifacts import update_progress_artifact

        if self.id is None:
            return
        try:
            update_progress_artifact(self.id, progress=pct)
        except Exception as exc:
            log.debug("progress artifact update failed: %s", exc)
