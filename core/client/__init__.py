"""MemOS targets: one `Target` protocol, two adapters over one HTTP edge.

* http.py         the edge: session, POST, failures and envelopes translated once
* cloud.py        MemOS Cloud (`/add/message`)
* self_hosted.py  the open-source server (`/product/add`)

Steps take a `Target` and never ask which adapter it is.
"""

from __future__ import annotations

import os
from typing import Protocol

from core.client.cloud import CloudTarget
from core.client.http import (
    FATAL_CODES,
    SERVER_CODES,
    TERMINAL_CODES,
    THROTTLE_CODES,
    Reply,
    body_json,
    parse_retry_after,
)
from core.client.self_hosted import SelfHostedTarget
from core.config import TargetConfig
from core.secrets import secret_block

__all__ = [
    "FATAL_CODES",
    "SERVER_CODES",
    "TERMINAL_CODES",
    "THROTTLE_CODES",
    "CloudTarget",
    "Reply",
    "SelfHostedTarget",
    "Target",
    "body_json",
    "make_target",
    "parse_retry_after",
    "resolve_api_key",
]


class Target(Protocol):
    """What a MemOS target offers the steps. Every method raises only core/errors.py's
    TargetError family (CannotTell where the target has no way to answer)."""

    kind: str
    route: str  # the add route, as the outbox of a dry run records it
    cfg: TargetConfig

    def add(self, batch) -> Reply: ...
    def add_payload(self, batch) -> str: ...
    def add_body(self, batch) -> dict: ...
    def get_messages(self, user_id: str, conversation_id: str, limit: int = 50) -> list[dict]: ...
    def request_landed(self, user_id: str, session_id: str, batch_key: str) -> tuple[bool | None, list[dict]]:
        """Did an unanswered add land, read from the memories it made (CannotTell: no way to)."""
        ...

    def task_status(self, task_id: str) -> str: ...
    def find_memories(self, user_id: str, where: dict, page_size: int = 50) -> list[str]: ...
    def delete_memories(self, memory_ids: list[str]) -> int: ...
    def delete_user_memories(self, user_id: str) -> int | None:
        """Delete every memory of a user; how many, or None when the target does not say."""
        ...

    def delete_conversation_memories(self, user_id: str, conversation_id: str, batch_keys: list[str]) -> int: ...
    def request_memories(self, user_id: str, batch_keys: list[str]) -> dict[str, list[dict]]:
        """The memories each request (batch key) of a user made, as `memory` dicts (verify);
        CannotTell when the target cannot list them all."""
        ...

    def user_memories(self, user_id: str) -> list[dict]:
        """Every memory of a user, as `memory` dicts (verify's erasure check)."""
        ...

    def search(self, user_id: str, query: str, limit: int = 6) -> list[dict]: ...
    def close(self) -> None: ...


def resolve_api_key(cfg: TargetConfig) -> str | None:
    """The key from the Prefect Secret block if one is named, else from the environment."""
    if cfg.api_key_block:
        return secret_block(cfg.api_key_block)
    return os.environ.get(cfg.api_key_env) or None


def make_target(cfg: TargetConfig, api_key: str | None = None, pool_size: int = 8) -> Target:
    """The adapter `cfg.kind` names; the API key from `cfg` (block or environment) unless given."""
    cls: type[CloudTarget] | type[SelfHostedTarget] = CloudTarget if cfg.kind == "cloud" else SelfHostedTarget
    return cls(cfg, api_key if api_key is not None else resolve_api_key(cfg), pool_size)
