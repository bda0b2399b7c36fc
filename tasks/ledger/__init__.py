"""The ledger: what reached which MemOS target, in SQLite or PostgreSQL. One concept a module:

* runs.py        runs and their reports; crashed-run detection
* deliveries.py  requests and messages (sent -> delivered | failed), conversation progress
* leases.py      one sender per conversation across runs and workers
* sources.py     file manifest, cursor, column types, per-source overview
* backfill.py    backfill partitions
* erasures.py    tombstones and the erasure log (`memos-etl forget`)
* rewrites.py    conversations a source policy rewrites (on_change: replace, on_delete: delete)
* tables.py      the schema; migrations/ upgrades an existing ledger to it in place (db.py)
"""

from __future__ import annotations

from tasks.ledger.backfill import Backfills
from tasks.ledger.db import OPEN_RETRY_S, RETRY_S, LedgerError, create_engine, guarded, safe_url, upgrade
from tasks.ledger.deliveries import BatchRecord, Deliveries, KnownMessages, UnitDelivered, pairs, unit_hash
from tasks.ledger.erasures import Erasures, erased_mask
from tasks.ledger.leases import Leases
from tasks.ledger.rewrites import Rewrites
from tasks.ledger.runs import Runs
from tasks.ledger.sources import Sources
from tasks.ledger.tables import TAIL

__all__ = ["Ledger", "LedgerError", "BatchRecord", "KnownMessages", "TAIL", "UnitDelivered", "erased_mask", "pairs",
           "unit_hash"]


class Ledger(Runs, Deliveries, Leases, Sources, Backfills, Erasures, Rewrites):
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
