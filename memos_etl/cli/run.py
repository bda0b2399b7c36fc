"""Running a source into MemOS: `sync`, `plan` (a dry run), `backfill` (a range in parts)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from memos_etl.cli.common import (
    ConfigOpt,
    LedgerOpt,
    NewTargetOpt,
    SourceArg,
    TargetOpt,
    WorkOpt,
    console_without_expected_tracebacks,
    load_config,
    print_report,
    require_prefect,
)


def sync(
    source: str = SourceArg,
    config: Optional[Path] = ConfigOpt,
    target_url: Optional[str] = TargetOpt,
    ledger: Optional[str] = LedgerOpt,
    work_dir: Optional[Path] = WorkOpt,
    resend_in_doubt: bool = typer.Option(
        False, help="resend requests that got no answer and that the target cannot confirm (may duplicate them)"
    ),
    no_prefect: bool = typer.Option(
        False, "--no-prefect", help="run the same steps on a plain thread pool, without a Prefect API server"
    ),
    since: Optional[str] = typer.Option(
        None, help="backfill slice start (SQL cursor or partition value), inclusive; does not move the nightly cursor"
    ),
    until: Optional[str] = typer.Option(None, help="backfill slice end, exclusive"),
    partition: list[str] = typer.Option([], help="backfill these Hive partition values (repeatable)"),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="send nothing: write the requests that would be sent to the outbox file"
    ),
    outbox: Optional[Path] = typer.Option(
        None, help="dry-run outbox (JSONL); default <work_dir>/outbox/<source>.jsonl"
    ),
    new_target: bool = NewTargetOpt,
    json_out: bool = typer.Option(False, "--json", help="print the report as JSON"),
):
    """Sync one source into MemOS (a Prefect flow run unless --no-prefect).

    Exit codes: 0 completed (or planned, with --dry-run); 1 error (nothing lost, re-run to
    resume); 2 incomplete (messages pending or in doubt); 3 interrupted by SIGTERM/Ctrl-C
    (drained, re-run to resume).
    """
    from core import progress, shutdown
    from tasks.validate import preload

    preload()  # Great Expectations imports while the source is listed and Prefect starts
    shutdown.install()
    cfg = load_config(config, target_url, ledger, work_dir)
    cfg.target.new_target = cfg.target.new_target or new_target
    from flows.runner import preflight

    m = cfg.mapping(source)
    if m.redact is not None:
        from tasks.redact import preload as preload_presidio

        preload_presidio()
    preflight(m)  # config and column errors before Prefect starts
    box = None
    if dry_run or outbox:
        box = str(outbox or Path(cfg.state.work_dir) / "outbox" / f"{m.source.name}.jsonl")
    with progress.TerminalBars(f"{m.source.name} "):
        if no_prefect:
            from flows.runner import run
            from tasks.cursor import parse_bound
            from tasks.extract import Slice

            part = Slice(since=parse_bound(since), until=parse_bound(until), partitions=tuple(partition))
            report = run(
                m,
                cfg,
                resend_in_doubt=resend_in_doubt,
                part=part,
                outbox=Path(box) if box else None,
                progress=progress.report,
            ).to_dict()
        else:
            require_prefect("sync")
            from flows.sync import run_sync
            from memos_etl.cli.prefect_api import api_server

            console_without_expected_tracebacks()
            with api_server():
                report = run_sync(source, cfg, resend_in_doubt, since, until, list(partition), box)
    print_report(report, json_out)
    code = {"completed": 0, "planned": 0, "incomplete": 2, "interrupted": 3}.get(report["status"], 1)
    if code:
        raise typer.Exit(code)


def plan(
    source: str = SourceArg,
    config: Optional[Path] = ConfigOpt,
    target_url: Optional[str] = TargetOpt,
    ledger: Optional[str] = LedgerOpt,
    work_dir: Optional[Path] = WorkOpt,
    outbox: Optional[Path] = typer.Option(None, help="default <work_dir>/outbox/<source>.jsonl"),
    since: Optional[str] = typer.Option(None),
    until: Optional[str] = typer.Option(None),
    json_out: bool = typer.Option(False, "--json"),
):
    """What a sync would send now, written to an outbox file; nothing is sent (no Prefect server needed)."""
    from tasks.validate import preload

    preload()
    from core import progress
    from flows.runner import run
    from tasks.cursor import parse_bound
    from tasks.extract import Slice

    cfg = load_config(config, target_url, ledger, work_dir)
    m = cfg.mapping(source)
    box = outbox or Path(cfg.state.work_dir) / "outbox" / f"{m.source.name}.jsonl"
    with progress.TerminalBars(f"{m.source.name} "):
        report = run(
            m,
            cfg,
            part=Slice(since=parse_bound(since), until=parse_bound(until)),
            outbox=box,
            progress=progress.report,
        ).to_dict()
    print_report(report, json_out)


def backfill(
    source: str = SourceArg,
    since: Optional[str] = typer.Option(None),
    until: Optional[str] = typer.Option(None),
    by: str = typer.Option(
        "auto", help="cursor | partition | file | hash (auto: cursor for SQL, partition for Hive layouts, else file)"
    ),
    every: Optional[str] = typer.Option(
        None, help="part size: 1d/12h (datetime cursor), a number (numeric cursor), or values/files per part"
    ),
    buckets: int = typer.Option(16, help="--by hash: number of conversation hash buckets"),
    fan_out: str = typer.Option(
        "local",
        help="local (task runs here) | deployment (flow runs on the work pool via the backfill-part deployment)",
    ),
    parallel: int = typer.Option(2, help="--fan-out local: parts at once"),
    deployment: str = typer.Option("memos-etl-backfill-part/backfill-part"),
    no_prefect: bool = typer.Option(
        False,
        "--no-prefect",
        help="--fan-out local on plain threads, without a Prefect API server (runs where Prefect is not installed)",
    ),
    config: Optional[Path] = ConfigOpt,
    target_url: Optional[str] = TargetOpt,
    ledger: Optional[str] = LedgerOpt,
    work_dir: Optional[Path] = WorkOpt,
    new_target: bool = NewTargetOpt,
    json_out: bool = typer.Option(False, "--json"),
):
    """Backfill a range of a source in partitions; run it again to resume (done parts are skipped).
    Never moves the nightly cursor. Exit 0 when every part is done, 2 otherwise."""
    from core import shutdown
    from tasks.validate import preload

    if no_prefect and fan_out != "local":
        raise typer.BadParameter(
            f"{fan_out!r} runs the parts as Prefect flow runs on a work pool, which needs Prefect; "
            "with --no-prefect the parts run here, on threads (--fan-out local, --parallel N)",
            param_hint="--fan-out",
        )
    preload()
    shutdown.install()
    cfg = load_config(config, target_url, ledger, work_dir)
    cfg.target.new_target = cfg.target.new_target or new_target
    m = cfg.mapping(source)
    from flows.runner import preflight

    preflight(m)
    overrides = cfg.model_dump(exclude={"sources"})
    if no_prefect:  # the runner's backfill alone (flows/runner/backfill.py): no Prefect imported
        from flows.runner.backfill import backfill as run_backfill

        result, _ = run_backfill(
            m, cfg, since=since, until=until, by=by, every=every, buckets=buckets, parallel=parallel
        )
    else:
        require_prefect("backfill")
        from flows.backfill import backfill_flow
        from flows.heartbeat import in_process
        from memos_etl.cli.prefect_api import api_server

        console_without_expected_tracebacks()
        with api_server(), in_process():
            result = backfill_flow(
                source,
                since,
                until,
                by,
                every,
                buckets,
                fan_out,
                parallel,
                str(cfg.path_) if cfg.path_ else None,
                overrides,
                deployment,
            )
    if json_out:
        typer.echo(json.dumps(result, indent=2, default=str))
    else:
        c = result["counts"]
        typer.echo(
            f"backfill {result['backfill_id']} of {result['source']}: {result['done']}/{result['parts']} "
            f"parts done ({result['ran']} run now, the others done before); over all its runs: "
            f"read {c['read']}, delivered {c['delivered']}, already delivered "
            f"{c['already_delivered']}, quarantined {c['quarantined']}, pending {c['pending']}"
        )
        for part, st in result["not_done"].items():
            typer.echo(f"  not done: {part} ({st}); run the same command again to resume")
    if result["status"] != "completed":
        raise typer.Exit(2)
