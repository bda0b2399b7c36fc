"""Batch: order each conversation's messages and cut them into requests within the budget.

Input is a table of validated canonical rows for a group of conversations; output is a list
of `RequestBatch`, in order within each conversation. A request holds messages of one
(user, conversation) and, because MemOS takes them per request, one agent_id/app_id.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from memos_etl.config import LoadConfig
from tasks.budget import estimate_tokens, request_overhead_tokens

SORT_KEYS = [("user_id", "ascending"), ("conversation_id", "ascending"), ("seq", "ascending"),
             ("chat_time", "ascending"), ("source_file", "ascending"), ("source_row", "ascending")]


@dataclass
class RequestBatch:
    user_id: str
    conversation_id: str
    agent_id: str | None
    app_id: str | None
    messages: list[dict]
    tags: list[str]
    info: dict
    key_lo: np.ndarray
    key_hi: np.ndarray
    first_key: str
    last_key: str
    last_order: int | None
    n_tokens: int
    rows: tuple[int, int]  # [start, stop) in the table the batch was cut from
    msg_hashes: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    batch_key: str = field(default="")


def message_hash(role: str | None, content: str | None) -> int:
    """64-bit identity of what a message says, comparable with the target's copy of it."""
    digest = hashlib.blake2b(f"{role}\x1f{content}".encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


def message_hashes(messages: list[dict]) -> np.ndarray:
    return np.array([message_hash(m.get("role"), m.get("content")) for m in messages], dtype=np.int64)


def conversation_pairs(table: pa.Table) -> list[tuple[str, str]]:
    """(user_id, conversation_id) of each row: the key leases and per-conversation state use."""
    return list(zip(table.column("user_id").to_pylist(), table.column("conversation_id").to_pylist()))


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


def cut_points(table: pa.Table, load: LoadConfig) -> list[tuple[int, int]]:
    """[start, stop) row ranges, one per request, for a sorted table."""
    n = table.num_rows
    if n == 0:
        return []
    boundary = changes(table.column("user_id")) | changes(table.column("conversation_id")) | \
        changes(table.column("agent_id")) | changes(table.column("app_id"))
    tokens = estimate_tokens(table.column("content").combine_chunks(), load)
    budget = load.max_tokens_per_request - request_overhead_tokens(load)
    max_msgs = load.max_messages_per_request
    cuts: list[tuple[int, int]] = []
    start, used = 0, 0
    # greedy packing is sequential by nature; this loop touches two ints per row
    for i, (b, t) in enumerate(zip(boundary.tolist(), tokens.tolist())):
        if i > start and (b or used + t > budget or i - start >= max_msgs):
            cuts.append((start, i))
            start, used = i, 0
        used += t
    cuts.append((start, n))
    return cuts


def make_batches(table: pa.Table, load: LoadConfig, target: str, provenance: dict,
                 constant_tags: list[str]) -> list[RequestBatch]:
    """Cut a sorted, de-duplicated table into requests and give each its deterministic key."""
    cuts = cut_points(table, load)
    if not cuts:
        return []
    times = table.column("chat_time")
    times_txt = pc.strftime(times.cast(pa.timestamp("s", tz="UTC"), safe=False), format="%Y-%m-%dT%H:%M:%SZ")
    cols = {name: table.column(name).to_pylist() for name in
            ("user_id", "conversation_id", "agent_id", "app_id", "role", "content", "source_key", "tags", "info")}
    chat_time = times_txt.to_pylist()
    orders = order_values(table).to_pylist()
    tokens = estimate_tokens(table.column("content").combine_chunks(), load)
    lo = table.column("key_lo").to_numpy()
    hi = table.column("key_hi").to_numpy()
    roles, contents = cols["role"], cols["content"]
    # one pass over all rows for what every message needs: its payload and its hash
    payload = [{"role": r, "content": c} if t is None else {"role": r, "content": c, "chat_time": t}
               for r, c, t in zip(roles, contents, chat_time)]
    hashes = np.fromiter((message_hash(r, c) for r, c in zip(roles, contents)), dtype=np.int64, count=len(roles))
    overhead = request_overhead_tokens(load)
    out = []
    for start, stop in cuts:
        msgs = payload[start:stop]
        tags = list(constant_tags)
        for t in cols["tags"][start] or []:
            if t not in tags:
                tags.append(t)
        info = {}
        if cols["info"][start]:
            try:
                extra = json.loads(cols["info"][start])
                info.update(extra if isinstance(extra, dict) else {"info": extra})
            except ValueError:
                info["info"] = cols["info"][start]
        last_order = [o for o in orders[start:stop] if o is not None]
        b = RequestBatch(
            user_id=cols["user_id"][start], conversation_id=cols["conversation_id"][start],
            agent_id=cols["agent_id"][start], app_id=cols["app_id"][start], messages=msgs, tags=tags,
            info=info, key_lo=lo[start:stop], key_hi=hi[start:stop],
            first_key=cols["source_key"][start], last_key=cols["source_key"][stop - 1],
            last_order=max(last_order) if last_order else None,
            n_tokens=int(tokens[start:stop].sum()) + overhead, rows=(start, stop),
            msg_hashes=hashes[start:stop])
        b.batch_key = batch_key(target, b)
        # provenance travels with the memory: source, run, and the exact rows it came from
        b.info.update({**provenance, "first_key": b.first_key, "last_key": b.last_key, "batch_key": b.batch_key})
        out.append(b)
    return out


def batch_key(target: str, b: RequestBatch) -> str:
    """Deterministic id of a request: same target, conversation and messages -> same key."""
    h = hashlib.sha256()
    for part in (target, b.user_id, b.conversation_id):
        h.update(part.encode())
        h.update(b"\x00")
    h.update(b.key_lo.tobytes())
    h.update(b.key_hi.tobytes())
    h.update(json.dumps(b.messages, ensure_ascii=False, sort_keys=True).encode())
    return h.hexdigest()
