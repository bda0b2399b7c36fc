"""Time going backwards in a conversation, counted in the order the source gives its messages.

A conversation with `seq` is sent in seq order, and the loader counts a message whose
chat_time is earlier than the one before it there (tasks/load/filters.conversation_checks).
A conversation without `seq` is sent in chat_time order, where time cannot run back, so its
messages are counted here instead, as staging reads them: in file order, unit by unit."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


class Backwards:
    """One unit's count; `last` carries each conversation's last time across its batches."""

    def __init__(self) -> None:
        self.last: dict[str, int] = {}

    def count(self, mapped: pa.Table) -> int:
        """Messages of `mapped` (staging's rows, in source order) without seq whose time is
        earlier than the message before them in their conversation."""
        keep = pc.and_(pc.is_null(mapped.column("seq")), pc.is_valid(mapped.column("chat_time")))
        rows = mapped.filter(keep)
        if rows.num_rows == 0:
            return 0
        conv = pc.binary_join_element_wise(
            pc.fill_null(rows.column("user_id"), ""), pc.fill_null(rows.column("conversation_id"), ""), "\x1f"
        )
        coded = pc.dictionary_encode(conv.combine_chunks() if isinstance(conv, pa.ChunkedArray) else conv)
        codes = coded.indices.to_numpy()
        names = coded.dictionary.to_pylist()
        times = rows.column("chat_time").cast(pa.int64()).to_numpy()
        order = np.argsort(codes, kind="stable")  # each conversation's rows together, in source order
        c, t = codes[order], times[order]
        starts = np.r_[True, c[1:] != c[:-1]]
        back = int(((~starts[1:]) & (t[1:] < t[:-1])).sum())
        ends = np.r_[starts[1:], True]
        for code, first, last in zip(c[starts].tolist(), t[starts].tolist(), t[ends].tolist()):
            before = self.last.get(names[code])
            if before is not None and first < before:
                back += 1
            self.last[names[code]] = last
        return back
