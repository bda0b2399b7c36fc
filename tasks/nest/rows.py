"""What an explode returns, and the columns it adds (record, perspective)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa

RECORD = "record"


PERSPECTIVE = "perspective"


@dataclass
class Exploded:
    table: pa.Table  # one row per message; ROW_COLUMN holds the record's row in the file
    bad: list[tuple[int, str, object]] = field(default_factory=list)  # (row in file, reason, record)
    skipped: int = 0  # elements left out by nest.skip_empty
    walked: bool = False  # made by the walk (the batch's records did not fit the columnar explode)
