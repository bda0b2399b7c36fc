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
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

from core.config import MediaText, NestConfig, NestLevel
from core.errors import NestError
from tasks.extract.records import RECORD_COLUMN  # noqa: F401  (JSON text of one record: tasks/extract/records.py)
from tasks.quarantine import POSITION  # noqa: E402,F401  (re-exported: the column nest writes)

RECORD = "record"
PERSPECTIVE = "perspective"


@dataclass
class Exploded:
    table: pa.Table  # one row per message; ROW_COLUMN holds the record's row in the file
    bad: list[tuple[int, str, object]] = field(default_factory=list)  # (row in file, reason, record)
    skipped: int = 0  # elements left out by nest.skip_empty


def explode(rb: pa.RecordBatch, nest: NestConfig, offset: int, row_column: str) -> Exploded:
    """Rows for every message of every record in a batch; malformed records in `bad`.
    Columnar where the batch allows it, walked otherwise."""
    out = explode_columnar(rb, nest, offset, row_column)
    return out if out is not None else explode_walk(rb, nest, offset, row_column)


def explode_walk(rb: pa.RecordBatch, nest: NestConfig, offset: int, row_column: str) -> Exploded:
    """The Python walk: any shape the mapping can describe, record by record."""
    if RECORD_COLUMN in rb.schema.names:
        texts = rb.column(RECORD_COLUMN).to_pylist()
        records: list = []
        for t in texts:
            try:
                records.append(json.loads(t))
            except ValueError as exc:
                records.append(NestError(f"not JSON: {exc}"))
            except RecursionError:
                records.append(NestError("not JSON: nested deeper than Python can read"))
    else:
        records = rb.to_pylist()
    rows: list[dict] = []
    out = Exploded(pa.table({}))
    text_paths = set(nest.text)
    for i, rec in enumerate(records):
        where = offset + i
        try:
            if isinstance(rec, NestError):
                raise rec
            if not isinstance(rec, dict):
                raise NestError(f"record is {_kind(rec)}, not an object")
            base: dict = {}
            # the nested values themselves are walked below, not copied into every row; of an
            # object holding them (a dialogue's `conversation`) its plain fields are kept
            roots = {_root(lv.column) for lv in nest.levels if lv.column}
            _flatten(rec, "", base, text_paths, nest.media, skip=roots)
            for r in roots:
                if isinstance(rec.get(r), dict):
                    base.update(
                        {
                            f"{r}.{k}": v
                            for k, v in rec[r].items()
                            if v is None or isinstance(v, (str, int, float, bool))
                        }
                    )
            found: list[dict] = []
            skipped = _walk(rec, nest, text_paths, 0, base, {}, found)
        except NestError as exc:
            out.bad.append((where, f"nest: {exc}", rec if not isinstance(rec, NestError) else texts[i]))
            continue
        out.skipped += skipped
        for pos, r in enumerate(found):
            r[POSITION] = pos
            r[RECORD] = where
            r[row_column] = where
        if nest.perspectives is not None:
            found = _perspectives(rec, found, nest)
        rows.extend(found)
    out.table = _to_table(rows)
    return out


def _walk(rec: dict, nest: NestConfig, text_paths: set, depth: int, flat: dict, scope: dict, out: list[dict]) -> int:
    """Depth-first over the levels; appends one flat dict per innermost element."""
    level = nest.levels[depth]
    skipped = 0
    for idx, elem in enumerate(_elements(rec, level, scope)):
        row = dict(flat)
        if isinstance(elem, dict):
            _flatten(
                elem,
                level.name + ".",
                row,
                text_paths,
                nest.media,
                skip={k for k in elem if _next_uses(nest, depth, f"{level.name}.{k}")},
            )
        else:
            row[f"{level.name}.value"] = elem
        row[f"{level.name}.index"] = idx
        if depth + 1 < len(nest.levels):
            skipped += _walk(rec, nest, text_paths, depth + 1, row, {**scope, level.name: elem}, out)
            continue
        if nest.skip_empty and nest.text and all(_empty(row.get(t)) for t in nest.text):
            skipped += 1
            continue
        out.append(row)
    return skipped


def _elements(rec: dict, level: NestLevel, scope: dict) -> list:
    if level.kind == "list":
        value = _resolve(rec, scope, level.column)
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError as exc:
                raise NestError(f"{level.column} is text but not JSON: {exc}") from None
        if value is None:
            raise NestError(f"{level.column} is missing")
        if not isinstance(value, list):
            raise NestError(f"{level.column} is {_kind(value)}, not a list")
        return value
    if level.kind == "numbered":
        obj = _resolve(rec, scope, level.column) if level.column else rec
        if not isinstance(obj, dict):
            raise NestError(f"{level.column or 'record'} is {_kind(obj)}, not an object")
        rx = re.compile("^" + re.escape(level.pattern).replace(re.escape("{n}"), r"(\d+)") + "$")
        numbered = sorted((int(m.group(1)), k) for k in obj if isinstance(k, str) and (m := rx.match(k)))
        if not numbered:
            raise NestError(f"no keys like {level.pattern!r} in {level.column or 'record'}")
        elems = []
        for n, key in numbered:
            e = {"n": n, "items": obj[key]}
            for name, pattern in level.fields.items():
                e[name] = obj.get(pattern.replace("{n}", str(n)))
            elems.append(e)
        return elems
    # tree: follow parent links from the current node to the root, then read it root first
    nodes = _resolve(rec, scope, level.column)
    if not isinstance(nodes, dict):
        raise NestError(f"{level.column} is {_kind(nodes)}, not an object of nodes")
    current = _resolve(rec, scope, level.current)
    if current is None:
        raise NestError(f"{level.current} is missing: which branch to follow is unknown")
    branch, seen = [], set()
    node_id = current
    while node_id is not None:
        if node_id in seen:
            raise NestError(f"cycle in {level.column}: node {node_id!r} is its own ancestor")
        seen.add(node_id)
        node = nodes.get(node_id)
        if not isinstance(node, dict):
            raise NestError(
                f"{level.column}: node {node_id!r} is missing"
                + (" (named by " + level.current + ")" if node_id == current else "")
            )
        branch.append(node)
        node_id = node.get(level.parent)
    return [n[level.value] for n in reversed(branch) if n.get(level.value) is not None]


