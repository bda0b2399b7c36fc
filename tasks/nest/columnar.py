"""The columnar explode: Arrow's list flattening over a batch whose records share one typed
shape (OpenAI chat, ShareGPT, a table's list<struct> column); None when the batch is not
such a batch, and the walk takes it."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

from core.config import NestConfig
from tasks.extract.records import RECORD_COLUMN
from tasks.nest.rows import RECORD, Exploded
from tasks.quarantine import POSITION


def explode_columnar(
    rb: pa.RecordBatch, nest: NestConfig, offset: int, row_column: str, skip: Sequence = ()
) -> Exploded | None:
    """The walk's rows computed on Arrow columns, or None when this batch needs the walk: more
    than one level, perspectives, kept JSON (nest.keep), a level that is not a list, a line Arrow cannot parse or
    type (not JSON, a value that changes type), a null or non-list where the list should be,
    nested values other than objects of scalars, text that is not a string."""
    if (
        len(nest.levels) != 1
        or nest.perspectives is not None
        or nest.inline
        or nest.keep
        or nest.levels[0].kind != "list"
    ):
        return None
    if RECORD_COLUMN in rb.schema.names:
        table = _parse_lines(rb.column(RECORD_COLUMN))
        if table is None:
            return None
    else:
        table = pa.Table.from_batches([rb]).combine_chunks()
    level = nest.levels[0]
    if level.column is None:
        return None  # the records themselves are the list: the walk takes them
    root, *inner = level.column.split(".")
    if root not in table.column_names:
        return None
    text = set(nest.text)
    base: dict[str, pa.Array] = {}
    for name in table.column_names:
        arr = table.column(name).chunk(0) if table.column(name).num_chunks == 1 else table.column(name).combine_chunks()
        if name == root:
            continue
        if not _flat(name, arr, base, text):
            return None
    lists = table.column(root).combine_chunks() if table.num_rows else None
    if lists is None:
        return Exploded(pa.table({}))
    holder = lists
    for k in inner:  # a list inside objects: their plain fields are kept as <root>.<key>
        if not pa.types.is_struct(holder.type) or holder.null_count or holder.type.get_field_index(k) < 0:
            return None
        if holder is lists:
            for f, child in zip(holder.type, holder.flatten()):
                if f.name != k and not pa.types.is_nested(f.type):
                    base[f"{root}.{f.name}"] = child
        holder = holder.field(k)
    lists = holder
    if not (pa.types.is_list(lists.type) or pa.types.is_large_list(lists.type)) or lists.null_count:
        return None
    values = lists.flatten()
    parents = pc.list_parent_indices(lists).to_numpy().astype(np.int64)
    elem: dict[str, pa.Array] = {}
    prefix = level.name
    if pa.types.is_struct(values.type):
        if values.null_count:
            return None  # a null among objects: the walk makes it a `.value` row
        for f, child in zip(values.type, values.flatten()):
            if not _flat(f"{prefix}.{f.name}", child, elem, text):
                return None
    elif pa.types.is_nested(values.type):
        return None
    else:
        elem[f"{prefix}.value"] = values
    lengths = pc.list_value_length(lists).to_numpy(zero_copy_only=False).astype(np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    idx = np.arange(len(values), dtype=np.int64)
    elem[f"{prefix}.index"] = pa.array(idx - starts[parents])
    out = Exploded(pa.table({}))
    if nest.skip_empty and nest.text:
        empty = np.ones(len(values), dtype=bool)
        for t in nest.text:
            col = elem.get(t)
            if col is None and t in base:
                col = base[t].take(pa.array(parents))
            if col is not None:
                present = pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(col.cast(pa.string()))), 0)
                empty &= ~pc.fill_null(present, False).to_numpy(zero_copy_only=False)
        for rule in skip:  # rows a skip rule takes are counted by it, not as empty
            col = elem.get(rule.column)
            if col is None and rule.column in base:
                col = base[rule.column].take(pa.array(parents))
            if col is not None:
                hit = pc.is_in(pc.cast(col, pa.string(), safe=False), value_set=pa.array(rule.values, pa.string()))
                empty &= ~pc.fill_null(hit, False).to_numpy(zero_copy_only=False)
        if empty.any():
            out.skipped = int(empty.sum())
            keep = pa.array(~empty)
            elem = {k: v.filter(keep) for k, v in elem.items()}
            parents = parents[~empty]
    n = len(parents)
    first = np.r_[True, parents[1:] != parents[:-1]] if n else np.zeros(0, dtype=bool)
    rows = np.arange(n, dtype=np.int64)
    position = rows - np.maximum.accumulate(np.where(first, rows, 0)) if n else rows
    take = pa.array(parents)
    cols = {k: v.take(take) for k, v in base.items()}
    cols.update(elem)
    record = pa.array(parents + offset)
    cols[POSITION] = pa.array(position)
    cols[RECORD] = record
    cols[row_column] = record
    out.table = pa.table({k: v.cast(pa.string()) if pa.types.is_null(v.type) else v for k, v in cols.items()})
    return out


def _flat(name: str, arr: pa.Array, out: dict, text: set) -> bool:
    """A record's or element's value as the walk flattens it: objects as dotted names, text
    fields as they are. False when only the walk can say what it becomes (a list, a null
    object, text that is not a string)."""
    t = arr.type
    if name in text:
        if not (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_null(t)):
            return False
        out[name] = arr
        return True
    if pa.types.is_struct(t):
        # an object absent or null in some rows: its fields are null there (the walk has no
        # column for an absent object and an all-null one for a null: same rows once mapped)
        return all(_flat(f"{name}.{f.name}", child, out, text) for f, child in zip(t, arr.flatten()))
    if pa.types.is_nested(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return False
    out[name] = arr
    return True


def _parse_lines(texts: pa.ChunkedArray | pa.Array) -> pa.Table | None:
    """JSON lines as one Arrow table, strings kept strings (Arrow's reader would turn ISO
    times into timestamps, the walk keeps the text); None if any line does not parse or
    types (the walk then says which record is bad and why)."""
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks()
    if not len(texts):
        return None
    joined = pc.binary_join(pa.ListArray.from_arrays(pa.array([0, len(texts)], pa.int32()), texts), "\n")
    buf = joined[0].as_buffer()
    opts = pajson.ReadOptions(use_threads=False, block_size=max(1 << 20, buf.size + 1))
    try:
        table = pajson.read_json(pa.BufferReader(buf), read_options=opts)
        if any(_has_time(f.type) for f in table.schema):
            schema = pa.schema([f.with_type(_time_as_text(f.type)) for f in table.schema])
            table = pajson.read_json(
                pa.BufferReader(buf),
                read_options=opts,
                parse_options=pajson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="infer"),
            )
        if table.num_rows != len(texts) or any(_has_time(f.type) for f in table.schema):
            return None
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    except RecursionError:  # a type nested deeper than Python recurses: the walk quarantines the record
        return None
    return table


def _has_time(t: pa.DataType) -> bool:
    if pa.types.is_timestamp(t) or pa.types.is_date(t) or pa.types.is_time(t):
        return True
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return _has_time(t.value_type)
    if pa.types.is_struct(t):
        return any(_has_time(f.type) for f in t)
    return False


def _time_as_text(t: pa.DataType) -> pa.DataType:
    if pa.types.is_timestamp(t) or pa.types.is_date(t) or pa.types.is_time(t):
        return pa.string()
    if pa.types.is_list(t):
        return pa.list_(t.value_field.with_type(_time_as_text(t.value_type)))
    if pa.types.is_struct(t):
        return pa.struct([f.with_type(_time_as_text(f.type)) for f in t])
    return t
