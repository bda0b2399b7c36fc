"""Where a mapping's chats are (`source:`): files, S3, SQL, Redis, DynamoDB, Delta Lake and Iceberg tables, and
how their bytes are read."""

from __future__ import annotations

import os
from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from core.config.files import Strict
from core.secrets import secret_block


class S3Config(Strict):
    bucket: str
    prefix: str = ""
    endpoint_url: str | None = None  # S3-compatible stores and local servers
    region: str = "us-east-1"
    credentials_block: str | None = None  # Prefect Secret block with JSON keys; default: the AWS chain
    partition_key: str | None = None  # Hive partition (e.g. dt) that --since/--until select on


class Connected(Strict):
    """A source reached by a URL: given in the file, in an environment variable (passwords stay
    out of files) or in a Prefect Secret block."""

    url: str | None = None
    url_env: str | None = None  # the environment variable holding the URL
    url_block: str | None = None  # the name of a Prefect Secret block holding it

    section: ClassVar[str]  # the key under source: (sql, redis), named in errors

    def resolved_url(self) -> str:
        """The URL, from wherever it is given."""
        url = self.url or (os.environ.get(self.url_env) if self.url_env else None)
        if not url and self.url_block:
            try:
                url = secret_block(self.url_block)
            except ValueError as exc:
                raise ValueError(f"source.{self.section}.url_block: {exc}") from None
        if not url:
            raise ValueError(
                f"source.{self.section}: set url, url_env to a variable that holds it, or url_block to a Prefect "
                f"Secret block{f' ({self.url_env} is empty)' if self.url_env else ''}"
            )
        return url


class SqlConfig(Connected):
    section = "sql"  # url: a SQLAlchemy URL
    table: str | None = None  # a table (schema.table allowed) ...
    query: str | None = None  # ... or a SELECT, used as a subquery
    cursor_column: str  # increasing id or updated_at: what a nightly run continues from
    key_column: str  # unique per row: breaks cursor ties in keyset pagination
    # late-arriving rows: each run re-reads this far behind its cursor (seconds for a datetime
    # cursor, cursor units for a numeric one); the ledger drops what was already delivered
    lag: float = Field(default=0, ge=0)
    initial_value: str | int | float | None = None  # where the first run starts (default: the beginning)
    page_rows: int = Field(default=50_000, ge=1)
    # an AI app's own store, decoded before mapping (tasks/extract/apps/): LangChain's serialised
    # messages, LangGraph's msgpack checkpoints, the Vercel AI chatbot's parts; the presets set it
    app: Literal["langchain", "langgraph", "vercel"] | None = None


class RedisConfig(Connected):
    """Chat histories in Redis, one key a session (tasks/extract/redis.py); the run only reads.
    url: redis://[:password@]host:6379/0 (rediss:// for TLS)."""

    section = "redis"
    pattern: str = "message_store:*"  # the keys (SCAN MATCH); the part before its first * is the prefix
    value: Literal["list", "string", "hash"] = "list"  # each key's kind: a row per element, the value, per field
    # list: where the app pushes new elements; left (LPUSH, newest at the head) as LangChain writes
    push: Literal["left", "right"] = "left"
    shards: int = Field(default=64, ge=1, le=100_000)  # units: keys dealt by a stable hash of the key
    page_keys: int = Field(default=500, ge=1)  # keys read per round trip (memory: one page of values)
    app: Literal["langchain"] | None = None  # LangChain's serialised messages, decoded (the preset sets it)

    @property
    def prefix(self) -> str:
        """The session id of a key is the key less this: the pattern up to its first wildcard."""
        cut = [i for i in (self.pattern.find(c) for c in "*?[\\") if i >= 0]
        return self.pattern[: min(cut)] if cut else ""


