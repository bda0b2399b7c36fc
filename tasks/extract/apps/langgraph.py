"""LangGraph checkpoints (the SQLite and PostgreSQL savers): the newest checkpoint of each
thread, its `messages` channel decoded from msgpack without importing LangGraph or LangChain.

What the savers write (langgraph-checkpoint-sqlite's `SqliteSaver.setup`, langgraph-checkpoint-
postgres' `MIGRATIONS`, both in the installed packages):

- SQLite: `checkpoints(thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, type,
  checkpoint BLOB, metadata BLOB)`; the checkpoint is the serde's `(type, bytes)` of a dict whose
  `channel_values` hold every channel's value, `messages` among them.
- PostgreSQL: `checkpoints(..., checkpoint JSONB, metadata JSONB)` whose `channel_versions`
  name the version of each channel, and `checkpoint_blobs(thread_id, checkpoint_ns, channel,
  version, type, blob)` holding the values that are not plain JSON (a list of messages is one).

The serde (`JsonPlusSerializer`, langgraph/checkpoint/serde/jsonplus.py) writes type `msgpack`:
objects it cannot pack natively are msgpack extension types whose payload is itself msgpack
of `(module, class name, value[, method])`; a pydantic v2 model (every LangChain message) is
code 5 with its `model_dump()`. Our ext hook turns each into a small dict, so a message is its
class name and fields, never a LangChain object.

Checkpoint ids are uuid6 strings that sort by time: LangGraph itself takes the newest with
`ORDER BY checkpoint_id DESC`. One thread is one conversation; its messages' own `id` (which
`add_messages` gives every message) is their key, so a thread that grew sends only what is new.
"""

from __future__ import annotations

import json
from typing import Any

import msgpack
import pyarrow as pa

from tasks.extract.apps.langchain import message_row, session_user
from tasks.extract.blocks import ROW_COLUMN
from tasks.quarantine import BadRow, Reason

#: the serde's extension codes (jsonplus.py): constructor with one arg, positional args,
#: keyword args, a method with one arg, pydantic v1, pydantic v2, numpy array, delta snapshot
EXT_SINGLE, EXT_POS, EXT_KW, EXT_METHOD, EXT_PYDANTIC_V1, EXT_PYDANTIC_V2, EXT_NUMPY, EXT_DELTA = range(8)
#: `RemoveMessage(id=REMOVE_ALL_MESSAGES)` clears every message before it (langgraph/pregel/_messages.py)
REMOVE_ALL = "__remove_all__"

COLUMNS = ("lg.role", "lg.content", "lg.kind", "lg.id", "lg.position", "lg.user")


class Undecodable(ValueError):
    pass


def ext_hook(code: int, data: bytes) -> Any:
    """One extension value of the serde as a dict: {"_class": name, "_module": module, ...}."""
    if code == EXT_NUMPY:
        return {"_class": "ndarray"}
    inner = msgpack.unpackb(data, ext_hook=ext_hook, raw=False, strict_map_key=False)
    if code == EXT_DELTA:
        return {"_class": "_DeltaSnapshot", "value": inner}
    if not isinstance(inner, list) or len(inner) < 3:
        raise Undecodable(f"extension type {code} does not hold (module, class, value)")
    module, name, value = inner[0], inner[1], inner[2]
    if code in (EXT_PYDANTIC_V1, EXT_PYDANTIC_V2, EXT_KW) and isinstance(value, dict):
        return {**value, "_class": name, "_module": module}
    return {"_class": name, "_module": module, "value": value}


def loads_typed(kind: str | None, blob: bytes | str | None) -> Any:
    """The serde's `(type, bytes)` back to plain values; "json": LangChain's `lc` JSON form."""
    if kind == "null" or blob is None:
        return None
    if kind == "msgpack":
        if isinstance(blob, str):
            raise Undecodable("a msgpack blob read as text")
        try:
            return msgpack.unpackb(bytes(blob), ext_hook=ext_hook, raw=False, strict_map_key=False)
        except (ValueError, msgpack.UnpackException, TypeError) as exc:
            raise Undecodable(f"msgpack does not decode: {exc}") from None
    if kind == "json":
        try:
            return json.loads(blob, object_hook=_lc_json)
        except ValueError as exc:
            raise Undecodable(f"JSON does not decode: {exc}") from None
    raise Undecodable(f"serialisation type {kind!r} (not msgpack or json; a pickle is never unpickled)")


def _lc_json(obj: dict) -> Any:
    """LangChain's JSON form `{"lc": 1, "type": "constructor", "id": [..., class], "kwargs"}`."""
    if obj.get("lc") == 1 and obj.get("type") == "constructor" and isinstance(obj.get("id"), list):
        return {**(obj.get("kwargs") or {}), "_class": obj["id"][-1]}
    return obj


