"""The kinds of source, one module each: `source.type: X` is read by `tasks/extract/X.py`,
whose `KIND` says how to open it and how the runner treats it. A new kind is its config
model (core/config/source.py: the section under `source:` and its name in `type`) and its
module here; the runner (flows/runner/checks.py, tasks/partition.py) asks the kind and never
names one.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from core.config import Mapping

Style = Literal["manifest", "cursor", "versions"]


@dataclass(frozen=True)
class Kind:
    """How the runner treats one kind of source."""

    #: the source a mapping describes, listed (files, objects, keys) or connected (a table)
    open: Callable[[Mapping], Any]
    #: how a nightly run picks its units: `manifest`, every unit whose version changed since it
    #: was processed (files, objects, Redis shards); `cursor`, the rows after the stored cursor
    #: (SQL: the source's high water moves it); `versions`, the table versions after the cursor
    #: (Delta, Iceberg: `units_after`). A function of the mapping where the source's settings
    #: choose (DynamoDB: a cursor attribute, or the manifest)
    plan: Style | Callable[[Mapping], Style] = "manifest"
    #: an unreadable unit stops the whole source (no connection, no table), instead of being
    #: one unreadable unit quarantined while the rest loads
    connected: bool = False
    #: what a unit's size counts, as bytes a message: a run sizes its conversation buckets by
    #: it (None: by the file format's bytes a row; Redis: 1, a unit's size is its elements)
    bytes_per_row: int | None = None

    def style(self, mapping: Mapping) -> Style:
        """How a run of this mapping picks its units."""
        return self.plan(mapping) if callable(self.plan) else self.plan


def kind_of(mapping: Mapping) -> Kind:
    """The kind of a mapping's source (its module imported on first use: a lakehouse
    library is loaded only by the runs that read one)."""
    name = mapping.source.type
    kind = getattr(importlib.import_module(f"{__package__}.{name}"), "KIND", None)
    if not isinstance(kind, Kind):
        raise TypeError(f"tasks/extract/{name}.py declares no KIND: every source type is one module with its Kind")
    return kind


def open_source(mapping: Mapping):
    """The source a mapping describes, opened by its kind."""
    return kind_of(mapping).open(mapping)
