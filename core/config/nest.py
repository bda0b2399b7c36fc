"""The `nest:` section of a mapping: messages nested inside records, and how tasks/nest/
explodes them into rows."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from core.config.files import Strict


class Match(Strict):
    """A test on one key of a level's element (`key`: a dotted path inside it), its value
    compared as text (true/false for booleans)."""

    key: str
    values: list[str] = []  # matches when the value is one of these
    other_than: list[str] = []  # ... or when it is set (not null, not missing) and none of these


class Traffic(Strict):
    """Elements that are not the conversation's text (ChatGPT: calls to a tool, a tool's
    results, context the app does not show). A matching element's rows get the column
    `traffic` (call, result, context), which the mapping's skip rules count by kind; with
    nest.tools keep, calls and results are loaded instead, their `role` key set to tool."""

    call: list[Match] = []  # any that matches: a message addressed to a tool
    result: list[Match] = []  # any that matches: a tool's answer
    hidden: list[Match] = []  # any that matches: context the app does not show (always marked)
    role: str = "role"  # the element's role key (dotted), set to tool on kept calls and results


class NestLevel(Strict):
    """One level of nesting to explode (tasks/nest/)."""

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")  # element fields become <name>.<key>
    # dotted path to the value: from the record, or from an outer level's element ("session.items")
    column: str | None = None
    kind: Literal["list", "numbered", "tree"] = "list"
    # numbered: keys like "session_{n}" of the object at `column`, in number order; `fields`
    # adds sibling keys per number to the element ({date: "session_{n}_date_time"})
    pattern: str | None = None
    fields: dict[str, str] = {}
    # tree: `column` is a dict of nodes by id (ChatGPT's mapping) or a list of nodes whose `id`
    # key names them (Claude's chat_messages); each node's `parent` key names its parent (null,
    # missing or `root`: a root). The path loaded runs from the root to the leaf the record
    # field `current` names, or without one to the newest leaf by the node key `newest` (a
    # time: ISO text or epoch seconds; ties and missing times: the later in the column). Each
    # node's `value` key is the element (null: the node itself). A list none of whose nodes has
    # a parent is a plain list (older exports).
    current: str | None = None
    parent: str = "parent"
    value: str | None = "message"
    id: str | None = None
    root: str | None = None
    newest: str | None = None
    traffic: Traffic | None = None

    @model_validator(mode="after")
    def _complete(self):
        if self.kind == "numbered" and (not self.pattern or "{n}" not in self.pattern):
            raise ValueError("kind numbered needs pattern with {n}, e.g. session_{n}")
        if self.kind == "tree" and not self.column:
            raise ValueError("kind tree needs column (the nodes: an object by id, or a list with id)")
        if self.kind == "list" and not self.column:
            raise ValueError("kind list needs column")
        return self


class RecordRule(Strict):
    """Records that hold no one's chat (an app's copies and internal rows): skipped whole,
    counted as `<kind>: record`. `key` is a dotted path in the record, into a column of JSON
    text too; the value is compared as text (true/false for booleans)."""

    key: str
    values: list[str] = []  # matches when the value is one of these
    prefix: str | None = None  # ... or starts with this
    kind: str


class MediaText(Strict):
    """Text that stands in for non-text message parts (MemOS is loaded with text)."""

    image: str = "[image]"
    image_caption: str = "[image: {caption}]"  # when the part carries a caption or alt text
    file: str = "[file: {name}]"
    audio: str = "[audio]"
    other: str = "[{type}]"


class Perspectives(Strict):
    """Load a dialogue once per speaker: each copy's `perspective` is that speaker, and
    `perspective.role` is user for the speaker's own turns, assistant for the other's."""

    # record fields naming the speakers (dotted paths), or `speakers`: everyone who speaks in
    # the record (a group chat loaded into each participant's memory)
    of: list[str] | Literal["speakers"] = Field(min_length=1)
    speaker: str  # the flattened column naming a turn's speaker
    # with `speakers`: rows whose column holds one of these values (as text: true/false for
    # booleans) make no one a holder of the chat (bots speak, but have no memory to load)
    unless: dict[str, list[str]] = {}


class NestConfig(Strict):
    """Messages nested inside records: explode them into rows (tasks/nest/)."""

    levels: list[NestLevel] = Field(min_length=1)
    text: list[str] = []  # flattened columns whose value may be a list of parts: turned into text
    # flattened columns whose value is text written as runs (a string, or strings and objects
    # with `text`, like Telegram's entities): concatenated into one text, markup dropped
    inline: list[str] = []
    media: MediaText = MediaText()
    # flattened columns kept whole as JSON (a message's attachments, read by `attachments:`);
    # with skip_empty, a message with only these is not empty
    keep: list[str] = []
    skip_empty: bool = False  # elements whose text is empty are skipped (counted in the report)
    perspectives: Perspectives | None = None
    # trees: visible loads the path the app shows; all adds each abandoned branch as its own
    # conversation (the column `branch` is "" on the shown path, "~<id of the branch's first
    # node>" on a branch: the presets write conversation_id and source_key with it)
    branches: Literal["visible", "all"] = "visible"
    # levels with `traffic`: tool calls and results skipped (marked for the skip rules) or kept
    # as role tool
    tools: Literal["skip", "keep"] = "skip"
    # trees with branches visible: drop leaves the messages off the path shown out; mark gives
    # each once after the path, with column `abandoned` true (false on the path): map it to
    # fields.deleted: never sent; a delivered one (a regenerated answer or an edit took it off
    # the path) is changed after delivery, for on_change; one never delivered is skipped as
    # `abandoned: branch`, not read (tasks/load/filters.py, docs/app-databases.md)
    abandoned: Literal["drop", "mark"] = "drop"
    skip_records: list[RecordRule] = []  # records that are not a person's chat, skipped whole