def _perspectives(rec: dict, rows: list[dict], nest: NestConfig) -> list[dict]:
    """One copy of the record's rows per speaker named by perspectives.of."""
    p = nest.perspectives
    out = []
    for path in p.of:
        who = _resolve(rec, {}, path)
        if who is None:
            continue  # a one-speaker record; its rows come once, from the other speaker's view
        for r in rows:
            c = dict(r)
            c[PERSPECTIVE] = str(who)
            speaker = r.get(p.speaker)
            c[f"{PERSPECTIVE}.role"] = (
                None if speaker is None else ("user" if str(speaker) == str(who) else "assistant")
            )
            out.append(c)
    return out


def _flatten(obj: dict, prefix: str, out: dict, text_paths: set, media: MediaText, skip: set = frozenset()) -> None:
    for k, v in obj.items():
        if k in skip:
            continue
        name = f"{prefix}{k}"
        if name in text_paths:
            out[name] = to_text(v, media)
        elif isinstance(v, dict):
            _flatten(v, name + ".", out, text_paths, media)
        elif isinstance(v, list):
            out[name] = json.dumps(v, ensure_ascii=False, default=str)
        else:
            out[name] = v


def to_text(value, media: MediaText) -> str | None:
    """A message's content as text: strings as they are; lists of parts (OpenAI, ChatGPT
    exports) joined by newlines, with non-text parts written as the `media` placeholders."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list):
        pieces = [to_text(v, media) for v in value]
        return "\n".join(p for p in pieces if p)
    if isinstance(value, dict):
        kind = str(value.get("type") or value.get("content_type") or "")
        if "parts" in value and kind in ("", "text", "multimodal_text"):
            return to_text(value["parts"], media)
        if isinstance(value.get("text"), str) and ("text" in kind or not kind or kind in ("code", "execution_output")):
            return value["text"]
        if "image" in kind:
            caption = value.get("caption") or value.get("alt_text") or value.get("alt") or value.get("detail_text")
            return media.image_caption.format(caption=caption) if caption else media.image
        if "file" in kind or "document" in kind:
            f = value.get("file") if isinstance(value.get("file"), dict) else value
            return media.file.format(name=f.get("filename") or f.get("name") or f.get("file_id") or "?")
        if "audio" in kind:
            return media.audio
        return media.other.format(type=kind or "object")
    return str(value)


def _resolve(rec: dict, scope: dict, path: str | None):
    """A dotted path, from an outer level's element (its name first) or from the record."""
    if not path:
        return None
    head, *rest = path.split(".")
    cur = scope[head] if head in scope else rec.get(head) if isinstance(rec, dict) else None
    for k in rest:
        if not isinstance(cur, dict):
            return None
        cur = cur.get(k)
    return cur


def _root(path: str) -> str:
    return path.split(".", 1)[0]


def _next_uses(nest: NestConfig, depth: int, column: str) -> bool:
    return any(lv.column == column for lv in nest.levels[depth + 1 :])


def _empty(v) -> bool:
    return v is None or (isinstance(v, str) and not v.strip())


def _kind(v) -> str:
    return {dict: "an object", list: "a list", str: "text", bool: "a boolean", type(None): "null"}.get(
        type(v), "a number" if isinstance(v, (int, float)) else type(v).__name__
    )


def _to_table(rows: list[dict]) -> pa.Table:
    """Rows of varying keys as columns; a column whose values mix types is kept as text."""
    names: dict[str, None] = {}
    for r in rows:
        names.update(dict.fromkeys(r))
    cols = {}
    for n in names:
        values = [r.get(n) for r in rows]
        try:
            arr = pa.array(values)
            if pa.types.is_null(arr.type):
                arr = arr.cast(pa.string())
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            arr = pa.array(
                [None if v is None else v if isinstance(v, str) else json.dumps(v, default=str) for v in values],
                pa.string(),
            )
        cols[n] = arr
    return pa.table(cols)


# -- columnar ------------------------------------------------------------------------------


def explode_columnar(rb: pa.RecordBatch, nest: NestConfig, offset: int, row_column: str) -> Exploded | None:
    """The walk's rows computed on Arrow columns, or None when this batch needs the walk: more
    than one level, perspectives, a level that is not a list, a line Arrow cannot parse or
    type (not JSON, a value that changes type), a null or non-list where the list should be,
    nested values other than objects of scalars, text that is not a string."""
    if len(nest.levels) != 1 or nest.perspectives is not None or nest.levels[0].kind != "list":
        return None
    if RECORD_COLUMN in rb.schema.names:
        table = _parse_lines(rb.column(RECORD_COLUMN))
        if table is None:
            return None
    else:
        table = pa.Table.from_batches([rb]).combine_chunks()
    level = nest.levels[0]
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
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    if table.num_rows != len(texts) or any(_has_time(f.type) for f in table.schema):
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