class DynamoDBConfig(Strict):
    """Chat histories in a DynamoDB table, one item a session (tasks/extract/dynamodb.py); the
    run only reads (Scan, Query, DescribeTable)."""

    table: str
    region: str = "us-east-1"
    endpoint_url: str | None = None  # DynamoDB-compatible servers and local ones (DynamoDB Local, moto)
    credentials_block: str | None = None  # Prefect Secret block with JSON keys; default: the AWS chain
    # the list attribute holding an item's messages: a row per element (LangChain: History);
    # null: a row per item
    messages: str | None = None
    # a Query instead of a Scan: the partition key's value (one user's or one session's items),
    # on the table or on `index` (a secondary index)
    key: dict[str, str | int] | None = None
    index: str | None = None
    # the units of a Scan: parallel scan segments (each item always falls in the same one)
    segments: int = Field(default=4, ge=1, le=1_000_000)
    page_items: int = Field(default=500, ge=1)  # items asked per Scan/Query call (memory: one page)
    consistent_read: bool = False  # strongly consistent reads (twice the read capacity)
    # an attribute every write moves forward (updated_at, a version): a nightly run reads only
    # items at or after the last run's highest value (one unit; removals are found by reconcile).
    # null: every run reads the table and the ledger drops what was delivered
    cursor: str | None = None
    app: Literal["langchain"] | None = None  # LangChain's serialised messages, decoded (the preset sets it)

    @model_validator(mode="after")
    def _one_key(self):
        if self.key is not None and len(self.key) != 1:
            raise ValueError(
                "source.dynamodb.key: the partition key's one attribute and its value, e.g. {SessionId: abc}"
            )
        if self.index is not None and self.key is None:
            raise ValueError("source.dynamodb.index: a Query on an index needs key (its partition key's value)")
        return self


#: the column a Delta source adds to every batch: true on the change feed's deletes
DELTA_DELETED = "_delta_deleted"
#: the column an Iceberg source adds to every batch: true on rows a later snapshot removed
ICEBERG_DELETED = "_iceberg_deleted"
#: the flag column of each table source type (the mapping's fields.deleted by default)
TABLE_DELETED = {"delta": DELTA_DELETED, "iceberg": ICEBERG_DELETED}


class DeltaConfig(Strict):
    """A Delta Lake table, read as a table (tasks/extract/delta.py)."""

    table: str  # a local path (relative to the mapping file) or s3://bucket/path
    endpoint_url: str | None = None  # S3-compatible stores and local servers
    region: str = "us-east-1"
    credentials_block: str | None = None  # Prefect Secret block with JSON keys; default: the AWS chain
    storage_options: dict[str, str] = {}  # handed to deltalake as they are (other stores, settings)


class IcebergConfig(Strict):
    """An Apache Iceberg table, read through its catalog or from its folder (tasks/extract/iceberg.py)."""

    table: str | None = Field(default=None, pattern=r"^[^.\s]+(\.[^.\s]+)+$")  # namespace.name in the catalog
    # ... or, with no catalog, the table's folder (local, relative to the mapping file, or
    # s3://bucket/path): each run reads its newest metadata/*.metadata.json
    location: str | None = None
    # pyiceberg's catalog properties: type (sql, rest, glue, hive, ...), uri, warehouse, ...; a
    # relative sqlite:/// path or local warehouse folder is relative to the mapping file. Empty:
    # pyiceberg's own configuration (~/.pyiceberg.yaml, PYICEBERG_CATALOG__<NAME>__* variables)
    catalog: dict[str, str] = {}
    catalog_name: str = "default"
    catalog_block: str | None = None  # Prefect Secret block with JSON properties (a REST token, ...)
    endpoint_url: str | None = None  # S3-compatible stores and local servers (the data files)
    region: str = "us-east-1"
    credentials_block: str | None = None  # Prefect Secret block with JSON keys; default: the AWS chain

    @model_validator(mode="after")
    def _one_way_in(self):
        if (self.table is None) == (self.location is None):
            raise ValueError(
                "source.iceberg needs exactly one of table (namespace.name, with its catalog) or location "
                "(the table's folder, read without a catalog)"
            )
        return self


