"""Nest: explode records that hold their messages inside them into one row per message.

Chat history often arrives as one record per conversation: a `messages` list (OpenAI chat
JSONL), a `conversations` list (ShareGPT), a tree of nodes (a ChatGPT export), numbered
sessions in an object (dialogue datasets), or a JSON text column in a table. The mapping's
`nest:` describes the levels; this module walks them and emits flat rows whose columns the
mapping's fields name like any other column:

- every scalar field of the record (nested objects as dotted names: `meta.lang`),
- per level, the element's fields as `<name>.<key>` and its place as `<name>.index`,
- `position`: the message's place in its record across all levels (0, 1, ...): an order,
- `record`: the record's number in its file; and, with perspectives, `perspective`.

Two ways, chosen per batch, with the same rows out (tests/test_nest_columnar.py checks one
against the other on every preset sample and on generated data):

- columnar (`explode_columnar`): one `list` level whose records Arrow can type (the JSON
  lines parse as one Arrow table; the list holds objects of scalars or scalars; text fields
  are strings): `list_flatten` and `list_parent_indices`, struct fields by name, no Python
  per record. OpenAI chat, ShareGPT and a table's list<struct> column usually take it.
- walked (`explode_walk`): Python per record, for what Arrow cannot type: content that is a
  string here and a list of parts there, trees, numbered keys, perspectives, a bad line in
  the batch. Rows still come out as Arrow columns; everything after this step is columnar.
A record that does not have the shape the mapping describes (not a list, a missing key, a cycle in a tree, not JSON) is
returned with its reason, for quarantine; it never stops the file.

* rows.py      what an explode returns
* columnar.py  the vectorised explode, when a batch's records share one typed shape
* walk.py      the walk, for everything else
* columns.py   paths into columns of JSON text (a SQL table's `chat`), records that are no one's chat
* tree.py      trees of messages: the path shown, and each abandoned branch (nest.branches all)
* traffic.py   tool calls, tool results and hidden context, marked for the skip rules"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import pyarrow as pa

from core.config import NestConfig
from tasks.nest.columnar import explode_columnar
from tasks.nest.rows import PERSPECTIVE, RECORD, Exploded
from tasks.nest.walk import explode_walk, to_text
from tasks.quarantine import POSITION

__all__ = ["PERSPECTIVE", "POSITION", "RECORD", "Exploded", "explode", "explode_columnar", "explode_walk", "to_text"]


def explode(
    rb: pa.RecordBatch,
    nest: NestConfig,
    offset: int,
    row_column: str,
    skip: Sequence = (),
    only: Collection[str] | None = None,
    wanted: Collection[str] | None = None,
    columnar: bool = True,
) -> Exploded:
    """Rows for every message of every record in a batch; malformed records in `bad`.
    Columnar where the batch allows it, walked otherwise. Rows the mapping's `skip` rules
    (SkipRule) match are kept, empty or not, for those rules to count by kind. `only`: the
    perspectives kept (the mapping's perspective list), None for all. `wanted`: the names
    the walk makes columns of (None: all). `columnar` False: straight to the walk (a file
    whose first batch needed it needs it again: the columnar try costs a parse of its own)."""
    out = explode_columnar(rb, nest, offset, row_column, skip) if columnar else None
    if out is not None:
        return out
    walked = explode_walk(rb, nest, offset, row_column, skip, only, wanted)
    walked.walked = True
    return walked
