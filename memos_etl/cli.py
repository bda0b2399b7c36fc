"""`memos-etl`: run syncs, inspect state, run the local MemOS dev-server, and the demo."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Optional

# quiet defaults for Prefect, set before it is imported (the no-telemetry ones: core/__init__.py)
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "WARNING")
# the ephemeral Prefect server needs 10-20 s on 2 busy cores, longer on first start (migrations)
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")

import typer  # noqa: E402

from core.errors import MemosEtlError  # noqa: E402

if TYPE_CHECKING:
    from core.config import RunConfig

# Commands import what they use when they run: `--help`, `status`, `presets`, `quarantine`,
# `reset` and `search` never import Great Expectations or Prefect (seconds of CPU each), nor
# pandas; plain help text (no rich) keeps `--help` to the interpreter's start-up and typer.
app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    help="Load chat history into MemOS, exactly once. See README.md and docs/.",
)
ROOT = Path(__file__).resolve().parent.parent
SAMPLE_MAPPING = ROOT / "schemas" / "mappings" / "sample.yaml"


def _config(
    config: Optional[Path], target_url: Optional[str], ledger: Optional[str], work_dir: Optional[Path]
) -> RunConfig:
    from core.config import load_run_config

    try:
        cfg = load_run_config(config)
    except MemosEtlError as exc:
        _fail(exc)
    if target_url:
        cfg.target.base_url = target_url
    if ledger:
        cfg.state.ledger_url = ledger
    if work_dir:
        cfg.state.work_dir = str(work_dir)
    return cfg


class _ExpectedErrors:
    """Logging filter: drops records that carry one of our own errors (MemosEtlError)."""

    def filter(self, record) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, MemosEtlError)


_EXPECTED = _ExpectedErrors()


def _console_without_expected_tracebacks() -> None:
    """Prefect's engine logs a failing flow run's exception with its traceback. For errors of
    ours (a dead target, a failed ledger, a bad config) the CLI prints the one-line message
    itself, so the terminal is spared the traceback; the flow run's logs in the Prefect API
    keep it (the API handler sits on Prefect's run loggers, not on the console's)."""
    import logging

    for name in ("", "prefect"):
        for handler in logging.getLogger(name).handlers:
            if "Console" in type(handler).__name__ and _EXPECTED not in handler.filters:
                handler.addFilter(_EXPECTED)


def _fail(exc: Exception) -> None:
    report = getattr(exc, "report", None)
    if report is not None:
        report.error = None  # printed once, below
        typer.echo(report.text())
    typer.secho(f"error: {exc}", fg="red", err=True)
    raise typer.Exit(1)


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


def _source(cfg: RunConfig, source: str):
    return cfg.mapping(source)


@app.command()
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
    try:
        cfg = _config(config, target_url, ledger, work_dir)
        cfg.target.new_target = cfg.target.new_target or new_target
        from flows.runner import preflight

        m = _source(cfg, source)
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
                from flows.sync import run_sync

                _console_without_expected_tracebacks()
                report = run_sync(source, cfg, resend_in_doubt, since, until, list(partition), box)
    except MemosEtlError as exc:
        _fail(exc)
    _print_report(report, json_out)
    code = {"completed": 0, "planned": 0, "incomplete": 2, "interrupted": 3}.get(report["status"], 1)
    if code:
        raise typer.Exit(code)


@app.command()
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

    try:
        cfg = _config(config, target_url, ledger, work_dir)
        m = _source(cfg, source)
        box = outbox or Path(cfg.state.work_dir) / "outbox" / f"{m.source.name}.jsonl"
        with progress.TerminalBars(f"{m.source.name} "):
            report = run(
                m,
                cfg,
                part=Slice(since=parse_bound(since), until=parse_bound(until)),
                outbox=box,
                progress=progress.report,
            ).to_dict()
    except MemosEtlError as exc:
        _fail(exc)
    _print_report(report, json_out)


@app.command()
def preview(
    source: Optional[str] = typer.Argument(None, help="a configured source or a mapping file (or use --preset)"),
    preset: Optional[str] = typer.Option(None, help="a preset from schemas/presets (see `memos-etl presets`)"),
    input_path: Optional[Path] = typer.Option(
        None, "--source", help="with --preset: the input file, directory or glob"
    ),
    requests: int = typer.Option(3, "--requests", "-n", help="requests to show"),
    config: Optional[Path] = ConfigOpt,
    json_out: bool = typer.Option(False, "--json"),
):
    """Show the first MemOS requests a mapping or preset makes of an input; nothing is sent and no
    state is kept (a dry run in a temporary directory). For iterating on a mapping."""
    import tempfile

    from core.config import preset_mapping
    from flows.runner import run, serial_map

    if (preset is None) == (source is None) or (preset is not None and input_path is None):
        _fail(MemosEtlError("give a SOURCE (configured name or mapping file), or --preset NAME --source PATH"))
    try:
        cfg = _config(config, None, None, None)
        m = preset_mapping(preset, input_path) if preset else _source(cfg, source)
        with tempfile.TemporaryDirectory(prefix="memos-etl-preview-") as tmp:
            cfg.state.work_dir, cfg.state.ledger_url, cfg.state.data_docs = tmp, None, False
            box = Path(tmp) / "outbox.jsonl"
            # one file and one bucket at a time: the same input previews the same requests every time
            report = run(m, cfg, outbox=box, stage_map=serial_map, load_map=serial_map)
            with open(box, encoding="utf-8") as fh:
                shown = [json.loads(line) for _, line in zip(range(requests), fh)]
    except MemosEtlError as exc:
        _fail(exc)
    c = report.counts
    summary = {
        "source": m.source.name,
        "read": c.read,
        "requests": c.requests or None,
        "messages": c.planned,
        "quarantined": c.quarantined,
        "empty_skipped": c.empty_skipped,
        "reasons": dict(c.reasons),
        "redacted": c.redacted,
        "redaction_dropped": c.redaction_dropped,
        "redaction": c.redaction,
        "notes": report.notes,
    }
    if json_out:
        typer.echo(json.dumps({"requests": shown, "summary": summary}, indent=2, ensure_ascii=False))
        return
    for i, r in enumerate(shown, 1):
        typer.echo(f"--- request {i}: POST {r['route']}")
        typer.echo(json.dumps(r["body"], indent=2, ensure_ascii=False))
    typer.echo(
        f"--- {m.source.name}: {c.read} messages read, {c.planned} in requests, {c.quarantined} quarantined"
        + (f", {c.empty_skipped} empty skipped" if c.empty_skipped else "")
    )
    if report.redacting:
        typer.echo(
            f"    personal data: {c.redacted} messages redacted, {c.redaction_dropped} dropped: "
            + (", ".join(f"{e} {v['found']}" for e, v in sorted(c.redaction.items())) or "none found")
        )
    for reason, n in c.reasons.most_common(10):
        typer.echo(f"    {n:>6}  {reason}")
    for note in report.notes:
        typer.echo(f"    note: {note}")


@app.command("redact-check")
def redact_check(
    source: str = SourceArg,
    sample: int = typer.Option(10_000, "--sample", help="messages to check"),
    examples: int = typer.Option(20, "--examples", help="findings to show with their values (0: none)"),
    config: Optional[Path] = ConfigOpt,
    json_out: bool = typer.Option(False, "--json"),
):
    """What the mapping's `redact:` section would remove from the first messages of its source,
    with counts per entity and examples; nothing is sent, no state is kept."""
    import tempfile

    import pyarrow as pa

    from core.report import Counts
    from tasks.extract import open_source
    from tasks.redact import redactor_for
    from tasks.stage import count_redaction, sample_messages

    try:
        cfg = _config(config, None, None, None)
        m = _source(cfg, source)
        if m.redact is None:
            raise MemosEtlError(f"source {m.source.name!r} has no redact section: nothing would be redacted")
        redactor = redactor_for(m)
        c = Counts()
        shown: list[dict] = []
        with tempfile.TemporaryDirectory(prefix="memos-etl-redact-check-") as tmp:
            for mapped in sample_messages(m, open_source(m), sample, Path(tmp)):
                content = mapped.column("content").combine_chunks()
                out = redactor.redact(content)
                c.read += len(content)
                count_redaction(c, out)
                if len(shown) < examples and out.changed.any():
                    rows = pa.array(out.changed.nonzero()[0])
                    where = zip(
                        mapped.column("source_file").take(rows).to_pylist(),
                        mapped.column("source_row").take(rows).to_pylist(),
                        content.take(rows).to_pylist(),
                        out.content.take(rows).to_pylist(),
                        out.drop[out.changed].tolist(),
                    )
                    for file, row, before, after, drop in where:
                        if len(shown) < examples:
                            shown.append(
                                {
                                    "source_file": file,
                                    "source_row": row,
                                    "before": before,
                                    "after": None if drop else after,
                                }
                            )
    except MemosEtlError as exc:
        _fail(exc)
    summary = {
        "source": m.source.name,
        "messages": c.read,
        "read_by_presidio": c.redaction_candidates,
        "changed": c.redacted,
        "dropped": c.redaction_dropped,
        "entities": {e: {**v, "operator": m.redact.operator_of(e)} for e, v in sorted(c.redaction.items())},
        "checked_for": redactor.entities,
        "every_message": redactor.unfiltered,
    }
    if json_out:
        typer.echo(json.dumps({"summary": summary, "examples": shown}, indent=2, ensure_ascii=False))
        return
    typer.echo(
        f"{m.source.name}: {c.read} messages checked, {c.redaction_candidates} read by Presidio (the rest "
        f"cannot hold an entity), {c.redacted} would change, {c.redaction_dropped} would be dropped; "
        "nothing was sent"
    )
    typer.echo(f"checked for: {', '.join(redactor.entities)}")
    if summary["every_message"]:
        typer.echo(f"no pre-filter (Presidio reads every message for these): {', '.join(summary['every_message'])}")
    typer.echo(f"{'entity':<20} {'found':>7} {'messages':>9}  operator")
    for e, v in summary["entities"].items():
        typer.echo(f"{e:<20} {v['found']:>7} {v['messages']:>9}  {v['operator']}")
    if shown:
        typer.echo("examples (source values shown here only; they are what would be removed):")
        for x in shown:
            typer.echo(f"- {x['source_file']} row {x['source_row']}")
            typer.echo(f"    before: {x['before']!r}")
            typer.echo(f"    after:  {'(message dropped)' if x['after'] is None else repr(x['after'])}")


@app.command()
def presets():
    """List the bundled presets (schemas/presets) with the first line of their description."""
    from core.config import PRESETS, preset_names

    for name in preset_names():
        first = next(
            (ln[2:].strip() for ln in (PRESETS / f"{name}.yaml").read_text().splitlines() if ln.startswith("# ")), ""
        )
        typer.echo(f"{name:32} {first}")


@app.command()
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
        False, "--no-prefect", help="--fan-out local on plain threads, without a Prefect API server"
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

    preload()
    shutdown.install()
    try:
        cfg = _config(config, target_url, ledger, work_dir)
        cfg.target.new_target = cfg.target.new_target or new_target
        m = _source(cfg, source)
        from flows.runner import preflight

        preflight(m)
        overrides = cfg.model_dump(exclude={"sources"})
        if no_prefect:
            from flows.backfill import backfill as run_backfill

            result = run_backfill(
                m,
                cfg,
                source=source,
                since=since,
                until=until,
                by=by,
                every=every,
                buckets=buckets,
                parallel=parallel,
                in_flow=False,
            )
        else:
            from flows.backfill import backfill_flow
            from flows.heartbeat import in_process

            _console_without_expected_tracebacks()
            with in_process():
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
    except MemosEtlError as exc:
        _fail(exc)
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


@app.command()
def replay(
    source: str = SourceArg,
    user: list[str] = typer.Option([], help="replay this user (repeatable)"),
    conversation: list[str] = typer.Option([], help="replay this conversation id (repeatable)"),
    yes: bool = typer.Option(False, "--yes", "-y", help="do not ask for confirmation"),
    config: Optional[Path] = ConfigOpt,
    target_url: Optional[str] = TargetOpt,
    ledger: Optional[str] = LedgerOpt,
    work_dir: Optional[Path] = WorkOpt,
    json_out: bool = typer.Option(False, "--json"),
):
    """Send these users' or conversations' messages again on purpose (e.g. after a MemOS reset).
    The ledger forgets their deliveries first; MemOS will hold them twice if it still has them."""
    from core import progress
    from flows.runner.replay import replay as do_replay

    try:
        cfg = _config(config, target_url, ledger, work_dir)
        m = _source(cfg, source)
        what = ", ".join([f"user {u}" for u in user] + [f"conversation {c}" for c in conversation])
        if not yes:
            typer.confirm(
                f"re-send every message of {what or '(nothing selected)'} from {m.source.name} to "
                f"{cfg.target.ledger_name}?",
                abort=True,
            )
        with progress.TerminalBars("replay "):
            report = do_replay(m, cfg, list(user), list(conversation), progress=progress.report).to_dict()
    except MemosEtlError as exc:
        _fail(exc)
    _print_report(report, json_out)
    if report["status"] != "completed":
        raise typer.Exit(2)


@app.command()
def reset(
    source: str = SourceArg,
    yes: bool = typer.Option(False, "--yes", "-y"),
    config: Optional[Path] = ConfigOpt,
    ledger: Optional[str] = LedgerOpt,
    work_dir: Optional[Path] = WorkOpt,
):
    """Reset a source's cursor and file manifest: the next sync reads everything again (the
    ledger still drops what was delivered, so nothing is sent twice)."""
    from core.ledger import Ledger
    from tasks import cursor

    try:
        cfg = _config(config, None, ledger, work_dir)
        m = _source(cfg, source)
    except MemosEtlError as exc:
        _fail(exc)
    led = Ledger(cfg.state.ledger())
    try:
        target = cfg.target.ledger_name
        cur, _ = led.source_state(m.source.name, target)
        files = len(led.manifest(m.source.name, target))
        typer.echo(f"{m.source.name} -> {target}: cursor {cursor.decode(cur)!r}, {files} files recorded as done")
        if not yes:
            typer.confirm("reset both, so the next sync reads the whole source again?", abort=True)
        led.reset_cursor(m.source.name, target)
        typer.echo("reset: the next sync reads the whole source; delivered messages are still skipped")
    finally:
        led.close()


@app.command()
def rollback(
    run: str = typer.Argument(..., help="run id (see `memos-etl status`)"),
    yes: bool = typer.Option(False, "--yes", "-y"),
    config: Optional[Path] = ConfigOpt,
    target_url: Optional[str] = TargetOpt,
    ledger: Optional[str] = LedgerOpt,
    work_dir: Optional[Path] = WorkOpt,
):
    """Undo what one run loaded: delete its memories on the target (found by info.run_id) and
    forget its requests, files and cursor move, so a later sync loads that data again."""
    from core.ledger import Ledger
    from flows.runner import make_target
    from tasks.rollback import rollback as do_rollback

    cfg = _config(config, target_url, ledger, work_dir)
    led = Ledger(cfg.state.ledger())
    rec = led.run_record(run)
    led.close()
    if rec is None:
        typer.secho(f"error: no run {run} in {cfg.state.ledger()}", fg="red", err=True)
        raise typer.Exit(1)
    delivered = rec["report"].get("counts", {}).get("delivered", "?")
    if not yes:
        typer.confirm(
            f"delete the memories of run {run} ({rec['flow']} of {rec['source']}, {delivered} messages "
            f"delivered) from {rec['target']}?",
            abort=True,
        )
    t = make_target(cfg)
    try:
        out = do_rollback(cfg, run, t)
    except MemosEtlError as exc:
        _fail(exc)
    finally:
        t.close()
    typer.echo(
        f"rolled back {out['run_id']}: {out['memories_deleted']} memories deleted from {out['users']} users, "
        f"{out['messages_forgotten']} messages in {out['requests']} requests forgotten by the ledger, "
        f"{out['files_forgotten']} files to read again, {out['cursor']}"
    )


@app.command()
def reconcile(
    source: str = SourceArg,
    config: Optional[Path] = ConfigOpt,
    target_url: Optional[str] = TargetOpt,
    ledger: Optional[str] = LedgerOpt,
    work_dir: Optional[Path] = WorkOpt,
    json_out: bool = typer.Option(False, "--json"),
):
    """Full key scan: read every key the source holds now (a whole SQL table or file set, cursor
    and manifest ignored; nothing validated or sent) and report the delivered messages it no
    longer holds: hard deletes a nightly sync cannot see."""
    from tasks.keyscan import scan

    cfg = _config(config, target_url, ledger, work_dir)
    try:
        out = scan(_source(cfg, source), cfg)
    except MemosEtlError as exc:
        _fail(exc)
    if json_out:
        typer.echo(json.dumps(out, indent=2, default=str))
        return
    typer.echo(
        f"{out['source']} -> {out['target']}: {out['keys_read']} messages in {out['units']} units now, "
        f"{out['delivered']} delivered"
    )
    typer.echo(
        f"deleted in source  {out['deleted_in_source']} delivered messages no longer in the source "
        f"(+{out['flagged_deleted']} read flagged deleted), in {len(out['conversations'])} conversations"
    )
    for conv, kinds in sorted(out["conversations"].items(), key=lambda kv: -kv[1].get("deleted", 0))[:50]:
        typer.echo(f"  {kinds.get('deleted', 0):>6}  {conv}")
    for u in out["unreadable"]:
        typer.secho(f"unreadable (its messages not judged): {u}", fg="yellow", err=True)
    if out["units_not_judged"]:
        typer.echo(f"note: {out['units_not_judged']} units were read only in part; their messages were not judged")


@app.command()
def forget(
    user: str = typer.Option(..., "--user", help="the MemOS user_id to erase"),
    conversation: Optional[str] = typer.Option(None, "--conversation", help="erase only this conversation"),
    yes: bool = typer.Option(False, "--yes", "-y"),
    config: Optional[Path] = ConfigOpt,
    target_url: Optional[str] = typer.Option(
        None, "--target", "--target-url", help="MemOS base URL (overrides target.base_url)"
    ),
    ledger: Optional[str] = LedgerOpt,
    work_dir: Optional[Path] = WorkOpt,
):
    """Erase a user (or one conversation) for good: delete their memories on the target, keep
    them out of every later sync, backfill, replay, re-drive and reset (a tombstone), drop
    their quarantined rows and dry-run requests, and log the erasure (ids and time only).

    Exit codes: 0 erased; 1 error; 2 tombstone written but the target's memories not (all)
    deleted (run forget again)."""
    from core.client import make_target, resolve_api_key
    from core.ledger import Ledger
    from tasks.erase import forget as do_forget

    cfg = _config(config, target_url, ledger, work_dir)
    try:
        led = Ledger(cfg.state.ledger())
        try:
            batches = led.delivered_batches(
                cfg.target.ledger_name, users=[user], conversations=[conversation] if conversation else None
            )
        finally:
            led.close()
    except MemosEtlError as exc:
        _fail(exc)
    scope = f"conversation {conversation!r} of user {user!r}" if conversation else f"user {user!r}"
    convs = len({b["conversation_id"] for b in batches})
    msgs = sum(b["n_messages"] for b in batches)
    what = (
        f"every memory of {user!r} on {cfg.target.ledger_name} (MemOS deletes by user_id: also memories "
        "memos-etl did not load)"
        if not conversation
        else f"the memories its {len(batches)} recorded requests made on {cfg.target.ledger_name}"
    )
    if not yes:
        typer.confirm(
            f"erase {scope} ({msgs} messages in {convs} conversations recorded as sent): delete {what}, "
            "and keep them out of every later run?",
            abort=True,
        )
    t = make_target(cfg.target, resolve_api_key(cfg.target))  # not through the pipeline: no GX import
    try:
        out = do_forget(cfg, t, user, conversation)
    except MemosEtlError as exc:
        _fail(exc)
    finally:
        t.close()
    if not out["complete"]:
        typer.secho(
            f"forget {scope}: tombstone written (erasure {out['erasure_id']}), but {out['problem']}",
            fg="yellow",
            err=True,
        )
        raise typer.Exit(2)
    deleted = "all" if out["memories_deleted"] is None else out["memories_deleted"]
    typer.echo(
        f"erased {scope}: {deleted} memories deleted on {cfg.target.ledger_name}, "
        f"{out['messages_forgotten']} messages in {out['requests']} requests forgotten by the ledger, "
        f"{out['quarantine_rows_removed']} quarantined rows and {out['outbox_requests_removed']} dry-run "
        f"requests removed; no later run loads them (erasure {out['erasure_id']})"
    )


def _print_report(report: dict, as_json: bool) -> None:
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


@app.command()
def status(
    config: Optional[Path] = ConfigOpt,
    ledger: Optional[str] = LedgerOpt,
    work_dir: Optional[Path] = WorkOpt,
    json_out: bool = typer.Option(False, "--json"),
    only_erasures: bool = typer.Option(False, "--erasures", help="only the erasure log (memos-etl forget)"),
):
    """Per source and target: cursor, last run, messages delivered, pending, in doubt, quarantined;
    then the erasure log (who was erased with `forget`, where and when: ids only)."""
    from core.ledger.overview import overview
    from tasks import cursor

    cfg = _config(config, None, ledger, work_dir)
    fast = overview(cfg.state.ledger())  # plain SQL through the driver: no SQLAlchemy import
    if fast is not None:
        rows, erasures = fast
    else:
        from core.ledger import Ledger

        try:
            led = Ledger(cfg.state.ledger())
            try:
                rows = led.source_overview()
                erasures = led.erasure_log()
            finally:
                led.close()
        except MemosEtlError as exc:
            _fail(exc)
    if json_out:  # a list of sources, as before erasures existed; --erasures --json gives the log
        typer.echo(json.dumps(erasures if only_erasures else rows, indent=2, default=str))
        return
    if only_erasures:
        rows = []
    if not rows and not only_erasures:
        typer.echo("ledger is empty: nothing synced yet")
    for r in rows:
        last = r.get("last_run") or {}
        rep = json.loads(last["report"]) if last.get("report") else {}
        c = rep.get("counts", {})
        try:
            quarantined = 0
            if any((Path(cfg.state.work_dir) / "quarantine" / f"source={r['source']}").rglob("*.parquet")):
                from tasks.quarantine import read_quarantine, resolved, row_key

                q = read_quarantine(cfg.state.work_dir, r["source"], None).select(
                    ["source_file", "source_row", "record"]
                )
                rows_q = {row_key(x) for x in q.to_pylist()}
                quarantined = len(rows_q - resolved(cfg.state.work_dir, r["source"]))
        except Exception as exc:  # unreadable quarantine files: say so rather than fail the status
            quarantined = f"? ({exc})"
        typer.echo(f"{r['source']} -> {r['target']}")
        if r.get("cursor") is not None or not (r.get("files_done") or r.get("files_failed")):
            typer.echo(f"  cursor      {cursor.decode(r.get('cursor'))!r}")
        else:
            typer.echo(f"  files       {r.get('files_done', 0)} done, {r.get('files_failed', 0)} unreadable")
        if last:
            typer.echo(
                f"  last run    {last['run_id']} {last['flow']} {last['status']} (started "
                f"{str(last['started_at'])[:19]}; read {c.get('read', '?')}, delivered {c.get('delivered', '?')})"
            )
        typer.echo(f"  delivered   {r.get('delivered', 0)} messages")
        typer.echo(f"  pending     {c.get('pending', 0)} (as of the last run)")
        typer.echo(f"  in doubt    {r.get('sent', 0)} messages sent, never confirmed")
        typer.echo(f"  refused     {r.get('failed', 0)} messages refused by the target (quarantined)")
        typer.echo(f"  quarantined {quarantined} rows (memos-etl quarantine list --source {r['source']})")
    if erasures:
        typer.echo("erasures (memos-etl forget; ids only)")
        for e in erasures:
            scope = e["user_id"] + (f" / {e['conversation_id']}" if e["conversation_id"] else " (whole user)")
            done = "done" if e["status"] == "done" else "STARTED, not finished: run forget again"
            deleted = {None: "?", -1: "all"}.get(e["memories_deleted"], e["memories_deleted"])
            typer.echo(
                f"  {str(e['erased_at'])[:19]}  {scope} on {e['target']} by {e['erased_by']}: {done}"
                + (
                    f" ({deleted} memories deleted, {e['messages_forgotten']} messages forgotten)"
                    if e["status"] == "done"
                    else ""
                )
            )


quarantine_app = typer.Typer(no_args_is_help=True, help="Inspect, export and re-drive quarantined rows.")
app.add_typer(quarantine_app, name="quarantine")


def pa_text_times(t):
    import pyarrow as pa

    return pa.Table.from_arrays(
        [c.cast(pa.string()) if pa.types.is_timestamp(c.type) else c for c in t.columns], names=t.column_names
    )


def _quarantined(work_dir, config, source, run):
    from tasks.quarantine import read_quarantine

    cfg = _config(config, None, None, work_dir)
    return read_quarantine(cfg.state.work_dir, source, run)


@quarantine_app.command("list")
def quarantine_list(
    source: Optional[str] = typer.Option(None),
    run: Optional[str] = typer.Option(None),
    work_dir: Optional[Path] = WorkOpt,
    config: Optional[Path] = ConfigOpt,
    limit: int = typer.Option(20),
):
    """Quarantined rows with their reasons, newest runs last."""
    t = _quarantined(work_dir, config, source, run)
    typer.echo(f"{t.num_rows} quarantined rows")
    for row in t.slice(0, limit).select(["run_id", "stage", "source_file", "source_row", "reasons"]).to_pylist():
        typer.echo(
            f"  {row['run_id']} [{row['stage']}] {row['source_file']}:{row['source_row']}  {'; '.join(row['reasons'])}"
        )


@quarantine_app.command("show")
def quarantine_show(
    source_file: str,
    source_row: int,
    source: Optional[str] = typer.Option(None),
    work_dir: Optional[Path] = WorkOpt,
    config: Optional[Path] = ConfigOpt,
):
    """Everything kept about one quarantined row: reasons and the raw record."""
    t = _quarantined(work_dir, config, source, None)
    # times as ISO text: pyarrow turns tz-aware timestamps into datetimes through pandas
    t = pa_text_times(t)
    hits = [r for r in t.to_pylist() if r["source_file"] == source_file and r["source_row"] == source_row]
    if not hits:
        typer.echo(f"no quarantined row {source_file}:{source_row}")
        raise typer.Exit(1)
    for r in hits:
        typer.echo(json.dumps({**r, "record": json.loads(r["record"])}, indent=2, default=str, ensure_ascii=False))


@quarantine_app.command("export")
def quarantine_export(
    out: Path,
    source: Optional[str] = typer.Option(None),
    run: Optional[str] = typer.Option(None),
    work_dir: Optional[Path] = WorkOpt,
    config: Optional[Path] = ConfigOpt,
):
    """Write quarantined rows to OUT: .parquet, .csv or .jsonl (by its suffix)."""
    import pyarrow.parquet as pq

    t = _quarantined(work_dir, config, source, run)
    if out.suffix == ".parquet":
        pq.write_table(t, out)
    elif out.suffix == ".csv":
        import csv

        # the standard csv writer: building Arrow arrays from Python values imports pandas
        with open(out, "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=t.column_names)
            w.writeheader()
            for r in pa_text_times(t).to_pylist():
                w.writerow({**r, "reasons": "; ".join(r["reasons"] or [])})
    elif out.suffix == ".jsonl":
        with open(out, "w") as fh:
            for r in pa_text_times(t).to_pylist():
                fh.write(json.dumps({**r, "record": json.loads(r["record"])}, default=str, ensure_ascii=False) + "\n")
    else:
        typer.secho("error: OUT must end in .parquet, .csv or .jsonl", fg="red", err=True)
        raise typer.Exit(1)
    typer.echo(f"{t.num_rows} rows -> {out}")


@quarantine_app.command("redrive")
def quarantine_redrive(
    source: str = SourceArg,
    config: Optional[Path] = ConfigOpt,
    target_url: Optional[str] = TargetOpt,
    ledger: Optional[str] = LedgerOpt,
    work_dir: Optional[Path] = WorkOpt,
):
    """Re-validate a source's quarantined rows with the (fixed) mapping and load those that pass, once."""
    from flows.runner import redrive

    try:
        cfg = _config(config, target_url, ledger, work_dir)
        report = redrive(_source(cfg, source), cfg).to_dict()
    except MemosEtlError as exc:
        _fail(exc)
    _print_report(report, False)