class SourceConfig(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    type: Literal["files", "s3", "sql", "redis", "dynamodb", "delta", "iceberg"] = "files"
    # files and s3; json needs `nest`; whatsapp: the text of WhatsApp's "Export chat" (tasks/extract/chatlines.py)
    # slack: a workspace export's day files, with its directory (tasks/extract/slack.py)
    # documents: files of any type uploaded whole to a MemOS knowledge base (flows/runner/documents.py)
    format: Literal["parquet", "jsonl", "csv", "json", "whatsapp", "slack", "documents"] | None = None
    path: str | None = None  # files: file, directory or glob, relative to the mapping file
    s3: S3Config | None = None
    sql: SqlConfig | None = None
    redis: RedisConfig | None = None
    dynamodb: DynamoDBConfig | None = None
    delta: DeltaConfig | None = None
    iceberg: IcebergConfig | None = None
    batch_rows: int = Field(default=131_072, ge=1)
    csv_delimiter: str = ","
    # text formats (jsonl, csv, json): how bytes become text. A UTF-8 BOM is stripped and a
    # UTF-16 BOM switches to UTF-16 whatever is set; bytes that do not decode quarantine their
    # row (`quarantine`) or become U+FFFD (`replace`)
    encoding: str = "utf-8"
    encoding_errors: Literal["quarantine", "replace"] = "quarantine"
    # `auto`: by the name's last extension (.gz, .bz2, .zst, .xz); a .zip is read member by member
    compression: Literal["auto", "none", "gzip", "bz2", "zstd", "xz"] = "auto"
    # a glob of the members to read in .zip archives, and of the files in a folder (default: by format)
    members: str | None = None
    # json: the dotted path of the array whose items are the records, inside a top-level object
    # (Telegram's result.json: chats.list); default: a top-level array's items, or the object
    records: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$")
    # whatsapp: dates day first (31/12/2023) or month first (12/31/23); null: the file decides
    day_first: bool | None = None
    # whatsapp: the export's language code ("es", "pt", "de", ...), which names its notices,
    # placeholders and date shape; null: detected from the file
    locale: str | None = None
    # slack: threads in their channel (`channel`) or each a conversation of its own (`own`);
    # and one copy of every message per human member of its channel (column `member`)
    slack_threads: Literal["channel", "own"] = "channel"
    slack_each_member: bool = False
    # whatsapp: one copy of every chat per person of the mapping's `people` who speaks in it
    # (columns perspective: their key; perspective.role: user for their messages)
    whatsapp_each_person: bool = False
    # jsonl with `nest`: a document a line, its lines gathered into one record per value of this
    # field, {<group_by>: value, lines: [documents]}, read as MongoDB Extended JSON (a mongoexport
    # of LibreChat's messages: conversationId; tasks/extract/grouped.py)
    group_by: str | None = None
    # a record (a JSONL line, a CSV row, a JSON item) longer than this is quarantined with its
    # size and streamed past, never held whole
    max_record_bytes: int = Field(default=64 << 20, ge=1 << 20)

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, v: str) -> str:
        import codecs

        try:
            return codecs.lookup(v).name
        except LookupError:
            raise ValueError(f"unknown encoding {v!r} (e.g. utf-8, latin-1, cp1252, utf-16)") from None

    @model_validator(mode="after")
    def _complete(self):
        need = {"files": ("format", "path"), "s3": ("format", "s3")}.get(self.type, (self.type,))
        missing = [k for k in need if getattr(self, k) is None]
        if missing:
            raise ValueError(f"type {self.type} needs {', '.join('source.' + k for k in missing)}")
        if self.sql and (self.sql.table is None) == (self.sql.query is None):
            raise ValueError("source.sql needs exactly one of table or query")
        return self
