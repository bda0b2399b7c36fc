"""memos-etl: move chat history into MemOS (see README.md)."""

import os

# Prefect's local API server and Great Expectations report usage to their vendors by default;
# this project only talks to loopback and the configured MemOS target. Set before either is
# imported (a flow run started by a worker imports this package first).
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
