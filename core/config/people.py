"""One person across apps (`people:`): each person named once, by a key, with their ids in
each chat app. In a mapping, or shared by the run config (a mapping's entries override its
persons). A chat preset's `app` says which ids it reads; with them a person is one MemOS user
(the key) across apps, `perspective` and `constants.self` may name them by key, and their
`name` is the one in front of their text in others' memories."""

from __future__ import annotations

from typing import Any

from pydantic import model_validator

from core.config.files import Strict

#: the chat apps a person's ids are given for (a chat preset's `app`)
APPS = ("slack", "telegram", "whatsapp", "discord")

#: a person's key: also their MemOS user id, so it stays a plain short name
KEY_PATTERN = r"^[A-Za-z0-9_.@-]{1,100}$"


class Person(Strict):
    """A person's display name and ids per app: Slack U..., Telegram's from_id (user5000001),
    WhatsApp's names or numbers as the export writes them, Discord's snowflake; one id or a list."""

    name: str | None = None  # in front of their text in others' memories (default: the export's)
    slack: list[str] = []
    telegram: list[str] = []
    whatsapp: list[str] = []
    discord: list[str] = []

    @model_validator(mode="before")
    @classmethod
    def _known_apps(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        unknown = [k for k in data if k not in ("name", *APPS)]
        if unknown:
            raise ValueError(f"unknown app {unknown[0]!r} (known: {', '.join(APPS)}; and name)")
        out: dict[str, Any] = dict(data)
        for app in APPS:  # one id, or a list; numbers (a snowflake written without quotes) as text
            v = out.get(app)
            if v is not None:
                out[app] = [str(x) for x in (v if isinstance(v, list) else [v])]
        return out

    def ids(self, app: str) -> list[str]:
        return list(getattr(self, app))


def check_people(people: dict[str, Person]) -> None:
    """Keys that can be user ids; no id of an app claimed by two people (ValueError naming both)."""
    import re

    for key in people:
        if not re.match(KEY_PATTERN, key):
            raise ValueError(f"person key {key!r}: letters, digits and _ . @ - only (it becomes a MemOS user id)")
        app = next((a for a in APPS if key.startswith(f"{a}-")), None)
        if app:
            raise ValueError(f"person key {key!r} starts with {app}-, the form of ids not in the map: choose another")
    for app in APPS:
        owner: dict[str, str] = {}
        for key, person in people.items():
            for pid in person.ids(app):
                if owner.setdefault(pid, key) != key:
                    raise ValueError(f"{app} id {pid!r} is claimed by two people: {owner[pid]} and {key}")


def person_of(people: dict[str, Person], app: str | None) -> dict[str, str]:
    """Each id of `app` in the map -> the key of its person."""
    if app is None:
        return {}
    return {pid: key for key, person in people.items() for pid in person.ids(app)}


def names_of(people: dict[str, Person], app: str | None) -> dict[str, str]:
    """Each id of `app` whose person has a name -> that name."""
    if app is None:
        return {}
    return {pid: p.name for p in people.values() if p.name for pid in p.ids(app)}


def with_people(data: Any, shared: dict[str, Person]) -> Any:
    """A mapping's raw data with the run config's people under its own (a mapping's entry
    replaces the shared one of the same key)."""
    if not shared or not isinstance(data, dict):
        return data
    own = data.get("people") or {}
    base = {k: p.model_dump(exclude_defaults=True) for k, p in shared.items()}
    return {**data, "people": {**base, **own} if isinstance(own, dict) else own}
