"""Who speaks (`roles:`): role spellings, speakers that are the user, names in front of others'
text."""

from __future__ import annotations

from typing import Literal

from pydantic import field_validator

from core.config.files import Strict
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
