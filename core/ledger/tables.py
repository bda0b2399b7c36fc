"""The ledger's tables at the newest schema revision (see migrations/ for how each got here).

A change here ships with a migration in migrations/versions/ that brings an existing ledger
to the same shape in place; tests/test_ledger_migrations.py checks that the two agree.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

TAIL = 50  # MemOS's /get/message returns at most 50 messages

runs = sa.Table(
    "runs",
    metadata,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("flow", sa.String(32), nullable=False),
    sa.Column("source", sa.String(64), nullable=False),
    sa.Column("target", sa.String(512), nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
    sa.Column(
        "status", sa.String(16), nullable=False
    ),  # running | completed | incomplete | interrupted | failed | crashed
    sa.Column("host", sa.String(255)),
    sa.Column("pid", sa.Integer),
    sa.Column("report", sa.Text),
)

batches = sa.Table(
    "batches",
    metadata,  # one row per request
    sa.Column("batch_key", sa.String(64), primary_key=True),
    sa.Column("target", sa.String(512), nullable=False),
    sa.Column("source", sa.String(64), nullable=False),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("user_id", sa.String(128), nullable=False),
    sa.Column("conversation_id", sa.String(128), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # sent | delivered | failed
    sa.Column("n_messages", sa.Integer, nullable=False),
    sa.Column("n_tokens", sa.Integer, nullable=False),
    sa.Column("first_key", sa.Text, nullable=False),
    sa.Column("last_key", sa.Text, nullable=False),
    sa.Column("last_order", sa.BigInteger),
    sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("acked_at", sa.DateTime(timezone=True)),
    sa.Column("task_id", sa.String(128)),
    sa.Column("detail", sa.Text),
    # 64-bit hash of (role, content) per message, in order: what reconciliation compares
    # against the target's copy of the conversation
    sa.Column("msg_hashes", sa.LargeBinary, nullable=False),
    sa.Index("ix_batches_conv", "target", "user_id", "conversation_id"),
    sa.Index("ix_batches_status", "target", "status"),
)

messages = sa.Table(
    "messages",
    metadata,  # the 128-bit identity of every message of a request
    sa.Column("target", sa.String(512), primary_key=True),
    sa.Column("key_lo", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("key_hi", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("batch_key", sa.String(64), nullable=False),
    # 64-bit fingerprint of what was sent (role, content, chat_time, user, conversation):
    # a re-read message with the same key and another fingerprint changed after delivery.
    # NULL for messages delivered before revision 0002 (not compared)
    sa.Column("fp", sa.BigInteger),
    # 64-bit hash of the file or object the message was read from (core/ledger/deliveries.py
    # unit_hash): a rewritten file that no longer holds a key it held lost that message
    sa.Column("unit", sa.BigInteger),
    sa.Index("ix_messages_unit", "target", "unit"),
)

conversations = sa.Table(
    "conversations",
    metadata,  # per conversation: how far delivery got
    sa.Column("target", sa.String(512), primary_key=True),
    sa.Column("user_id", sa.String(128), primary_key=True),
    sa.Column("conversation_id", sa.String(128), primary_key=True),
    sa.Column("delivered_messages", sa.BigInteger, nullable=False),
    sa.Column("last_order", sa.BigInteger),
    sa.Column("last_batch_key", sa.String(64)),
    # message hashes of the last TAIL delivered messages: tells reconciliation when the
    # conversation already ended with what an unconfirmed request would have added
    sa.Column("tail", sa.LargeBinary),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

objects = sa.Table(
    "objects",
    metadata,  # the manifest of files/objects a source has fully processed
    sa.Column("source", sa.String(64), primary_key=True),
    sa.Column("target", sa.String(512), primary_key=True),
    sa.Column("unit", sa.String(1024), primary_key=True),
    sa.Column("version", sa.String(256), nullable=False),  # ETag, or size:mtime for local files
    sa.Column("size", sa.BigInteger),
    sa.Column("status", sa.String(16), nullable=False),  # done | failed
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("detail", sa.Text),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

source_state = sa.Table(
    "source_state",
    metadata,
    sa.Column("source", sa.String(64), primary_key=True),
    sa.Column("target", sa.String(512), primary_key=True),
    sa.Column("cursor", sa.Text),  # tasks/cursor.py encoding; only nightly runs move it
    sa.Column("columns", sa.Text),  # JSON column -> type kind seen by the last completed run
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

leases = sa.Table(
    "leases",
    metadata,  # which run may send to a conversation right now
    sa.Column("target", sa.String(512), primary_key=True),
    sa.Column("user_id", sa.String(128), primary_key=True),
    sa.Column("conversation_id", sa.String(128), primary_key=True),
    sa.Column("holder", sa.String(64), nullable=False),  # run id
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
)

backfill_parts = sa.Table(
    "backfill_parts",
    metadata,  # one row per partition of a backfill: what resumes it
    sa.Column("backfill_id", sa.String(32), primary_key=True),  # hash of source, target, range, split
    sa.Column("part_key", sa.String(512), primary_key=True),  # e.g. cursor:[a,b) partition:dt=.. hash:3/16
    sa.Column("source", sa.String(64), nullable=False),
    sa.Column("target", sa.String(512), nullable=False),
    sa.Column("spec", sa.Text, nullable=False),  # JSON: the slice the partition reads
    sa.Column("status", sa.String(16), nullable=False),  # pending | running | done | incomplete | failed
    sa.Column("run_id", sa.String(64)),  # the ledger run working on it (or that finished it)
    sa.Column("flow_run_id", sa.String(64)),  # the Prefect flow run submitted for it, if any
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("heartbeat_at", sa.DateTime(timezone=True)),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("report", sa.Text),
)

erasures = sa.Table(
    "erasures",
    metadata,  # `memos-etl erase`: erasures and the erasure log, ids only
    sa.Column("erasure_id", sa.String(40), primary_key=True),
    sa.Column("user_id", sa.String(128), nullable=False),
    sa.Column("conversation_id", sa.String(128)),  # NULL: the whole user
    sa.Column("target", sa.String(512), nullable=False),  # where its memories were deleted
    sa.Column("erased_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("erased_by", sa.String(128)),  # the OS user who ran erase
    sa.Column("memories_deleted", sa.Integer),
    sa.Column("messages_forgotten", sa.Integer),
    sa.Column("status", sa.String(16), nullable=False),  # started | done
    sa.Index("ix_erasures_user", "user_id"),
)

rewrites = sa.Table(
    "rewrites",
    metadata,  # conversations a source policy rewrites on the target (rewrites.py)
    sa.Column("target", sa.String(512), primary_key=True),
    sa.Column("user_id", sa.String(128), primary_key=True),
    sa.Column("conversation_id", sa.String(128), primary_key=True),
    sa.Column("source", sa.String(64), nullable=False),
    sa.Column("reason", sa.String(16), nullable=False),  # changed | deleted | gone
    sa.Column("status", sa.String(16), nullable=False),  # planned (memories not yet deleted) | deleted
    sa.Column("run_id", sa.String(64), nullable=False),  # the run that planned it
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_rewrites_source", "target", "source"),
)

documents = sa.Table(
    "documents",
    metadata,  # one row per version of a document file uploaded to a knowledge base (documents.py)
    sa.Column("target", sa.String(512), primary_key=True),
    sa.Column("source", sa.String(64), primary_key=True),
    sa.Column("path", sa.String(1024), primary_key=True),  # the unit's relative name
    sa.Column("sha256", sa.String(64), primary_key=True),  # of the bytes uploaded
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("name", sa.String(512), nullable=False),  # the name uploaded under
    sa.Column("knowledgebase_id", sa.String(128), nullable=False),
    sa.Column("file_id", sa.String(128)),  # MemOS's id; null while the upload is unanswered
    # sent (in doubt) | running | completed | failed (MemOS could not parse it) |
    # replaced (a newer version took its place; deleted there) | deleted (gone from the source)
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("detail", sa.Text),
    sa.Index("ix_documents_status", "target", "source", "status"),
)

knowledgebases = sa.Table(
    "knowledgebases",
    metadata,  # the knowledge bases this ledger created (MemOS has no call that lists them)
    sa.Column("target", sa.String(512), primary_key=True),
    sa.Column("name", sa.String(256), primary_key=True),
    sa.Column("knowledgebase_id", sa.String(128)),  # null while the create is unanswered
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

rate_limits = sa.Table(
    "rate_limits",
    metadata,  # token buckets a fleet shares (ratelimits.py): one row per load.fleet_limit name
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("requests", sa.Double, nullable=False),  # requests in the bucket at updated_s
    sa.Column("tokens", sa.Double, nullable=False),  # tokens in the bucket at updated_s
    sa.Column("updated_s", sa.Double, nullable=False),  # seconds since the epoch, the database's clock
)
