"""Map: turn one source record batch into canonical message rows (schemas/message.py).

Column-at-a-time pyarrow compute; no Python loop over rows. Values that cannot be mapped
(an unknown role, a time no format parses) are kept visible (raw role) or null, so that
validation can quarantine the row with a reason instead of the mapper dropping it.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from core.config import Mapping, Template
from core.config.mapping import TABLE_DELETED
from schemas.message import MESSAGE_SCHEMA
from tasks.attachments import append_notes, collect
from tasks.chat_time import parse_times
from tasks.extract import ROW_COLUMN
from tasks.people import names, user_ids

# Two independent 64-bit hashes make the 128-bit message identity the ledger keys on.
_HASH_KEYS = ("memos-etl-key-lo", "memos-etl-key-hi")
_SEP = "\x1f"


def as_text(arr: pa.Array) -> pa.Array:
    if pa.types.is_string(arr.type):
        return arr
    if pa.types.is_large_string(arr.type) or pa.types.is_dictionary(arr.type):
        return arr.cast(pa.string())
    if pa.types.is_floating(arr.type):
        # 3.0 -> "3": ids read from CSV/JSON as floats should not grow a ".0"
        whole = pc.equal(arr, pc.floor(arr))
        return pc.if_else(whole, arr.cast(pa.int64(), safe=False).cast(pa.string()), arr.cast(pa.string()))
    return arr.cast(pa.string())


def render(tpl: Template, rb: pa.RecordBatch, constants: dict[str, str]) -> pa.Array:
    """A column, or a template joined column-wise; null where any referenced column is null."""
    pieces: list = []
    for lit, name in zip(tpl.literals, tpl.names + [None]):
        if lit:
            pieces.append(lit)
        if name is not None:
            pieces.append(constants[name] if name in constants else as_text(rb.column(name)))
    if len(pieces) == 1 and isinstance(pieces[0], pa.Array):
        return pieces[0]
    if not any(isinstance(p, pa.Array) for p in pieces):
        return pa.array(["".join(pieces)] * rb.num_rows, pa.string())
    return pc.binary_join_element_wise(*pieces, "")


def _field(mapping: Mapping, field: str, rb: pa.RecordBatch) -> pa.Array | None:
    tpl = mapping.template(field)
    return None if tpl is None else render(tpl, rb, mapping.constants)


def _roles(mapping: Mapping, rb: pa.RecordBatch) -> pa.Array:
    n = rb.num_rows
    role = _field(mapping, "role", rb)
    if role is not None:
        raw = pc.utf8_lower(pc.utf8_trim_whitespace(role))
        table = mapping.role_map()
        keys, vals = pa.array(list(table), pa.string()), pa.array(list(table.values()), pa.string())
        # unknown spellings stay as written (lower-cased) so the quarantine reason can quote them
        role = pc.coalesce(pc.take(vals, pc.index_in(raw, value_set=keys)), raw)
    else:
        role = pa.nulls(n, pa.string())
    cfg = mapping.roles
    if cfg.speaker_column:
        speaker = as_text(rb.column(cfg.speaker_column))
        if cfg.user_speaker_column:  # this row's dialogue names its user
            is_user = pc.fill_null(pc.equal(speaker, as_text(rb.column(cfg.user_speaker_column))), False)
        else:
            is_user = pc.is_in(speaker, value_set=pa.array(mapping.user_speakers(), pa.string()))
        other = (
            pa.scalar("assistant")
            if cfg.other_speakers == "assistant"
            else pc.binary_join_element_wise("unknown speaker ", speaker, "")
        )
        by_speaker = pc.if_else(is_user, pa.scalar("user"), other)
        role = pc.coalesce(role, by_speaker)
    return role


def _content(mapping: Mapping, rb: pa.RecordBatch, notes: pa.Array | None = None) -> pa.Array:
    content = None
    for tpl in mapping.templates("content"):  # several: the first that is not empty, row by row
        value = as_text(render(tpl, rb, mapping.constants))
        if content is None:
            content = value
        else:
            empty = pc.fill_null(pc.equal(pc.utf8_length(content), 0), True)
            content = pc.if_else(empty, value, content)
    assert content is not None  # fields.content is required
    for part in mapping.content_append:
        value = as_text(rb.column(part.column))
        prefix, marks, suffix = part.template.partition("{}")
        present = pc.fill_null(pc.greater(pc.utf8_length(value), 0), False)
        base = pc.fill_null(content, "")
        shown = value if marks else pa.repeat(pa.scalar("", pa.string()), len(value))  # no {}: a marker alone
        joined = pc.binary_join_element_wise(base, prefix, shown, suffix, "")
        if part.strip_when_alone and prefix != prefix.lstrip():
            alone = pc.binary_join_element_wise(prefix.lstrip(), shown, suffix, "")
            joined = pc.if_else(pc.equal(pc.utf8_length(base), 0), alone, joined)
        content = pc.if_else(present, joined, content)
    if notes is not None:  # attachments: their notes after everything the text says
        content = append_notes(content, notes)
    return content


def _named(mapping: Mapping, rb: pa.RecordBatch, role: pa.Array, content: pa.Array) -> pa.Array:
    """roles.name_others: the speaker's name in front of every message that is not the user's."""
    if not mapping.roles.name_others:
        return content
    who = names(mapping, rb, as_text(render(Template.parse(mapping.roles.name_others), rb, mapping.constants)))
    other = pc.and_(
        pc.and_(
            pc.fill_null(pc.not_equal(role, pa.scalar("user")), True),
            pc.fill_null(pc.greater(pc.utf8_length(who), 0), False),
        ),
        pc.fill_null(pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(content)), 0), False),  # empty stays empty
    )
    return pc.if_else(other, pc.binary_join_element_wise(who, ": ", content, ""), content)


def _seq(arr: pa.Array | None, rb: pa.RecordBatch, mapping: Mapping) -> pa.Array:
    if arr is None:
        return pa.nulls(rb.num_rows, pa.int64())
    tpl = mapping.template("seq")
    assert tpl is not None  # arr is not None: the mapping has fields.seq
    raw = rb.column(tpl.names[0]) if tpl.is_column else arr
    if pa.types.is_integer(raw.type):
        return raw.cast(pa.int64())
    text = pc.utf8_trim_whitespace(as_text(raw))
    ok = pc.match_substring_regex(text, r"^-?\d{1,18}$")
    return pc.if_else(ok, text, pa.scalar(None, pa.string())).cast(pa.int64())


def _tags(mapping: Mapping, rb: pa.RecordBatch) -> pa.Array:
    tpl = mapping.template("tags")
    if tpl is None:
        return pa.nulls(rb.num_rows, pa.list_(pa.string()))
    raw = rb.column(tpl.names[0]) if tpl.is_column else render(tpl, rb, mapping.constants)
    if pa.types.is_list(raw.type) or pa.types.is_large_list(raw.type):
        return raw.cast(pa.list_(pa.string()))
    return pc.split_pattern(as_text(raw), ",")


def _info(mapping: Mapping, rb: pa.RecordBatch) -> pa.Array:
    tpl = mapping.template("info")
    if tpl is None:
        return pa.nulls(rb.num_rows, pa.string())
    raw = rb.column(tpl.names[0]) if tpl.is_column else render(tpl, rb, mapping.constants)
    if pa.types.is_struct(raw.type) or pa.types.is_map(raw.type):
        # nested objects have no vectorised JSON encoder in pyarrow; this column is optional
        return pa.array([None if v is None else json.dumps(v, default=str) for v in raw.to_pylist()], pa.string())
    return as_text(raw)


_FALSE_TEXT = pa.array(["", "0", "false", "f", "no", "n", "none", "null"], pa.string())


def _deleted(mapping: Mapping, rb: pa.RecordBatch) -> pa.Array:
    """fields.deleted as a boolean: true, non-zero, or set (a timestamp, a CDC op 'd') means
    deleted; null, false, 0, empty and false-like text mean present."""
    tpl = mapping.template("deleted")
    if tpl is None:
        return pa.nulls(rb.num_rows, pa.bool_())
    raw = rb.column(tpl.names[0]) if tpl.is_column else render(tpl, rb, mapping.constants)
    if pa.types.is_boolean(raw.type):
        out = raw
    elif pa.types.is_integer(raw.type) or pa.types.is_floating(raw.type) or pa.types.is_decimal(raw.type):
        out = pc.not_equal(raw, pc.cast(pa.scalar(0), raw.type))
    elif pa.types.is_string(raw.type) or pa.types.is_large_string(raw.type) or pa.types.is_dictionary(raw.type):
        text = pc.utf8_lower(pc.utf8_trim_whitespace(as_text(raw)))
        out = pc.and_(pc.is_valid(text), pc.invert(pc.is_in(text, value_set=_FALSE_TEXT)))
    else:  # timestamps, dates and anything else: set means deleted
        out = pc.is_valid(raw)
    for flag in TABLE_DELETED.values():  # a table's deletes (Delta's feed, Iceberg's snapshots), too
        if flag in rb.schema.names and tpl.names != [flag]:
            out = pc.or_(pc.fill_null(out, False), rb.column(flag))
    return pc.fill_null(out, False)


def hash_keys(keys: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """128-bit identity of each key as two int64 halves (vectorised siphash from pandas)."""
    values = pc.fill_null(keys, "").to_numpy(zero_copy_only=False)
    lo = pd.util.hash_array(values, hash_key=_HASH_KEYS[0], categorize=False).view(np.int64)
    hi = pd.util.hash_array(values, hash_key=_HASH_KEYS[1], categorize=False).view(np.int64)
    return lo, hi


def map_batch(rb: pa.RecordBatch, mapping: Mapping, file_rel: str, offset: int) -> pa.Table:
    """Canonical rows for one record batch; row i of the result is row i of the input."""
    n = rb.num_rows
    user = user_ids(mapping, _field(mapping, "user_id", rb))
    conv = _field(mapping, "conversation_id", rb)
    role = _roles(mapping, rb)
    notes, attachments = collect(mapping, rb)
    content = _named(mapping, rb, role, _content(mapping, rb, notes))
    chat_time = pa.nulls(n, pa.timestamp("us", tz="UTC"))
    for time_tpl in mapping.templates("chat_time"):  # several: the first that parses, row by row
        raw_time = rb.column(time_tpl.names[0]) if time_tpl.is_column else render(time_tpl, rb, mapping.constants)
        chat_time = pc.coalesce(chat_time, parse_times(raw_time, mapping.time.formats, mapping.time.timezone))
    seq = _seq(_field(mapping, "seq", rb), rb, mapping)
    key_value = _field(mapping, "source_key", rb)
    name = mapping.source.name
    if key_value is not None:
        source_key = pc.binary_join_element_wise(name, ":", as_text(key_value), "")
    else:
        # no message id in the source: a message is identified by what it is and where it sits
        ident = pc.binary_join_element_wise(
            name,
            *(pc.fill_null(as_text(a), "\x00") for a in (user, conv, seq, chat_time.cast(pa.int64()), role, content)),
            _SEP,
        )
        lo, hi = hash_keys(ident)
        source_key = pc.binary_join_element_wise(
            name, ":h", pa.array(lo).cast(pa.string()), pa.array(hi).cast(pa.string()), ""
        )
    lo, hi = hash_keys(source_key)
    cols = {
        "source_key": source_key,
        "user_id": user,
        "conversation_id": conv,
        "role": role,
        "content": content,
        "chat_time": chat_time,
        "seq": seq,
        "agent_id": _field(mapping, "agent_id", rb) if mapping.fields.agent_id else pa.nulls(n, pa.string()),
        "app_id": _field(mapping, "app_id", rb) if mapping.fields.app_id else pa.nulls(n, pa.string()),
        "tags": _tags(mapping, rb),
        "info": _info(mapping, rb),
        "source_file": pa.repeat(pa.scalar(file_rel, pa.string()), n),
        "source_row": rb.column(ROW_COLUMN).cast(pa.int64())
        if ROW_COLUMN in rb.schema.names
        else pa.array(np.arange(offset, offset + n, dtype=np.int64)),
        "key_lo": pa.array(lo),
        "key_hi": pa.array(hi),
        "deleted": _deleted(mapping, rb),
        "attachments": attachments if attachments is not None else pa.nulls(n, pa.string()),
    }
    arrays = [
        as_text(cols[f.name]) if pa.types.is_string(f.type) else cols[f.name].cast(f.type) for f in MESSAGE_SCHEMA
    ]
    return pa.Table.from_arrays(arrays, schema=MAPPED_SCHEMA)


#: What the mapper emits: the canonical schema before validation, so any field may still be null.
MAPPED_SCHEMA = pa.schema([f.with_nullable(True) for f in MESSAGE_SCHEMA])
