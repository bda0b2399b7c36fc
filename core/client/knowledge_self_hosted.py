"""The open-source MemOS server's stand-in for a knowledge base (being built: issue 40, item 5)."""

from __future__ import annotations

from core.errors import FatalTargetError


def open_self_hosted(target, docs):
    raise FatalTargetError(
        "documents go to MemOS Cloud's knowledge bases; the self-hosted server's equivalent is not built yet"
    )
