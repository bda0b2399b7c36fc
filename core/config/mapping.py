"""Source mappings (schemas/mappings/*.yaml): the source, how its columns become messages,
nesting, redaction, checks; presets under a mapping's own keys; loading one from a file."""

from __future__ import annotations

import os
import string
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from core.config.files import Strict
from core.config.nest import NestConfig
from core.config.redact import RedactConfig
from core.errors import ConfigError
from core.secrets import secret_block
from schemas.roles import ALLOWED_ROLES

#: Role spellings normalised out of the box; a mapping's `roles.map` adds to or overrides these.
DEFAULT_ROLE_MAP = {
    "user": "user",
    "human": "user",
    "usr": "user",
    "customer": "user",
    "person": "user",
    "assistant": "assistant",
    "ai": "assistant",
    "bot": "assistant",
    "gpt": "assistant",
    "model": "assistant",
    "agent": "assistant",
    "chatbot": "assistant",
    "system": "system",
    "developer": "system",
    "tool": "tool",
    "function": "tool",
}


class S3Config(Strict):
    bucket: str
    prefix: str = ""
    endpoint_url: str | None = None  # S3-compatible stores and local servers
    region: str = "us-east-1"
    credentials_block: str | None = None  # Prefect Secret block with JSON keys; default: the AWS chain
    partition_key: str | None = None  # Hive partition (e.g. dt) that --since/--until select on


class SqlConfig(Strict):
    url: str | None = None  # SQLAlchemy URL ...
    url_env: str | None = None  # ... or the environment variable holding it (passwords stay out of files)
    url_block: str | None = None  # ... or the name of a Prefect Secret block holding it
    table: str | None = None  # a table (schema.table allowed) ...
    query: str | None = None  # ... or a SELECT, used as a subquery
    cursor_column: str  # increasing id or updated_at: what a nightly run continues from
    key_column: str  # unique per row: breaks cursor ties in keyset pagination
    # late-arriving rows: each run re-reads this far behind its cursor (seconds for a datetime
    # cursor, cursor units for a numeric one); the ledger drops what was already delivered
    lag: float = Field(default=0, ge=0)
    initial_value: str | int | float | None = None  # where the first run starts (default: the beginning)
    page_rows: int = Field(default=50_000, ge=1)

    def resolved_url(self) -> str:
        url = self.url or (os.environ.get(self.url_env) if self.url_env else None)
        if not url and self.url_block:
            try:
                url = secret_block(self.url_block)
            except ValueError as exc:
                raise ValueError(f"source.sql.url_block: {exc}") from None
        if not url:
            raise ValueError(
                "source.sql: set url, url_env to a variable that holds it, or url_block to a Prefect "
                f"Secret block{f' ({self.url_env} is empty)' if self.url_env else ''}"
            )
        return url


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
    type: Literal["files", "s3", "sql", "delta", "iceberg"] = "files"
    # files and s3; json needs `nest`; whatsapp: the text of WhatsApp's "Export chat" (tasks/extract/chatlines.py)
    # slack: a workspace export's day files, with its directory (tasks/extract/slack.py)
    format: Literal["parquet", "jsonl", "csv", "json", "whatsapp", "slack"] | None = None
    path: str | None = None  # files: file, directory or glob, relative to the mapping file
    s3: S3Config | None = None
    sql: SqlConfig | None = None
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
    # slack: threads in their channel (`channel`) or each a conversation of its own (`own`);
    # and one copy of every message per human member of its channel (column `member`)
    slack_threads: Literal["channel", "own"] = "channel"
    slack_each_member: bool = False
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


class Template(BaseModel):
    """A field spec: a column name, or a template like "{dataset}_{speaker}"."""

    literals: list[str]  # len(names) + 1 pieces around the names
    names: list[str]

    @classmethod
    def parse(cls, spec: str) -> Template:
        if "{" not in spec and "}" not in spec:
            return cls(literals=["", ""], names=[spec])
        literals, names = [""], []
        for literal, name, fmt, conv in string.Formatter().parse(spec):
            literals[-1] += literal
            if name is None:
                continue
            if not name or fmt or conv:
                raise ValueError(f"template {spec!r}: use plain {{name}} placeholders")
            names.append(name)
            literals.append("")
        return cls(literals=literals, names=names)

    @property
    def is_column(self) -> bool:
        return bool(self.names) and len(self.names) == 1 and self.literals == ["", ""]


class ContentAppend(Strict):
    column: str
    # "{}" is replaced by the column's value; without "{}" the template marks that the value is
    # there ("[photo]") and leaves it out; nothing is added where the value is null or empty
    template: str = " {}"
    # where the message has no text of its own, the template's leading whitespace is left out
    # ("[file: a.png]", not "\n[file: a.png]")
    strip_when_alone: bool = False


