"""Rows that are not messages, left out by the mapping's `skip` rules (an export's joins, topic
changes, service lines, bots when asked): one vectorised membership test per rule on a whole
batch, counted by `<kind>: <value>`. Not read and not an outcome, like nest.skip_empty."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.config import Mapping


def skip_mask(mapping: Mapping, rb: pa.RecordBatch, skipped: Counter) -> np.ndarray | None:
    """Which rows of `rb` the rules skip (None: none), with `skipped` counted."""
    if not mapping.skip or rb.num_rows == 0:
        return None
    drop = np.zeros(rb.num_rows, dtype=bool)
    names = rb.schema.names
    for rule in mapping.skip:
        if rule.column not in names:
            continue  # a key no record of this batch had: nothing to skip by it
        col = rb.column(rule.column)
        text = col if pa.types.is_string(col.type) else pc.cast(col, pa.string(), safe=False)
        hit = pc.fill_null(pc.is_in(text, value_set=pa.array(rule.values, pa.string())), False)
        hit_np = hit.to_numpy(zero_copy_only=False) & ~drop  # a row is skipped once, by its first rule
        if hit_np.any():
            for value, n in Counter(text.filter(pa.array(hit_np)).to_pylist()).items():
                skipped[f"{rule.kind or rule.column}: {value}"] += n
            drop |= hit_np
    return drop if drop.any() else None
