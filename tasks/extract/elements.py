"""Elements kept under a key, one row each (a Redis list's elements, a DynamoDB item's list
of messages), decoded by an app's rules into its columns (tasks/extract/apps/).

The rows carry `key` (the key, as text), `session` (the session it names), `index` (the
element's place from the oldest) and `value` (the element's JSON text)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from core.errors import SourceError
from tasks.extract.blocks import ROW_COLUMN
from tasks.quarantine import BadRow


def hand_over(source: str, rel: str, sink: list[BadRow], bad: list[BadRow] | None) -> None:
    """A page's bad records to the caller's list; without one (a schema probe), the first stops
    the unit."""
    if bad is not None:
        bad.extend(sink)
    elif sink:
        raise SourceError(source, rel, f"{sink[0].where}: {sink[0].reason}")


def decoded(app, rb: pa.RecordBatch, pos: np.ndarray, bad: list[BadRow], whole: bool) -> pa.RecordBatch:
    """`rb` with the app's columns added (LangChain: lc.role, lc.content, ...). A value the app
    cannot decode is a BadRow named by its key and index; `pos` is each row's place in its
    unit, written as ROW_COLUMN when rows are missing (`whole` false, or decoding dropped some)."""
    mine: list[BadRow] = []
    view = pa.RecordBatch.from_arrays([rb.column("value"), rb.column("session")], names=["message", "session_id"])
    out = app.decode(view, 0, mine)
    keys, idx = rb.column("key").to_pylist(), rb.column("index").to_pylist()
    for b in mine:
        bad.append(BadRow(int(pos[b.row]), f"key {keys[b.row]} index {idx[b.row]}", b.reason, b.raw))
    kept = out.column(ROW_COLUMN).to_numpy() if ROW_COLUMN in out.schema.names else np.arange(rb.num_rows)
    base = rb if len(kept) == rb.num_rows else rb.take(pa.array(kept))
    added = [c for c in out.schema.names[2:] if c != ROW_COLUMN]
    arrays = [*base.columns, *(out.column(c) for c in added)]
    names = [*base.schema.names, *added]
    if not whole or len(kept) != rb.num_rows:  # bad records among them: each row's own place
        arrays.append(pa.array(pos[kept]))
        names.append(ROW_COLUMN)
    return pa.RecordBatch.from_arrays(arrays, names=names)