class AttachmentColumn(Strict):
    """Where a message's attachments are: a column holding a path inside the export or a URL,
    or a list (JSON) of those or of objects (`ref` and `name` name their keys)."""

    column: str
    ref: str | None = None  # objects: the key holding the URL or the path (relative to the file)
    # objects: the key holding the file name; a text value: a column with it (default: the
    # last part of the path or URL)
    name: str | None = None
    require_name: bool = False  # only the values that have a name (Telegram: a sticker's file has none)
    kind: Literal["image", "file", "auto"] = "auto"  # auto: by the name's extension
    # the text each attachment adds to the message (after its text, on a line of its own);
    # {name} and {kind} are filled; "" adds nothing (the reader already wrote it)
    note: str = "[{kind}: {name}]"


class Attachments(Strict):
    """A message's images and files. note: named in the text ("[file: a.pdf]"); parts: named
    in the text and, where the export holds the file or names a URL, sent as MemOS content
    parts (tasks/attachments.py); skip: neither."""

    mode: Literal["note", "parts", "skip"] = "note"
    columns: list[AttachmentColumn] = []


class SkipRule(Strict):
    """Rows that are not messages (joins, topic changes, service lines, bots): left out after
    mapping, counted in the report's `skipped` by `<kind>: <value>`; not read, not an outcome."""

    column: str
    values: list[str] = Field(min_length=1)  # compared as text: true/false for booleans
    kind: str | None = None  # the report's name for these rows (default: the column)


class RolesConfig(Strict):
    map: dict[str, str] = {}
    # two-person dialogues without a role column: which speakers are the user
    speaker_column: str | None = None
    user_speakers: list[str] = []
    # per-row alternative to user_speakers: the column holding this row's dialogue's user
    # speaker (e.g. speaker_a); role is user where speaker equals it. A person can then be
    # the user of one dialogue and the other speaker of another.
    user_speaker_column: str | None = None
    other_speakers: Literal["assistant", "unknown"] = "assistant"
    # group chats loaded from one person's side: a column (or template) naming each speaker,
    # put in front of the text of every message that is not the user's ("Ann: see you")
    name_others: str | None = None

    @field_validator("map")
    @classmethod
    def _roles_allowed(cls, v: dict[str, str]) -> dict[str, str]:
        bad = {k: r for k, r in v.items() if r not in ALLOWED_ROLES}
        if bad:
            raise ValueError(f"targets must be one of {ALLOWED_ROLES}, got {bad}")
        return {k.strip().lower(): r for k, r in v.items()}


