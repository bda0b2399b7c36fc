"""Prefect flows of memos-etl; importing them sets the no-telemetry defaults (memos_etl)."""

import memos_etl  # noqa: F401
