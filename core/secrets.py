"""Secrets from Prefect Secret blocks: the one place the project reads them (target URL and API
key, S3 credentials, the redaction hash key). Prefect is imported only when a block is named."""

from __future__ import annotations

from typing import Any


def secret_block(name: str) -> Any:
    """The value of a Prefect Secret block (a string, or the JSON object it holds); ValueError
    naming the block when it cannot be loaded."""
    from prefect.blocks.system import Secret

    try:
        return Secret.load(name).get()  # type: ignore[union-attr]  # sync outside an event loop: the block, not a coroutine
    except ValueError as exc:
        raise ValueError(f"cannot load Prefect Secret block {name!r}: {exc}") from None
