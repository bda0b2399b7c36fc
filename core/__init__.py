"""The core every floor stands on: config, the MemOS client, the ledger, errors, limits.

Nothing here imports tasks/, flows/ or the shell (memos_etl/); `lint-imports` checks it.
"""

import os

# Prefect's local API server and Great Expectations report usage to their vendors by default;
# this project only talks to loopback and the configured MemOS target. Set before either is
# imported: every floor that imports them imports this package first.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

# Arrow allocates from glibc's malloc, not its bundled mimalloc, which keeps the pages a loader
# thread freed cached in that thread's heap (core/memory.py has the measurements). Arrow reads
# this once, when pyarrow is first imported: hence here, below every floor that imports it.
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
