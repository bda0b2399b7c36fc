"""A memory as verify reads it, the same dict whichever target listed it."""

from __future__ import annotations


def memory(
    id: object, text: object, conversation_id: object = None, batch_key: object = None, in_flight: bool = False
) -> dict:
    """One memory as verify reads it, whichever target listed it: its id, its text, the
    conversation and request (batch key) it came from, and whether extraction still works on it."""
    return {
        "id": str(id),
        "text": str(text or ""),
        "conversation_id": None if conversation_id is None else str(conversation_id),
        "batch_key": None if batch_key is None else str(batch_key),
        "in_flight": bool(in_flight),
    }
