"""The ledger: what reached which MemOS target, in SQLite or PostgreSQL. One concept a module:

* runs.py        runs and their reports; crashed-run detection
* deliveries.py  requests and messages (sent -> delivered | failed), conversation progress
* leases.py      one sender per conversation across runs and workers
* sources.py     file manifest, cursor, column types, per-source overview
* backfill.py    backfill partitions
* erasures.py    erasures (`memos-etl erase`): their records and log
* rewrites.py    conversations a source policy rewrites (on_change: replace, on_delete: delete)
* documents.py   document files uploaded to knowledge bases, version by version
* ratelimits.py  token buckets a fleet shares (load.fleet_limit kept in the state store)
* tables.py      the schema; migrations/ upgrades an existing ledger to it in place (db.py)
* revision.py    the newest schema revision (no SQLAlchemy)
* overview.py    `memos-etl status` read through the database driver alone

The names below are imported on first use, so `core.ledger.overview` (the quick `status`)
does not pay for SQLAlchemy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from core.errors import LedgerError

if TYPE_CHECKING:
    from core.identity import pairs, unit_hash
    from core.ledger.deliveries import BatchRecord, KnownMessages, UnitDelivered
    from core.ledger.erasures import erased_mask
    from core.ledger.ledger import Ledger
    from core.ledger.tables import TAIL

__all__ = [
    "Ledger",
    "LedgerError",
    "BatchRecord",
    "KnownMessages",
    "TAIL",
    "UnitDelivered",
    "erased_mask",
    "pairs",
    "unit_hash",
]

_HOME = {
    "Ledger": "ledger",
    "LedgerError": "db",
    "BatchRecord": "deliveries",
    "KnownMessages": "deliveries",
    "UnitDelivered": "deliveries",
    "pairs": "identity",
    "unit_hash": "identity",
    "erased_mask": "erasures",
    "TAIL": "tables",
}


def __getattr__(name: str) -> Any:
    if name in _HOME:
        home = _HOME[name]
        return getattr(importlib.import_module("core.identity" if home == "identity" else f"core.ledger.{home}"), name)
    raise AttributeError(f"module 'core.ledger' has no attribute {name!r}")