def _type_of(msg: dict) -> str:
    name = str(msg.get("type") or msg.get("_class") or "")
    return {"HumanMessage": "human", "AIMessage": "ai", "SystemMessage": "system", "ToolMessage": "tool"}.get(
        name, name
    )


def thread_messages(value: Any) -> list[tuple[str, str, str, str | None]]:
    """The `messages` channel's list as (role, text, kind, id), `RemoveMessage`s applied."""
    if value is None:
        return []
    if isinstance(value, dict) and value.get("_class") == "_DeltaSnapshot":
        value = value.get("value")
    if not isinstance(value, list):
        raise Undecodable(
            f"the messages channel holds {type(value).__name__}, not a list (a DeltaChannel's sentinel is not read)"
        )
    out: list[tuple[str, str, str, str | None]] = []
    for i, msg in enumerate(value):
        if not isinstance(msg, dict):
            raise Undecodable(f"message {i} is {type(msg).__name__}, not a message object")
        kind = _type_of(msg)
        if kind in ("remove", "RemoveMessage"):
            gone = msg.get("id")
            out = [] if gone == REMOVE_ALL else [m for m in out if m[3] != gone]
            continue
        try:
            out.append(message_row(kind, msg))
        except ValueError as exc:
            raise Undecodable(f"message {i}: {exc}") from None
    return out


class LangGraphRows:
    """Checkpoint rows (thread_id, checkpoint_id, type, blob, holds) exploded into one row a
    message; `holds` says whether the blob is the whole checkpoint (SQLite) or the messages
    channel's value (PostgreSQL's checkpoint_blobs)."""

    def __init__(self, separator: str = ""):
        self.separator = separator

    def columns(self, names: list[str]) -> list[str]:
        return ["thread_id", "checkpoint_id", *COLUMNS]

    def query(self, dialect: str, table: str | None) -> str | None:
        """The newest root-namespace checkpoint of each thread, with the blob its messages are in."""
        if table is None:
            return None  # the user's own SELECT, giving the same columns
        schema, _, name = table.rpartition(".")
        pre = f"{schema}." if schema else ""
        newest = (
            f"c.checkpoint_ns = '' AND c.checkpoint_id = (SELECT max(n.checkpoint_id) FROM {pre}{name} n "
            "WHERE n.thread_id = c.thread_id AND n.checkpoint_ns = '')"
        )
        if dialect == "postgresql":
            return (
                "SELECT c.thread_id, c.checkpoint_id, b.type, b.blob, 'messages' AS holds "
                f"FROM {pre}{name} c LEFT JOIN {pre}checkpoint_blobs b ON b.thread_id = c.thread_id "
                "AND b.checkpoint_ns = c.checkpoint_ns AND b.channel = 'messages' "
                "AND b.version = c.checkpoint -> 'channel_versions' ->> 'messages' "
                f"WHERE {newest}"
            )
        return (
            "SELECT c.thread_id, c.checkpoint_id, c.type, c.checkpoint AS blob, 'checkpoint' AS holds "
            f"FROM {pre}{name} c WHERE {newest}"
        )

    def decode(self, rb: pa.RecordBatch, offset: int, bad: list[BadRow]) -> pa.RecordBatch:
        cols = {n: rb.column(n).to_pylist() for n in ("thread_id", "checkpoint_id", "type", "blob", "holds")}
        out: dict[str, list] = {c: [] for c in ("thread_id", "checkpoint_id", *COLUMNS, ROW_COLUMN)}
        for i in range(rb.num_rows):
            thread, blob = cols["thread_id"][i], cols["blob"][i]
            try:
                value = loads_typed(cols["type"][i], blob)
                if cols["holds"][i] == "checkpoint":
                    if not isinstance(value, dict):
                        raise Undecodable("the checkpoint is not a mapping of channels")
                    value = (value.get("channel_values") or {}).get("messages")
                messages = thread_messages(value)
            except Undecodable as exc:
                raw = blob.hex()[:400] if isinstance(blob, bytes) else str(blob)[:400]
                bad.append(
                    BadRow(
                        offset + i,
                        f"thread {thread} checkpoint {cols['checkpoint_id'][i]}",
                        Reason("checkpoint does not decode", str(exc)),
                        raw,
                    )
                )
                continue
            user = session_user(thread, self.separator)
            for pos, (role, text, kind, ident) in enumerate(messages):
                for c, v in zip(
                    out,
                    (thread, cols["checkpoint_id"][i], role, text, kind, ident, pos, user, offset + i),
                    strict=True,
                ):
                    out[c].append(v)
        types = {"lg.position": pa.int64(), ROW_COLUMN: pa.int64()}
        return pa.RecordBatch.from_arrays(
            [pa.array(v, types.get(c, pa.string())) for c, v in out.items()], names=list(out)
        )
