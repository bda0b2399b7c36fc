"""Secrets from Prefect Secret blocks: the one place the project reads them (target URL and API
key, S3 credentials, the redaction hash key). Prefect is imported only when a block is named."""

from __future__ import annotations

from typing import Any


def secret_block(name: str) -> Any:
    """The value of a Prefect Secret block (a string, or the JSON object it holds); ValueError
    naming the block when it cannot be loaded."""
    try:
        from prefect.blocks.system import Secret
    except ImportError:  # the Airflow environment (docs/airflow.md): its secrets come from Connections
        raise ValueError(
            f"Prefect Secret block {name!r} is named in the config, but Prefect is not installed in this "
            "environment: give the secret another way (an environment variable, an Airflow Connection)"
        ) from None
    try:
        return Secret.load(name).get()  # type: ignore[union-attr]  # sync outside an event loop: the block, not a coroutine
    except ValueError as exc:
        raise ValueError(f"cannot load Prefect Secret block {name!r}: {exc}") from None
