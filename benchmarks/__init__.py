"""Benchmarks: see README.md, "Benchmarks", and benchmarks/run.py."""

import core  # noqa: F401  (the process defaults the product runs with: Arrow's pool, no telemetry)
