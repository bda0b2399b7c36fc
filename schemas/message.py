"""The canonical message schema: one row per chat message, the contract between steps.

Every source is mapped onto this schema before validation; everything after validation
(batching, loading, the ledger) reads only these columns. The pyarrow schema below is the
source of truth; docs and expectation suites are derived from it.
"""

from __future__ import annotations

import pyarrow as pa

from schemas.roles import ALLOWED_ROLES, MAX_ID_CHARS  # noqa: F401  (re-exported)

MESSAGE_SCHEMA = pa.schema(
    [
        pa.field(
            "source_key",
            pa.string(),
            nullable=False,
            metadata={"doc": "stable key of the message in its source (message id or content identity)"},
        ),
        pa.field("user_id", pa.string(), metadata={"doc": "MemOS user_id, at most 100 chars"}),
        pa.field("conversation_id", pa.string(), metadata={"doc": "MemOS conversation_id, at most 100 chars"}),
        pa.field("role", pa.string(), metadata={"doc": "user | assistant | system | tool, after normalisation"}),
        pa.field("content", pa.string(), metadata={"doc": "message text sent to MemOS"}),
        pa.field("chat_time", pa.timestamp("us", tz="UTC"), metadata={"doc": "when the message was said, tz-aware"}),
        pa.field(
            "seq",
            pa.int64(),
            metadata={"doc": "order within the conversation (null: order by chat_time, then source position)"},
        ),
        pa.field("agent_id", pa.string()),
        pa.field("app_id", pa.string()),
        pa.field("tags", pa.list_(pa.string())),
        pa.field("info", pa.string(), metadata={"doc": "JSON object merged into the request's info"}),
        # provenance: where the row came from, for quarantine and tracing
        pa.field("source_file", pa.string(), nullable=False),
        pa.field("source_row", pa.int64(), nullable=False),
        # 128-bit identity of source_key, used by the ledger (two halves: SQL has no uint128)
        pa.field("key_lo", pa.int64(), nullable=False),
        pa.field("key_hi", pa.int64(), nullable=False),
        # the source says the message is gone (mapping fields.deleted): never sent; delivered
        # copies are handled by the source's on_delete policy
        pa.field("deleted", pa.bool_(), metadata={"doc": "soft-deleted in the source (fields.deleted)"}),
        # attachments.mode parts: the message's images and files, JSON [{kind, name, ref, ...}]
        # (tasks/attachments.py); sent as content parts after the text. Null: none, or not parts
        pa.field("attachments", pa.string(), metadata={"doc": "JSON list of attachments sent as parts"}),
    ]
)

#: Fields a mapping config can fill; the rest are derived by the pipeline.
MAPPABLE_FIELDS = (
    "user_id",
    "conversation_id",
    "role",
    "content",
    "chat_time",
    "seq",
    "agent_id",
    "app_id",
    "tags",
    "info",
    "source_key",
    "deleted",
)
REQUIRED_FIELDS = ("user_id", "conversation_id", "content")


def empty_table() -> pa.Table:
    return MESSAGE_SCHEMA.empty_table()
