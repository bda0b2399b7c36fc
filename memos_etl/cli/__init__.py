"""`memos-etl`: run syncs, inspect state, run the local MemOS dev-server, and the demo.

One module per group of commands (run, mapping, operations, state, quarantine, demo), all
sharing common.py. Every command runs inside common.ErrorBoundary, the one place that turns
an error of ours (MemosEtlError) into `error: <message>` and exit code 1.
"""

from __future__ import annotations

import os

# quiet defaults for Prefect, set before it is imported (the no-telemetry ones: core/__init__.py)
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "WARNING")
# the ephemeral Prefect server needs 10-20 s on 2 busy cores, longer on first start (migrations)
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")

import typer  # noqa: E402

from memos_etl.cli import demo, mapping, operations, quarantine, run, state  # noqa: E402
from memos_etl.cli.common import ErrorBoundary  # noqa: E402

# Commands import what they use when they run: `--help`, `status`, `presets`, `quarantine`,
# `reset` and `search` never import Great Expectations or Prefect (seconds of CPU each), nor
# pandas; plain help text (no rich) keeps `--help` to the interpreter's start-up and typer.
app = typer.Typer(
    cls=ErrorBoundary,
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    help="Load chat history into MemOS, exactly once. See README.md and docs/.",
)
# in the order `memos-etl --help` lists them; a command's name is its function's, `_` as `-`
for command in (
    run.sync,
    run.plan,
    mapping.preview,
    mapping.redact_check,
    mapping.presets,
    mapping.detect,
    run.backfill,
    operations.replay,
    state.reset,
    operations.rollback,
    operations.reconcile,
    operations.erase,
    operations.verify,
    state.status,
    mapping.expectations,
    state.search,
    demo.dev_server,
    demo.demo,
):
    app.command()(command)
app.command("forget", hidden=True)(operations.forget)  # the old name of erase
app.add_typer(quarantine.app, name="quarantine")