class TimeConfig(Strict):
    # "iso" (ISO 8601, offset optional), "epoch_s", "epoch_ms", or strptime formats, tried in order
    formats: list[str] = ["iso"]
    timezone: str = "UTC"  # for times without an offset

    @field_validator("timezone")
    @classmethod
    def _tz_known(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA time zone {v!r} (e.g. UTC, Europe/Berlin)") from None
        return v


class Fields(Strict):
    user_id: str
    conversation_id: str
    content: str | list[str]  # a list: the first that is not empty, row by row (content parts, then text)
    role: str | None = None
    chat_time: str | list[str] | None = None  # a list: the first that parses (turn time, then session date)
    seq: str | None = None
    agent_id: str | None = None
    app_id: str | None = None
    tags: str | None = None
    info: str | None = None
    source_key: str | None = None
    # soft delete: a column that is true (bool), non-zero, or set (a deleted_at timestamp, a
    # CDC op of 'd') when the message was deleted in the source
    deleted: str | None = None


class ChecksConfig(Strict):
    """Per-source expectations added to the canonical suite (tasks/validate.py)."""

    allowed_speakers: list[str] | None = None  # raw values of roles.speaker_column, or of the role column
    max_content_chars: int | None = Field(default=None, ge=1)
    chat_time_min: datetime | None = None  # tz-aware, or UTC when naive
    chat_time_max: datetime | None = None
    # a conversation that has no user message (here or already delivered) is quarantined
    conversation_needs_user_message: bool = False


class Mapping(Strict):
    source: SourceConfig
    preset: str | None = None  # schemas/presets/<name>.yaml, under this mapping's own keys; auto: sniffed
    preset_detected: str | None = None  # set by `preset: auto`: what it chose and why (the report names it)
    nest: NestConfig | None = None
    constants: dict[str, str] = {}
    fields: Fields
    content_append: list[ContentAppend] = []
    attachments: Attachments = Attachments()
    skip: list[SkipRule] = []
    roles: RolesConfig = RolesConfig()
    time: TimeConfig = TimeConfig()
    tags: list[str] = []  # constant tags added to every request
    checks: ChecksConfig = ChecksConfig()
    # a delivered message that changed, or that the source deleted: `report` counts it (and
    # lists its conversation); replace/delete rewrite the conversation on the target
    on_change: Literal["report", "replace"] = "report"
    on_delete: Literal["report", "delete"] = "report"
    redact: RedactConfig | None = None  # personal data removed before staging, the ledger and MemOS
    # whose memory a group chat becomes (presets that have both sides): self, the exporting
    # person's (constants.self); each, every human participant's; or a list of participant
    # ids (Slack/Discord/Telegram ids as the export writes them), each of those
    perspective: Literal["self", "each"] | list[str] | None = None
    path_: Path | None = Field(default=None, exclude=True)

    def perspective_ids(self) -> frozenset[str] | None:
        """The participants `perspective` lists, or None (everyone the mapping's side gives)."""
        return frozenset(self.perspective) if isinstance(self.perspective, list) else None

    @model_validator(mode="after")
    def _table_keys(self):
        kind = self.source.type
        if kind not in TABLE_DELETED:
            return self
        if self.fields.source_key is None:
            raise ValueError(
                f"source.type {kind} needs fields.source_key (a message id column): the table's updates "
                "and deletes are matched to what was delivered by it"
            )
        if self.fields.deleted is None:  # the table's deletes arrive flagged in this column
            self.fields.deleted = TABLE_DELETED[kind]
        return self

    @model_validator(mode="after")
    def _attachments_fit(self):
        if self.attachments.mode == "parts" and self.redact is not None:
            raise ValueError(
                "attachments.mode parts with redact: the files would reach MemOS unredacted "
                "(redaction reads text); use attachments.mode note or skip"
            )
        sides = bool(self.nest and self.nest.perspectives) or self.source.slack_each_member
        if self.perspective == "self" and sides:
            raise ValueError("perspective self, but the mapping loads every participant's side (nest.perspectives)")
        if self.perspective is not None and self.perspective != "self" and not sides:
            raise ValueError(
                f"perspective {self.perspective!r} needs a mapping that loads each participant's side "
                "(nest.perspectives, or a preset with one: discord-export, telegram-export, slack-export)"
            )
        texts = set(self.nest.text) if self.nest else set()
        for att in self.attachments.columns:
            if att.column in texts:
                raise ValueError(
                    f"attachments column {att.column!r} is also in nest.text, which makes it text; "
                    "list it under nest.keep instead"
                )
        return self

    def template(self, field: str) -> Template | None:
        specs = self.templates(field)
        return specs[0] if specs else None

    def templates(self, field: str) -> list[Template]:
        spec = getattr(self.fields, field)
        if spec is None:
            return []
        return [Template.parse(s) for s in ([spec] if isinstance(spec, str) else spec)]

    def role_map(self) -> dict[str, str]:
        return {**DEFAULT_ROLE_MAP, **self.roles.map}

    def referenced_columns(self) -> dict[str, str]:
        """Every source column the mapping reads, keyed by the config key that names it."""
        cols: dict[str, str] = {}
        for field in Fields.model_fields:
            for tpl in self.templates(field):
                for name in tpl.names:
                    if name not in self.constants:
                        cols.setdefault(name, f"fields.{field}")
        for i, part in enumerate(self.content_append):
            cols.setdefault(part.column, f"content_append[{i}].column")
        for i, att in enumerate(self.attachments.columns):
            cols.setdefault(att.column, f"attachments.columns[{i}].column")
            if att.name and att.name.split(".", 1)[0] == att.column.split(".", 1)[0] and "." in att.name:
                cols.setdefault(att.name, f"attachments.columns[{i}].name")
        for i, rule in enumerate(self.skip):
            cols.setdefault(rule.column, f"skip[{i}].column")
        if self.roles.speaker_column:
            cols.setdefault(self.roles.speaker_column, "roles.speaker_column")
        if self.roles.user_speaker_column:
            cols.setdefault(self.roles.user_speaker_column, "roles.user_speaker_column")
        if self.roles.name_others:
            for name in Template.parse(self.roles.name_others).names:
                if name not in self.constants:
                    cols.setdefault(name, "roles.name_others")
        return cols

    def walked_columns(self) -> frozenset[str]:
        """The flattened names a nested mapping reads: its columns and what nest itself needs
        (text, inline, kept JSON, the speakers of perspectives). The walk makes no others."""
        names = set(self.referenced_columns())
        if self.nest is not None:
            names.update(self.nest.text, self.nest.inline, self.nest.keep)
            if self.nest.perspectives is not None:
                names.add(self.nest.perspectives.speaker)
                names.update(self.nest.perspectives.unless)
                if isinstance(self.nest.perspectives.of, list):
                    names.update(self.nest.perspectives.of)
        return frozenset(names)

    def user_speakers(self) -> list[str]:
        """roles.user_speakers, with `{name}` entries taken from the constants (a preset's
        `{self}`: the exporting person's id, set by the user)."""
        out = []
        for s in self.roles.user_speakers:
            name = s[1:-1] if s.startswith("{") and s.endswith("}") else None
            out.append(self.constants.get(name, s) if name else s)
        return out

    def check_columns(self, available: list[str], where: str) -> None:
        """Stop with a clear error when the mapping names a column the source does not have."""
        for col, key in self.referenced_columns().items():
            if col not in available:
                raise ConfigError(
                    str(self.path_ or "mapping"),
                    key,
                    f"column {col!r} is not in {where} (columns: {', '.join(available)}); "
                    "fix the name, or add it under `constants` if it is a fixed value",
                )

    def resolve_path(self) -> str:
        p = Path(self.source.path or ".")
        if not p.is_absolute() and self.path_ is not None:
            p = self.path_.parent / p
        return str(p)
