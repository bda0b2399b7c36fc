"""What the CLI's modules share: the common options, loading the run config, printing a run
report, and the CLI's one error boundary (ErrorBoundary)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer
from typer.core import TyperGroup

from core.errors import MemosEtlError

if TYPE_CHECKING:
    from core.config import RunConfig

ConfigOpt = typer.Option(None, "--config", "-c", help="run config YAML (target, load, state)")
TargetOpt = typer.Option(None, "--target-url", help="MemOS base URL (overrides target.base_url)")
LedgerOpt = typer.Option(None, "--ledger", help="ledger SQLAlchemy URL (overrides state.ledger_url)")
WorkOpt = typer.Option(None, "--work-dir", help="state directory (overrides state.work_dir)")
NewTargetOpt = typer.Option(
    False,
    "--new-target",
    help="this source delivered to other target names and this "
    "is a different MemOS: send it everything (see target.name)",
)
SourceArg = typer.Argument(..., help="a source name from the config's `sources:`, or a mapping file path")


class ErrorBoundary(TyperGroup):
    """The CLI's one error boundary, the class of the `memos-etl` group: every command runs
    inside its invoke (the `quarantine` ones too, a group within it). An error of ours
    (MemosEtlError) ends the command with the run report it carries, if any, then
    `error: <message>` on stderr, exit code 1. Any other exception is a bug: it propagates
    with its traceback."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except MemosEtlError as exc:
            report = getattr(exc, "report", None)
            if report is not None:
                report.error = None  # printed once, below
                typer.echo(report.text())
            typer.secho(f"error: {exc}", fg="red", err=True)
            raise typer.Exit(1) from None


def load_config(
    config: Optional[Path], target_url: Optional[str], ledger: Optional[str], work_dir: Optional[Path]
) -> RunConfig:
    """The run config (`--config`, else the defaults), with the command line's overrides."""
    from core.config import load_run_config

    cfg = load_run_config(config)
    if target_url:
        cfg.target.base_url = target_url
    if ledger:
        cfg.state.ledger_url = ledger
    if work_dir:
        cfg.state.work_dir = str(work_dir)
    return cfg


def require_prefect(what: str) -> None:
    """Stop with one line when a command is about to run a Prefect flow in an environment
    without Prefect (the Airflow one, docs/airflow.md): `what` says which command, and the
    message what runs without it."""
    import importlib.util

    if importlib.util.find_spec("prefect") is None:
        raise MemosEtlError(
            f"{what} runs as a Prefect flow and Prefect is not installed in this environment (the Airflow "
            "one?): use --no-prefect where the command has it, Airflow's own DAGs and backfill "
            "(docs/airflow.md), or the default environment (`uv sync --frozen`)"
        )


class _ExpectedErrors:
    """Logging filter: drops records that carry one of our own errors (MemosEtlError)."""

    def filter(self, record) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, MemosEtlError)


_EXPECTED = _ExpectedErrors()


def console_without_expected_tracebacks() -> None:
    """Prefect's engine logs a failing flow run's exception with its traceback. For errors of
    ours (a dead target, a failed ledger, a bad config) the CLI prints the one-line message
    itself, so the terminal is spared the traceback; the flow run's logs in the Prefect API
    keep it (the API handler sits on Prefect's run loggers, not on the console's)."""
    import logging

    for name in ("", "prefect"):
        for handler in logging.getLogger(name).handlers:
            if "Console" in type(handler).__name__ and _EXPECTED not in handler.filters:
                handler.addFilter(_EXPECTED)


def print_report(report: dict, as_json: bool) -> None:
    """A run's report (RunReport.to_dict()) as text, or as JSON."""
    if as_json:
        typer.echo(json.dumps(report, indent=2, default=str))
        return
    from core.report import Counts, RunReport

    counts = dict(report["counts"])
    counts.pop("accounted", None)
    reasons = counts.pop("reasons", {})
    r = RunReport(**{**report, "counts": Counts(**counts)})
    r.counts.reasons.update(reasons)
    typer.echo(r.text())
