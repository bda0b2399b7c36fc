"""Batch: order each conversation's messages and cut them into requests within the budget.

Input is a table of validated canonical rows for a group of conversations; output is a list
of `RequestBatch`, in order within each conversation. A request holds messages of one
(user, conversation) and, because MemOS takes them per request, one agent_id/app_id.
"""

from __future__ import annotations

import hashlib
import json
from bisect import bisect_right
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from core.budget import estimate_tokens, request_overhead_tokens
from core.config import LoadConfig
from tasks.attachments import message_with_parts, part_bytes, text_of

SORT_KEYS = [
    ("user_id", "ascending"),
    ("conversation_id", "ascending"),
    ("seq", "ascending"),
    ("chat_time", "ascending"),
    ("source_file", "ascending"),
    ("source_row", "ascending"),
]


@dataclass
class RequestBatch:
    user_id: str
    conversation_id: str
    agent_id: str | None
    app_id: str | None
    messages_json: str  # the request's message array as JSON text, keys sorted
    tags: list[str]
    info: dict
    key_lo: np.ndarray
    key_hi: np.ndarray
    first_key: str
    last_key: str
    last_order: int | None
    n_tokens: int
    rows: tuple[int, int]  # [start, stop) in the table the batch was cut from
    msg_hashes: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))  # zeros in a dry run
    batch_key: str = field(default="")
    fp: np.ndarray | None = None  # per message: fingerprints() of what is sent (None in a dry run)
    unit: np.ndarray | None = None  # per message: the ledger's hash of the file it was read from
    has_parts: bool = False  # a message's content is parts (attachments.mode parts)

    @property
    def n_messages(self) -> int:
        return self.rows[1] - self.rows[0]

    @property
    def messages(self) -> list[dict]:
        """The messages as Python objects (for inspection; requests are sent as messages_json)."""
        return json.loads(self.messages_json)


