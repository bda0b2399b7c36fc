"""Source mappings (schemas/mappings/*.yaml): how a source's columns become messages (fields,
templates, attachments, skips, time, checks) and the Mapping that holds every section. The
source, roles, nesting and redaction sections have modules of their own."""

from __future__ import annotations

import string
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from core.config.documents import DocumentsConfig
from core.config.files import Strict
from core.config.nest import NestConfig
from core.config.people import Person, check_people, person_of
from core.config.redact import RedactConfig
from core.config.roles import DEFAULT_ROLE_MAP, RolesConfig
from core.config.source import DELTA_DELETED as DELTA_DELETED
from core.config.source import ICEBERG_DELETED as ICEBERG_DELETED
from core.config.source import TABLE_DELETED, SourceConfig
from core.errors import ConfigError


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


#: the fields of a documents mapping: never mapped (its files are not messages)
DOCUMENT_FIELDS = {"user_id": "path", "conversation_id": "path", "role": "path", "content": "path"}


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
    # ids (Slack/Discord/Telegram ids as the export writes them) or people's keys, each of those
    perspective: Literal["self", "each"] | list[str] | None = None
    # the chat app a preset reads (its ids are looked up in `people`)
    app: Literal["slack", "telegram", "whatsapp", "discord"] | None = None
    # one person across apps (core/config/people.py): key -> name and ids per app; the run
    # config's `people` under these
    people: dict[str, Person] = {}
    # source.format documents: files uploaded to a knowledge base, not messages (flows/runner/documents.py)
    documents: DocumentsConfig | None = None
    path_: Path | None = Field(default=None, exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _documents_have_no_fields(cls, data):
        """A documents source sends files, not messages: no fields to map (the placeholder
        below is never read), and a changed file replaces its old upload by default."""
        if not isinstance(data, dict) or (data.get("source") or {}).get("format") != "documents":
            return data
        if data.get("fields"):
            raise ValueError("a documents source (format: documents) has no fields: its files are uploaded whole")
        if not data.get("documents"):
            raise ValueError("a documents source needs documents: {knowledgebase: NAME} (or knowledgebase_id)")
        return {**data, "fields": DOCUMENT_FIELDS, "on_change": data.get("on_change", "replace")}

    def perspective_ids(self) -> frozenset[str] | None:
        """The participants `perspective` lists, or None (everyone the mapping's side gives): a
        person's key stands for their ids in the mapping's app, and stays in the set."""
        if not isinstance(self.perspective, list):
            return None
        out = set(self.perspective)
        for who in self.perspective:
            if who in self.people and self.app:
                out.update(self.people[who].ids(self.app))
        return frozenset(out)

    def person_of(self) -> dict[str, str]:
        """Each id of the mapping's app in `people` -> its person's key."""
        return person_of(self.people, self.app)

    @field_validator("people")
    @classmethod
    def _one_owner(cls, v: dict[str, Person]) -> dict[str, Person]:
        check_people(v)
        return v

    @model_validator(mode="after")
    def _people_fit(self):
        """`constants.self` may name a person by key: it becomes their (first) id in the app."""
        me = self.constants.get("self")
        if me and me in self.people and self.app:
            ids = self.people[me].ids(self.app)
            if not ids:
                raise ValueError(f"constants.self is {me}, who has no {self.app} id in people")
            self.constants = {**self.constants, "self": ids[0]}
        if self.source.whatsapp_each_person and not person_of(self.people, "whatsapp"):
            raise ValueError(
                f"perspective {self.perspective or 'each'!r} on a WhatsApp export needs a people: map with "
                "whatsapp names (the export writes names, not ids): each mapped person who speaks in a chat "
                "gets it in their memory"
            )
        return self

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
        src = self.source
        sides = bool(self.nest and self.nest.perspectives) or src.slack_each_member or src.whatsapp_each_person
        if self.perspective == "self" and sides:
            raise ValueError("perspective self, but the mapping loads every participant's side (nest.perspectives)")
        if self.perspective is not None and self.perspective != "self" and not sides:
            raise ValueError(
                f"perspective {self.perspective!r} needs a mapping that loads each participant's side "
                "(nest.perspectives, or a preset with one: discord-export, telegram-export, slack-export, "
                "whatsapp-txt with people)"
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
        `{self}`: the exporting person's id, set by the user); a person of `people` among
        them brings all their ids in the mapping's app (a WhatsApp name and number)."""
        out = []
        for s in self.roles.user_speakers:
            name = s[1:-1] if s.startswith("{") and s.endswith("}") else None
            out.append(self.constants.get(name, s) if name else s)
        owners = self.person_of()
        for who in list(out):
            key = owners.get(who, who)
            if key in self.people and self.app:
                out.extend(i for i in self.people[key].ids(self.app) if i not in out)
        return out

    def speaker_column(self) -> str | None:
        """The column naming each message's speaker: roles.speaker_column, or the speaker of
        nest.perspectives."""
        if self.roles.speaker_column:
            return self.roles.speaker_column
        return self.nest.perspectives.speaker if self.nest and self.nest.perspectives else None

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
