"""Heavy imports started early, on a background thread, while a command does other startup
work (Prefect's API server, listing the source). A later import of the same module waits on
Python's import lock for the rest, so nothing is imported twice."""

from __future__ import annotations

import importlib
import threading


def import_in_background(name: str, *modules: str) -> threading.Thread:
    """Import `modules` in order on a daemon thread called `name`. An import error is left
    for the code that needs the module to raise, with its own message."""

    def _import() -> None:
        try:
            for module in modules:
                importlib.import_module(module)
        except Exception:  # noqa: BLE001 - the real import reports it
            pass

    t = threading.Thread(target=_import, name=name, daemon=True)
    t.start()
    return t
