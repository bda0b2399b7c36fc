"""What a loader of one run holds (LoadContext: mapping, target, ledger, limits, quarantine),
and the retry backoff."""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from core.client import Target
from core.config import LoadConfig, Mapping, TargetConfig
from core.ledger import Ledger
from core.limiter import FleetLimiter, RateLimiter

log = logging.getLogger("memos_etl.load")


#: rows a bucket ordered on disk is loaded in at a time, at most: about what a bucket loaded in
#: memory holds (pipeline.BUCKET_ROWS), so both paths need about the same memory (fewer when
#: a quarter of load.sort_in_memory_bytes holds fewer)
STREAM_ROWS = 20_000


class RequestSink(Protocol):
    """Where a dry run's requests go instead of the target (the runner's Outbox)."""

    def write(self, route: str, body: str) -> None: ...
    def close(self) -> None: ...


@dataclass
class LoadContext:
    mapping: Mapping
    load: LoadConfig
    target_cfg: TargetConfig
    client: Target
    ledger: Ledger
    run_id: str
    quarantine_dir: Path
    resend_in_doubt: bool = False
    limiter: RateLimiter = field(default_factory=RateLimiter)
    stop: threading.Event = field(default_factory=threading.Event)
    fatal: list = field(default_factory=list)
    outbox: RequestSink | None = None  # dry run: takes the requests instead of the target
    fleet: FleetLimiter | None = None  # shared by all workers, or None
    failures_in_a_row: int = 0  # across all senders; a breaker for a target that is down
    # erasures of `memos-etl erase`, read once per run: (erased users, erased (user, conversation))
    erased: tuple = (frozenset(), frozenset())
    rewriting: bool = False  # this run sends conversations being rewritten; other runs hold them back
    # reads a file an attachment names (its location under the source; attachments.mode parts)
    read_attachment: Callable[[str], bytes] | None = None
    first_request_at: float | None = None  # time.time() of the run's first request to the target
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def failed(self, exc: Exception) -> None:
        with self._lock:
            self.failures_in_a_row += 1
            if self.failures_in_a_row >= self.load.max_consecutive_failures and not self.fatal:
                self.fatal.append(
                    f"MemOS at {self.target_cfg.base_url} looks down: {self.failures_in_a_row} "
                    f"requests failed in a row (last: {exc}). Nothing is lost; re-run when it is back."
                )
                self.stop.set()

    def succeeded(self) -> None:
        self.failures_in_a_row = 0

    @property
    def target(self) -> str:
        return self.target_cfg.ledger_name


def backoff_delay(attempt: int, base: float, cap: float, retry_after: float | None) -> float:
    """Exponential backoff with full jitter; never shorter than the server's Retry-After."""
    delay = random.uniform(0, min(cap, base * (2**attempt)))
    return max(delay, retry_after or 0.0)
