"""Key scan: `memos-etl reconcile SOURCE` finds delivered messages a source no longer holds.

A nightly sync sees soft deletes (fields.deleted) and messages missing from files it reads
again, but not a row hard-deleted below a SQL cursor or a file removed from the lake: nothing
re-reads them. The scan reads every key the source holds now (every unit, whatever the cursor
or manifest says; only the mapped key and ids, no validation, nothing staged or sent) and
compares them with the keys the ledger delivered for the source. Delivered and not read any
more (or read flagged deleted) = deleted in source.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.config import Mapping, RunConfig
from core.errors import SourceError
from core.identity import pairs, unit_hash
from core.ledger import Ledger
from core.report import Counts
from tasks.extract import ROW_COLUMN, Slice, open_source
from tasks.map import map_batch
from tasks.nest import explode
from tasks.nest.rows import off_path_flag


def scan(mapping: Mapping, cfg: RunConfig, source=None) -> dict:
    """Compare the source's keys now with what the ledger delivered for it. Returns a summary
    with `deleted_in_source` and `counts.changes`-style per-conversation listing."""
    source = source or open_source(mapping)
    name = mapping.source.name
    target = cfg.target.ledger_name
    los, his = [], []
    flagged_lo, flagged_hi = [], []
    unreadable: list[str] = []
    partial: set[int] = set()  # units with records nest could not explode: their keys are unknown
    units = source.units(Slice())
    off_path = off_path_flag(mapping)
    for u in units:
        try:
            bad: list = []
            for offset, rb in source.iter_batches(u, bad):
                if bad:  # records that cannot be read: their keys are unknown
                    partial.add(unit_hash(name, u.rel))
                if mapping.nest is not None:
                    ex = explode(rb, mapping.nest, offset, ROW_COLUMN, only=mapping.perspective_ids())
                    if ex.bad:
                        partial.add(unit_hash(name, u.rel))
                    if ex.table.num_rows == 0:
                        continue
                    table = ex.table
                    for col in mapping.referenced_columns():  # a key no record had: nulls, as staging does
                        if col not in table.schema.names and col not in mapping.constants:
                            table = table.append_column(col, pa.nulls(table.num_rows, pa.string()))
                    rb = table.combine_chunks().to_batches()[0]
                mapped = map_batch(rb, mapping, u.rel, offset)
                gone = pc.fill_null(mapped.column("deleted"), False).to_numpy(zero_copy_only=False)
                if off_path:  # still in the chat, off the path the app shows: held, not deleted
                    gone = np.zeros(len(gone), dtype=bool)
                lo, hi = mapped.column("key_lo").to_numpy(), mapped.column("key_hi").to_numpy()
                los.append(lo[~gone])
                his.append(hi[~gone])
                flagged_lo.append(lo[gone])
                flagged_hi.append(hi[gone])
            if bad:
                partial.add(unit_hash(name, u.rel))
        except SourceError as exc:
            unreadable.append(f"{u.rel}: {exc}")
            partial.add(unit_hash(name, u.rel))
    held = pairs(
        np.concatenate(los) if los else np.empty(0, np.int64), np.concatenate(his) if his else np.empty(0, np.int64)
    )
    ledger = Ledger(cfg.state.ledger())
    try:
        lo, hi, units_of = ledger.source_keys(target, name)
        missing = ~np.isin(pairs(lo, hi), held)
        if partial:  # messages of units read only in part (or not at all) are not judged
            missing &= ~np.isin(units_of, np.array(sorted(partial), dtype=np.int64))
        counts = Counts()
        if missing.any():
            counts.note_change("deleted", ledger.conversations_of(target, lo[missing], hi[missing]))
    finally:
        ledger.close()
    return {
        "source": name,
        "target": target,
        "units": len(units),
        "keys_read": int(len(held)),
        "flagged_deleted": int(sum(len(x) for x in flagged_lo)),
        "delivered": int(len(lo)),
        "deleted_in_source": int(missing.sum()),
        "conversations": counts.changes,
        "unreadable": unreadable,
        "units_not_judged": len(partial),
    }
