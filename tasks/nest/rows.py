"""What an explode returns, and the columns it adds (record, perspective, branch, traffic)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import pyarrow as pa

from core.config import Mapping

RECORD = "record"


PERSPECTIVE = "perspective"

#: on a tree's rows: "" on the path the app shows, "~<id of the branch's first node>" on an
#: abandoned branch (nest.branches all); presets add it to conversation_id and source_key
BRANCH = "branch"

#: with nest.abandoned mark, on a tree's rows: false on the path shown, true off it (a
#: regenerated answer's predecessor, an edited prompt's); presets map it to fields.deleted,
#: and the loader reads the flag as "off the path", not as deleted (`off_path_flag`)
ABANDONED = "abandoned"

#: how the loader counts a row off the path that was never delivered: skipped (not read, not
#: an outcome), by `<kind>: <value>` as the skip rules count
ABANDONED_SKIPPED = "abandoned: branch"

#: on the rows of a level with `traffic`: call, result or context (hidden), for the skip rules
TRAFFIC = "traffic"


def off_path_flag(mapping: Mapping) -> bool:
    """Whether a mapping's fields.deleted is nest's `abandoned` column (nest.abandoned mark):
    the rows it flags are still in the chat, off the path the app shows. One never delivered
    is skipped; one delivered is `changed after delivery` (the conversation the app shows is
    not what MemOS was sent), for on_change (docs/app-databases.md, "Open WebUI")."""
    return mapping.nest is not None and mapping.nest.abandoned == "mark" and mapping.fields.deleted == ABANDONED


@dataclass
class Exploded:
    table: pa.Table  # one row per message; ROW_COLUMN holds the record's row in the file
    bad: list[tuple[int, str, object]] = field(default_factory=list)  # (row in file, reason, record)
    skipped: int = 0  # elements left out by nest.skip_empty
    # rows the walk marked (tool traffic, hidden context: column traffic) and left out by the
    # mapping's first skip rule that takes them, by `<kind>: <value>` as the skip rules count
    # (dropped here, not after mapping: filtering a batch copies every column of it)
    kinds: Counter = field(default_factory=Counter)
    walked: bool = False  # made by the walk (the batch's records did not fit the columnar explode)
