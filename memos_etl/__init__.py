"""memos-etl's shell: the CLI, the dev-server and the demo (see README.md)."""

import core  # noqa: F401  (the no-telemetry defaults, before anything imports Prefect)