def message_hash(role: str | None, content: str | None) -> int:
    """64-bit identity of what a message says, comparable with the target's copy of it."""
    digest = hashlib.blake2b(f"{role}\x1f{content}".encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


def message_hashes(messages: list[dict]) -> np.ndarray:
    """message_hash of messages as the target holds them: a content of parts by its text
    (what column_hashes hashes of ours: the parts are the request's, not the text's)."""
    return np.array([message_hash(m.get("role"), text_of(m.get("content"))) for m in messages], dtype=np.int64)


def column_hashes(role: pa.Array, content: pa.Array) -> np.ndarray:
    """message_hash of every row, with the string building done by Arrow: one blake2b call
    per row is all that is left in Python."""
    joined = pc.binary_join_element_wise(role, content, "\x1f").cast(pa.binary())
    if joined.null_count:  # a missing role or content hashes as the text "None", as message_hash does
        joined = pc.binary_join_element_wise(
            pc.fill_null(role.cast(pa.string()), "None"), pc.fill_null(content.cast(pa.string()), "None"), "\x1f"
        ).cast(pa.binary())
    blake = hashlib.blake2b
    raw = b"".join([blake(x, digest_size=8).digest() for x in joined.to_pylist()])
    return np.frombuffer(raw, dtype="<i8").astype(np.int64)


_FP_KEY = "memos-etl-fp-v01"  # 16 bytes: siphash key of message fingerprints


def fingerprints(table: pa.Table) -> np.ndarray:
    """64-bit fingerprint of what each message says and where: role, content, chat_time,
    user and conversation. Same message, same fingerprint, run after run; any edit of one of
    these changes it. Vectorised: one string join by Arrow, one siphash pass by pandas."""
    if table.num_rows == 0:
        return np.empty(0, dtype=np.int64)
    null = "\x00"
    parts = [pc.fill_null(table.column(c).cast(pa.string()), null) for c in ("role", "content")]
    parts.append(pc.fill_null(table.column("chat_time").cast(pa.int64()).cast(pa.string()), null))
    parts += [pc.fill_null(table.column(c).cast(pa.string()), null) for c in ("user_id", "conversation_id")]
    joined = pc.binary_join_element_wise(*parts, "\x1f")
    if "attachments" in table.schema.names and table.column("attachments").null_count != table.num_rows:
        # attachments sent as parts are part of what the message says; without them the
        # fingerprint is what it always was (ledgers written before attachments keep theirs)
        att = table.column("attachments")
        joined = pc.if_else(pc.is_valid(att), pc.binary_join_element_wise(joined, att, "\x1e"), joined)
    values = (
        joined.to_numpy(zero_copy_only=False)
        if isinstance(joined, pa.Array)
        else joined.combine_chunks().to_numpy(zero_copy_only=False)
    )
    return pd.util.hash_array(values, hash_key=_FP_KEY, categorize=False).view(np.int64)


def conversation_runs(table: pa.Table) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """For a table sorted by conversation: each row's conversation number (0, 1, ...) and the
    (user_id, conversation_id) of each conversation. Per-conversation work then loops over
    conversations, not rows."""
    new = changes(table.column("user_id")) | changes(table.column("conversation_id"))
    starts = pa.array(np.flatnonzero(new))
    users = table.column("user_id").take(starts).to_pylist()
    ids = table.column("conversation_id").take(starts).to_pylist()
    return np.cumsum(new) - 1, list(zip(users, ids))


def conversation_starts(table: pa.Table) -> np.ndarray:
    """The row each conversation of a table sorted by conversation starts at."""
    return np.flatnonzero(changes(table.column("user_id")) | changes(table.column("conversation_id")))


def conversation_slices(table: pa.Table, rows: int, conversations: int) -> list[tuple[int, int]]:
    """[start, stop) ranges of a table sorted by conversation, each of whole conversations,
    about `rows` rows and at most `conversations` conversations (one conversation longer
    than `rows` is a range of its own). A request never spans two conversations, so cutting
    each range into requests gives the requests the whole table gives."""
    n = table.num_rows
    if n == 0:
        return []
    starts = np.append(conversation_starts(table), n)  # where each conversation starts, and the end
    last = len(starts) - 1  # conversations in the table
    out = []
    start, k = 0, 0  # row and conversation number the next range starts at
    while start < n:
        j = int(np.searchsorted(starts, start + rows, side="right")) - 1  # conversations that fit `rows`
        j = max(k + 1, min(j, k + conversations, last))
        out.append((start, int(starts[j])))
        start, k = int(starts[j]), j
    return out


def order_values(table: pa.Table) -> pa.Array:
    """The value a conversation is ordered by: seq where given, else chat_time in microseconds."""
    return pc.coalesce(table.column("seq"), table.column("chat_time").cast(pa.int64()))


def sort_conversations(table: pa.Table) -> pa.Table:
    return table.sort_by(SORT_KEYS)


def drop_duplicates(table: pa.Table) -> tuple[pa.Table, pa.Table]:
    """(first occurrence of each source key, the repeats) for a table sorted by SORT_KEYS."""
    if table.num_rows < 2:
        return table, table.slice(0, 0)
    lo = table.column("key_lo").to_numpy()
    hi = table.column("key_hi").to_numpy()
    order = np.lexsort((np.arange(len(lo)), hi, lo))
    same = (lo[order][1:] == lo[order][:-1]) & (hi[order][1:] == hi[order][:-1])
    dup = np.zeros(len(lo), dtype=bool)
    dup[order[1:][same]] = True
    if not dup.any():
        return table, table.slice(0, 0)
    return table.filter(pa.array(~dup)), table.filter(pa.array(dup))


def changes(arr: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Boolean per row: differs from the previous row (row 0 is always a change)."""
    a = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
    n = len(a)
    out = np.ones(n, dtype=bool)
    if n > 1:
        ne = pc.not_equal(a.slice(1), a.slice(0, n - 1))
        # null vs value is a change; null vs null is not
        both_null = pc.and_(pc.is_null(a.slice(1)), pc.is_null(a.slice(0, n - 1)))
        ne = pc.if_else(both_null, False, pc.fill_null(ne, True))
        out[1:] = ne.to_numpy(zero_copy_only=False)
    return out


def cut_points(
    table: pa.Table, load: LoadConfig, tokens: np.ndarray | None = None, parts: tuple | None = None
) -> list[tuple[int, int]]:
    """[start, stop) row ranges, one per request, for a sorted table: greedy packing, each
    request as full as the token budget and max_messages_per_request allow, never across a
    conversation (or agent/app) boundary. One step per request, not per row: the end of a
    request is found by bisecting the running token sum. `parts`: per row, the bytes and
    the number of attachments it sends (attachments.mode parts), held within
    load.max_attachment_bytes_per_request and load.max_attachments_per_request the same way."""
    n = table.num_rows
    if n == 0:
        return []
    boundary = (
        changes(table.column("user_id"))
        | changes(table.column("conversation_id"))
        | changes(table.column("agent_id"))
        | changes(table.column("app_id"))
    )
    if tokens is None:  # make_batches passes the estimate it needs anyway
        tokens = estimate_tokens(table.column("content").combine_chunks(), load)
    budget = load.max_tokens_per_request - request_overhead_tokens(load)
    max_msgs = load.max_messages_per_request
    cum = np.concatenate([[0], np.cumsum(tokens)]).tolist()  # cum[k] = tokens of rows [0, k)
    seg_end = np.append(np.flatnonzero(boundary)[1:], n)  # end of the segment each segment start opens
    ends = np.empty(n, dtype=np.int64)
    ends[boundary] = seg_end  # forward-filled below: ends[i] = end of row i's segment
    ends = ends[np.maximum.accumulate(np.where(boundary, np.arange(n), 0))]
    ends = ends.tolist()
    cuts: list[tuple[int, int]] = []
    start = 0
    if parts is not None:
        cum_b = np.concatenate([[0], np.cumsum(parts[0])]).tolist()
        cum_p = np.concatenate([[0], np.cumsum(parts[1])]).tolist()
    while start < n:
        fits = bisect_right(cum, cum[start] + budget, lo=start + 1) - 1  # rows [start, fits) fit the budget
        if parts is not None:
            fits = min(
                fits,
                bisect_right(cum_b, cum_b[start] + load.max_attachment_bytes_per_request, lo=start + 1) - 1,
                bisect_right(cum_p, cum_p[start] + load.max_attachments_per_request, lo=start + 1) - 1,
            )
        stop = max(start + 1, min(fits, ends[start], start + max_msgs))
        cuts.append((start, stop))
        start = stop
    return cuts


_JSON_ESCAPES = (
    ("\\", "\\\\"),
    ('"', '\\"'),
    ("\n", "\\n"),
    ("\r", "\\r"),
    ("\t", "\\t"),
    ("\x08", "\\b"),
    ("\x0c", "\\f"),
)
_OTHER_CONTROL = r"[\x00-\x07\x0b\x0e-\x1f]"  # escaped by json as \u00XX: left to json.dumps


def _lit(text: str) -> pa.Scalar:
    return pa.scalar(text, pa.large_string())


def json_strings(arr: pa.Array) -> pa.Array:
    """Each string as a JSON string literal, exactly as json.dumps(s, ensure_ascii=False)
    writes it; null stays null. Arrow does the escaping (only for the characters that occur:
    one count over the raw bytes tells which); only the rare string with a control character
    other than \\n \\r \\t \\b \\f goes through json.dumps."""
    s = arr.cast(pa.large_string())
    data = s.buffers()[2]
    present = (
        np.bincount(np.frombuffer(data, dtype=np.uint8), minlength=256)
        if data is not None
        else np.zeros(256, dtype=np.int64)
    )
    esc = s
    for old, new in _JSON_ESCAPES:
        if present[ord(old)]:
            esc = pc.replace_substring(esc, old, new)
    out = pc.binary_join_element_wise(_lit('"'), esc, _lit('"'), _lit(""))
    if not present[_OTHER_CONTROL_BYTES].any():
        return out
    odd = pc.fill_null(pc.match_substring_regex(s, _OTHER_CONTROL), False)
    if pc.any(odd).as_py():
        rows = np.flatnonzero(odd.to_numpy(zero_copy_only=False))
        fixed = [json.dumps(v, ensure_ascii=False) for v in s.take(pa.array(rows)).to_pylist()]
        out = pc.replace_with_mask(out, odd, pa.array(fixed, type=pa.large_string()))
    return out


_OTHER_CONTROL_BYTES = np.array([b for b in range(0x20) if b not in (0x08, 0x09, 0x0A, 0x0C, 0x0D)])


def iso_seconds(times: pa.Array) -> pa.Array:
    """UTC timestamps as "YYYY-MM-DDTHH:MM:SSZ" (whole seconds), null stays null."""
    ts = times.cast(pa.timestamp("s", tz="UTC"), safe=False)
    lo, hi = pc.min_max(ts).values()
    if lo.is_valid and (lo.value < _YEAR_1000 or hi.value >= _YEAR_10000):  # rare: strftime pads these its way
        return pc.strftime(ts, format="%Y-%m-%dT%H:%M:%SZ").cast(pa.large_string())
    text = pc.cast(ts.cast(pa.timestamp("s")), pa.large_string())  # "YYYY-MM-DD HH:MM:SS"
    return pc.binary_join_element_wise(pc.replace_substring(text, " ", "T", max_replacements=1), _lit("Z"), _lit(""))


_YEAR_1000 = -30610224000  # 1000-01-01T00:00:00Z in seconds
_YEAR_10000 = 253402300800  # 10000-01-01T00:00:00Z


def message_json(role: pa.Array, content: pa.Array, chat_time: pa.Array) -> pa.Array:
    """Each row's message as JSON text, identical to json.dumps({"role", "content"[,
    "chat_time"]}, ensure_ascii=False, sort_keys=True); chat_time is left out where null."""
    r, c = json_strings(role), json_strings(content)
    t = chat_time.cast(pa.large_string())
    timed = pc.binary_join_element_wise(
        _lit('{"chat_time": "'), t, _lit('", "content": '), c, _lit(', "role": '), r, _lit("}"), _lit("")
    )
    untimed = pc.binary_join_element_wise(_lit('{"content": '), c, _lit(', "role": '), r, _lit("}"), _lit(""))
    out = pc.if_else(pc.is_valid(t), timed, untimed)
    if out.null_count:  # a null role or content (validation keeps them out): spelled by json itself
        rows = np.flatnonzero(out.is_null().to_numpy(zero_copy_only=False))
        fixed = []
        for i in rows.tolist():
            m = {"role": role[i].as_py(), "content": content[i].as_py()}
            if t[i].is_valid:
                m["chat_time"] = t[i].as_py()
            fixed.append(json.dumps(m, ensure_ascii=False, sort_keys=True))
        out = pc.replace_with_mask(out, out.is_null(), pa.array(fixed, type=pa.large_string()))
    return out


def request_json(messages: pa.Array, cuts: list[tuple[int, int]]) -> list[str]:
    """The JSON array of messages of each request, joined by Arrow (", " between, as json does)."""
    offsets = pa.array([s for s, _ in cuts] + [cuts[-1][1]], type=pa.int64())
    grouped = pa.LargeListArray.from_arrays(offsets, messages)
    joined = pc.binary_join(grouped, _lit(", "))
    return pc.binary_join_element_wise(_lit("["), joined, _lit("]"), _lit("")).to_pylist()


def make_batches(
    table: pa.Table, load: LoadConfig, target: str, provenance: dict, constant_tags: list[str], hashes: bool = True
) -> list[RequestBatch]:
    """Cut a sorted, de-duplicated table into requests and give each its deterministic key.

    Column-wise: message JSON, hashes, token sums and each request's first-row fields are
    computed over whole columns; what is left per request is building its small record."""
    if table.num_rows == 0:
        return []
    table = table.combine_chunks()
    role, content = table.column("role").combine_chunks(), table.column("content").combine_chunks()
    tokens = estimate_tokens(content, load)
    att = (
        table.column("attachments").combine_chunks()
        if "attachments" in table.schema.names
        else pa.nulls(table.num_rows, pa.string())
    )
    rows = np.flatnonzero(att.is_valid().to_numpy(zero_copy_only=False)) if att.null_count != len(att) else None
    sizes = None
    if rows is not None:
        found = [part_bytes(r) for r in att.take(pa.array(rows)).to_pylist()]
        sizes = (np.zeros(table.num_rows, dtype=np.int64), np.zeros(table.num_rows, dtype=np.int64))
        sizes[0][rows] = [b for b, _ in found]
        sizes[1][rows] = [p for _, p in found]
    cuts = cut_points(table, load, tokens, sizes)
    times_txt = iso_seconds(table.column("chat_time").combine_chunks())
    messages = message_json(role, content, times_txt)
    has_parts = None
    if rows is not None:  # their content is parts: the text, then the attachments
        take = pa.array(rows)
        fixed = [
            message_with_parts(r, c, t, a)
            for r, c, t, a in zip(
                role.take(take).to_pylist(),
                content.take(take).to_pylist(),
                times_txt.take(take).to_pylist(),
                att.take(take).to_pylist(),
            )
        ]
        mask = np.zeros(table.num_rows, dtype=bool)
        mask[rows] = True
        assert sizes is not None  # computed for the same rows above
        has_parts = sizes[1] > 0
        messages = pc.replace_with_mask(messages, pa.array(mask), pa.array(fixed, type=pa.large_string()))
    bodies = request_json(messages, cuts)
    msg_hashes = column_hashes(role, content) if hashes else np.zeros(table.num_rows, dtype=np.int64)
    starts = np.array([s for s, _ in cuts], dtype=np.int64)
    lasts = np.array([e - 1 for _, e in cuts], dtype=np.int64)
    first = (
        table.take(pa.array(starts))
        .select(["user_id", "conversation_id", "agent_id", "app_id", "source_key", "tags", "info"])
        .to_pydict()
    )
    last_keys = table.column("source_key").take(pa.array(lasts)).to_pylist()
    n_tokens = (np.add.reduceat(tokens, starts) + request_overhead_tokens(load)).tolist()
    missing = np.iinfo(np.int64).min
    orders = pc.fill_null(order_values(table), missing).to_numpy(zero_copy_only=False)
    last_orders = np.maximum.reduceat(orders, starts).tolist()
    lo = table.column("key_lo").to_numpy()
    hi = table.column("key_hi").to_numpy()
    names = table.schema.names
    fps = table.column("fp").to_numpy() if "fp" in names else None
    units = table.column("unit").to_numpy() if "unit" in names else None
    infos: dict[str | None, dict] = {}
    out = []
    for i, (start, stop) in enumerate(cuts):
        tags = list(constant_tags)
        for t in first["tags"][i] or []:
            if t not in tags:
                tags.append(t)
        raw = first["info"][i]
        if raw not in infos:
            infos[raw] = _info(raw)
        b = RequestBatch(
            user_id=first["user_id"][i],
            conversation_id=first["conversation_id"][i],
            agent_id=first["agent_id"][i],
            app_id=first["app_id"][i],
            messages_json=bodies[i],
            tags=tags,
            info=dict(infos[raw]),
            key_lo=lo[start:stop],
            key_hi=hi[start:stop],
            first_key=first["source_key"][i],
            last_key=last_keys[i],
            last_order=last_orders[i] if last_orders[i] != missing else None,
            n_tokens=n_tokens[i],
            rows=(start, stop),
            msg_hashes=msg_hashes[start:stop],
            fp=fps[start:stop] if fps is not None else None,
            unit=units[start:stop] if units is not None else None,
            has_parts=bool(has_parts[start:stop].any()) if has_parts is not None else False,
        )
        b.batch_key = batch_key(target, b)
        # provenance travels with the memory: source, run, and the exact rows it came from
        b.info.update({**provenance, "first_key": b.first_key, "last_key": b.last_key, "batch_key": b.batch_key})
        out.append(b)
    return out


def _info(raw: str | None) -> dict:
    """A row's info column (JSON text) as the dict merged into the request's info."""
    if not raw:
        return {}
    try:
        extra = json.loads(raw)
    except ValueError:
        return {"info": raw}
    return extra if isinstance(extra, dict) else {"info": extra}


def batch_key(target: str, b: RequestBatch) -> str:
    """Deterministic id of a request: same target, conversation and messages -> same key."""
    h = hashlib.sha256()
    for part in (target, b.user_id, b.conversation_id):
        h.update(part.encode())
        h.update(b"\x00")
    h.update(b.key_lo.tobytes())
    h.update(b.key_hi.tobytes())
    h.update(b.messages_json.encode())
    return h.hexdigest()
