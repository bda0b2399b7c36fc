"""The Ledger: one database, its tables' operations mixed in by concept (see __init__.py)."""

from __future__ import annotations

from core.ledger.backfill import Backfills
from core.ledger.db import OPEN_RETRY_S, RETRY_S, create_engine, guarded, safe_url, upgrade
from core.ledger.deliveries import Deliveries
from core.ledger.documents import Documents
from core.ledger.erasures import Erasures
from core.ledger.leases import Leases
from core.ledger.ratelimits import RateLimits
from core.ledger.rewrites import Rewrites
from core.ledger.runs import Runs
from core.ledger.sources import Sources


class Ledger(Runs, Deliveries, Leases, Sources, Backfills, Erasures, Rewrites, Documents, RateLimits):
    """One ledger database; opening it upgrades its schema to the newest revision."""

    def __init__(self, url: str, retry_s: float = RETRY_S):
        self.url = url
        self.safe_url = safe_url(url)
        self.engine = create_engine(url)
        # a ledger that cannot be reached at all is more often a wrong URL than a failover:
        # opening gives up sooner than a call in the middle of a run
        self.retry_s = min(retry_s, OPEN_RETRY_S)
        self._open()
        self.retry_s = retry_s

    @guarded("opening the ledger")
    def _open(self) -> None:
        upgrade(self.engine, self.url)

    def close(self) -> None:
        self.engine.dispose()