@app.command()
def expectations(mapping: Path, out: Optional[Path] = typer.Option(None, help="write the suite here (JSON)")):
    """The Great Expectations suite a mapping validates with: canonical checks plus its `checks`."""
    from core.config import load_mapping
    from tasks.validate import Validator

    suite = Validator(load_mapping(mapping), _config(None, None, None, None).load).suite_json()
    text = json.dumps(suite, indent=2, default=str, sort_keys=True)
    if out:
        out.write_text(text + "\n")
        typer.echo(f"{len(suite.get('expectations', []))} expectations -> {out}")
    else:
        typer.echo(text)


@app.command()
def search(
    user_id: str,
    query: str,
    target_url: Optional[str] = TargetOpt,
    config: Optional[Path] = ConfigOpt,
    limit: int = typer.Option(5),
):
    """Search a user's memories on the target."""
    from core.client import make_target, resolve_api_key

    cfg = _config(config, target_url, None, None)
    t = make_target(cfg.target, resolve_api_key(cfg.target))  # not through the pipeline: no GX import
    try:
        for m in t.search(user_id, query, limit):
            typer.echo(f"- {m.get('memory_value')}")
    except MemosEtlError as exc:
        _fail(exc)
    finally:
        t.close()


@app.command("dev-server")
def dev_server(
    port: int = typer.Option(8765),
    host: str = typer.Option("127.0.0.1"),
    db: str = typer.Option(".memos-etl/devserver.db", help="SQLite file (':memory:' for none)"),
    api_key: Optional[str] = typer.Option(None, help="require this key (Authorization: Token ...)"),
    latency_ms: float = typer.Option(0.0),
    rps: float = typer.Option(0.0),
    tokens_per_minute: int = typer.Option(0),
    error_rate: float = typer.Option(0.0),
    commit_then_fail_rate: float = typer.Option(0.0),
    drop_rate: float = typer.Option(0.0),
    rate_limit_style: str = typer.Option("http429", help="http429 | envelope200"),
    seed: Optional[int] = typer.Option(None, help="seed for random faults (replayable)"),
    faults: Optional[str] = typer.Option(None, help="more faults as JSON, see memos_etl/devserver.py"),
):
    """Run the local MemOS-compatible server (cloud and self-hosted routes, fault injection)."""
    from memos_etl.devserver import serve

    if db != ":memory:":
        Path(db).parent.mkdir(parents=True, exist_ok=True)
    extra = json.loads(faults) if faults else {}
    serve(
        host,
        port,
        db,
        api_key=api_key,
        latency_ms=latency_ms,
        rps=rps,
        tokens_per_minute=tokens_per_minute,
        error_rate=error_rate,
        commit_then_fail_rate=commit_then_fail_rate,
        drop_rate=drop_rate,
        rate_limit_style=rate_limit_style,
        seed=seed,
        **extra,
    )


