"""Orchestration: the Prefect flows and the Prefect-free runner (flows/runner/) they wrap."""

import core  # noqa: F401  (the no-telemetry defaults, before Prefect is imported)