@app.command()
def demo(work_dir: Path = typer.Option(Path(".memos-etl"), help="state directory for the demo")):
    """Sync the bundled sample into a local dev-server, print the report and a search."""
    from memos_etl.devserver import DevServer
    from tasks.validate import preload

    preload()  # Great Expectations imports while the dev-server and Prefect start
    work_dir.mkdir(parents=True, exist_ok=True)
    server = DevServer(db=str(work_dir / "devserver.db")).start()
    try:
        cfg = _config(None, server.url, None, work_dir)
        cfg.target.name = "demo-dev-server"  # the ledger identity survives the port changing
        cfg.state.data_docs = True
        typer.echo(f"dev-server on {server.url}; syncing {SAMPLE_MAPPING.relative_to(ROOT)} ...")
        from flows.sync import run_sync

        _console_without_expected_tracebacks()
        try:
            report = run_sync(str(SAMPLE_MAPPING), cfg)
        except MemosEtlError as exc:
            _fail(exc)
        _print_report(report, False)
        typer.echo("")
        user, query = "ana-00", "train weekdays run"
        typer.echo(f"search {user!r} for {query!r}:")
        from flows.runner import make_target

        t = make_target(cfg)
        for m in t.search(user, query, 3):
            typer.echo(f"- [{m.get('conversation_id')}] {m.get('memory_value')}")
        t.close()
        typer.echo(
            f"\nstate in {work_dir}/ (ledger.db, quarantine/, data-docs/); Prefect artifacts of the "
            "flow run: sync-sample-chats (markdown), sync-sample-chats-table, sync-sample-chats-progress. "
            "Run again: 0 add requests."
        )
    finally:
        server.stop()


def main() -> None:  # pragma: no cover
    try:
        app()
    except MemosEtlError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(1)


if __name__ == "__main__":  # python -m memos_etl.cli (tests drive it as a real process)
    main()
