"""`memos-etl`: run syncs, inspect state, run the local MemOS dev-server, and the demo."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

# quiet, local-only defaults for Prefect and GX, set before either is imported
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
# the ephemeral Prefect server needs 10-20 s on 2 busy cores, longer on first start (migrations)
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")

import typer  # noqa: E402

from memos_etl.config import RunConfig, load_mapping, load_run_config  # noqa: E402
from memos_etl.errors import MemosEtlError  # noqa: E402

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Load chat history into MemOS, exactly once. See README.md.")
ROOT = Path(__file__).resolve().parent.parent
SAMPLE_MAPPING = ROOT / "schemas" / "mappings" / "sample.yaml"


def _config(config: Optional[Path], target_url: Optional[str], ledger: Optional[str],
            work_dir: Optional[Path]) -> RunConfig:
    cfg = load_run_config(config)
    if target_url:
        cfg.target.base_url = target_url
    if ledger:
        cfg.state.ledger_url = ledger
    if work_dir:
        cfg.state.work_dir = str(work_dir)
    return cfg


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


@app.command()
def sync(mapping: Path = typer.Argument(..., help="mapping file, e.g. schemas/mappings/sample.yaml"),
         config: Optional[Path] = ConfigOpt, target_url: Optional[str] = TargetOpt,
         ledger: Optional[str] = LedgerOpt, work_dir: Optional[Path] = WorkOpt,
         resend_in_doubt: bool = typer.Option(False, help="resend requests that got no answer and that the "
                                                           "target cannot confirm (may duplicate them)"),
         no_prefect: bool = typer.Option(False, "--no-prefect", help="run the same steps on a plain thread "
                                                                     "pool, without a Prefect API server"),
         since: Optional[str] = typer.Option(None, help="backfill slice start (SQL cursor or partition value), "
                                                        "inclusive; does not move the nightly cursor"),
         until: Optional[str] = typer.Option(None, help="backfill slice end, exclusive"),
         partition: list[str] = typer.Option([], help="backfill these Hive partition values (repeatable)"),
         json_out: bool = typer.Option(False, "--json", help="print the report as JSON")):
    """Sync one source into MemOS (a Prefect flow run unless --no-prefect).

    Exit codes: 0 completed; 1 error (nothing lost, re-run to resume); 2 incomplete (messages
    pending or in doubt); 3 interrupted by SIGTERM/Ctrl-C (drained, re-run to resume).
    """
    from memos_etl import shutdown

    shutdown.install()
    try:
        cfg = _config(config, target_url, ledger, work_dir)
        from memos_etl.pipeline import preflight

        m = load_mapping(mapping)
        preflight(m)  # config and column errors before Prefect starts
        if no_prefect:
            from memos_etl.pipeline import run
            from tasks.cursor import parse_bound
            from tasks.extract import Slice

            part = Slice(since=parse_bound(since), until=parse_bound(until), partitions=tuple(partition))
            report = run(m, cfg, resend_in_doubt=resend_in_doubt, part=part).to_dict()
        else:
            from flows.sync import run_sync

            report = run_sync(str(mapping), cfg, resend_in_doubt, since, until, list(partition))
    except MemosEtlError as exc:
        _fail(exc)
    _print_report(report, json_out)
    code = {"completed": 0, "incomplete": 2, "interrupted": 3}.get(report["status"], 1)
    if code:
        raise typer.Exit(code)


def _print_report(report: dict, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(report, indent=2, default=str))
        return
    from memos_etl.report import Counts, RunReport

    counts = dict(report["counts"])
    counts.pop("accounted", None)
    reasons = counts.pop("reasons", {})
    r = RunReport(**{**report, "counts": Counts(**counts)})
    r.counts.reasons.update(reasons)
    typer.echo(r.text())


@app.command()
def status(config: Optional[Path] = ConfigOpt, ledger: Optional[str] = LedgerOpt,
           work_dir: Optional[Path] = WorkOpt):
    """What the ledger holds: batches and messages per source and status, recent runs."""
    from tasks.checkpoint import Ledger

    cfg = _config(config, None, ledger, work_dir)
    led = Ledger(cfg.state.ledger())
    s = led.summary()
    led.close()
    if not s["by_source"]:
        typer.echo("ledger is empty: nothing synced yet")
    for source, per in s["by_source"].items():
        parts = ", ".join(f"{st}: {v['messages']} messages in {v['batches']} requests" for st, v in sorted(per.items()))
        typer.echo(f"{source}: {parts}")
    for r in s["recent_runs"]:
        rep = json.loads(r["report"]) if r["report"] else {}
        c = rep.get("counts", {})
        typer.echo(f"  run {r['run_id']} {r['status']:<10} read={c.get('read', '?')} "
                   f"delivered={c.get('delivered', '?')} quarantined={c.get('quarantined', '?')} "
                   f"requests={c.get('requests', '?')}")


quarantine_app = typer.Typer(no_args_is_help=True, help="Inspect, export and re-drive quarantined rows.")
app.add_typer(quarantine_app, name="quarantine")


def _quarantined(work_dir, config, source, run):
    from tasks.quarantine import read_quarantine

    cfg = _config(config, None, None, work_dir)
    return read_quarantine(cfg.state.work_dir, source, run)


@quarantine_app.command("list")
def quarantine_list(source: Optional[str] = typer.Option(None), run: Optional[str] = typer.Option(None),
                    work_dir: Optional[Path] = WorkOpt, config: Optional[Path] = ConfigOpt,
                    limit: int = typer.Option(20)):
    """Quarantined rows with their reasons, newest runs last."""
    t = _quarantined(work_dir, config, source, run)
    typer.echo(f"{t.num_rows} quarantined rows")
    for row in t.slice(0, limit).to_pylist():
        typer.echo(f"  {row['run_id']} [{row['stage']}] {row['source_file']}:{row['source_row']}  "
                   f"{'; '.join(row['reasons'])}")


@quarantine_app.command("show")
def quarantine_show(source_file: str, source_row: int, source: Optional[str] = typer.Option(None),
                    work_dir: Optional[Path] = WorkOpt, config: Optional[Path] = ConfigOpt):
    """Everything kept about one quarantined row: reasons and the raw record."""
    t = _quarantined(work_dir, config, source, None)
    hits = [r for r in t.to_pylist() if r["source_file"] == source_file and r["source_row"] == source_row]
    if not hits:
        typer.echo(f"no quarantined row {source_file}:{source_row}")
        raise typer.Exit(1)
    for r in hits:
        typer.echo(json.dumps({**r, "record": json.loads(r["record"])}, indent=2, default=str, ensure_ascii=False))


@quarantine_app.command("export")
def quarantine_export(out: Path, source: Optional[str] = typer.Option(None), run: Optional[str] = typer.Option(None),
                      work_dir: Optional[Path] = WorkOpt, config: Optional[Path] = ConfigOpt):
    """Write quarantined rows to OUT: .parquet, .csv or .jsonl (by its suffix)."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    t = _quarantined(work_dir, config, source, run)
    if out.suffix == ".parquet":
        pq.write_table(t, out)
    elif out.suffix == ".csv":
        import pyarrow.compute as pc

        flat = t.set_column(t.schema.get_field_index("reasons"), "reasons",
                            pc.binary_join(t.column("reasons"), "; "))
        pacsv.write_csv(flat, out)
    elif out.suffix == ".jsonl":
        with open(out, "w") as fh:
            for r in t.to_pylist():
                fh.write(json.dumps({**r, "record": json.loads(r["record"])}, default=str, ensure_ascii=False) + "\n")
    else:
        typer.secho("error: OUT must end in .parquet, .csv or .jsonl", fg="red", err=True)
        raise typer.Exit(1)
    typer.echo(f"{t.num_rows} rows -> {out}")


@quarantine_app.command("redrive")
def quarantine_redrive(mapping: Path, config: Optional[Path] = ConfigOpt, target_url: Optional[str] = TargetOpt,
                       ledger: Optional[str] = LedgerOpt, work_dir: Optional[Path] = WorkOpt):
    """Re-validate a source's quarantined rows with the (fixed) mapping and load those that pass, once."""
    from memos_etl.pipeline import redrive

    try:
        report = redrive(load_mapping(mapping), _config(config, target_url, ledger, work_dir)).to_dict()
    except MemosEtlError as exc:
        _fail(exc)
    _print_report(report, False)


@app.command()
def expectations(mapping: Path, out: Optional[Path] = typer.Option(None, help="write the suite here (JSON)")):
    """The Great Expectations suite a mapping validates with: canonical checks plus its `checks`."""
    from tasks.validate import Validator

    suite = Validator(load_mapping(mapping), _config(None, None, None, None).load).suite_json()
    text = json.dumps(suite, indent=2, default=str, sort_keys=True)
    if out:
        out.write_text(text + "\n")
        typer.echo(f"{len(suite.get('expectations', []))} expectations -> {out}")
    else:
        typer.echo(text)


@app.command()
def search(user_id: str, query: str, target_url: Optional[str] = TargetOpt, config: Optional[Path] = ConfigOpt,
           limit: int = typer.Option(5)):
    """Search a user's memories on the target."""
    from memos_etl.pipeline import make_target

    cfg = _config(config, target_url, None, None)
    t = make_target(cfg)
    try:
        for m in t.search(user_id, query, limit):
            typer.echo(f"- {m.get('memory_value')}")
    except MemosEtlError as exc:
        _fail(exc)
    finally:
        t.close()


@app.command("dev-server")
def dev_server(port: int = typer.Option(8765), host: str = typer.Option("127.0.0.1"),
               db: str = typer.Option(".memos-etl/devserver.db", help="SQLite file (':memory:' for none)"),
               api_key: Optional[str] = typer.Option(None, help="require this key (Authorization: Token ...)"),
               latency_ms: float = typer.Option(0.0), rps: float = typer.Option(0.0),
               tokens_per_minute: int = typer.Option(0), error_rate: float = typer.Option(0.0),
               commit_then_fail_rate: float = typer.Option(0.0), drop_rate: float = typer.Option(0.0),
               rate_limit_style: str = typer.Option("http429", help="http429 | envelope200"),
               seed: Optional[int] = typer.Option(None, help="seed for random faults (replayable)"),
               faults: Optional[str] = typer.Option(None, help="more faults as JSON, see memos_etl/devserver.py")):
    """Run the local MemOS-compatible server (cloud and self-hosted routes, fault injection)."""
    from memos_etl.devserver import serve

    if db != ":memory:":
        Path(db).parent.mkdir(parents=True, exist_ok=True)
    extra = json.loads(faults) if faults else {}
    serve(host, port, db, api_key=api_key, latency_ms=latency_ms, rps=rps, tokens_per_minute=tokens_per_minute,
          error_rate=error_rate, commit_then_fail_rate=commit_then_fail_rate, drop_rate=drop_rate,
          rate_limit_style=rate_limit_style, seed=seed, **extra)


@app.command()
def demo(work_dir: Path = typer.Option(Path(".memos-etl"), help="state directory for the demo")):
    """Sync the bundled sample into a local dev-server, print the report and a search."""
    from memos_etl.devserver import DevServer

    work_dir.mkdir(parents=True, exist_ok=True)
    server = DevServer(db=str(work_dir / "devserver.db")).start()
    try:
        cfg = _config(None, server.url, None, work_dir)
        cfg.target.name = "demo-dev-server"  # the ledger identity survives the port changing
        cfg.state.data_docs = True
        typer.echo(f"dev-server on {server.url}; syncing {SAMPLE_MAPPING.relative_to(ROOT)} ...")
        from flows.sync import run_sync

        try:
            report = run_sync(str(SAMPLE_MAPPING), cfg)
        except MemosEtlError as exc:
            _fail(exc)
        _print_report(report, False)
        typer.echo("")
        user, query = "ana-00", "train weekdays run"
        typer.echo(f"search {user!r} for {query!r}:")
        from memos_etl.pipeline import make_target

        t = make_target(cfg)
        for m in t.search(user, query, 3):
            typer.echo(f"- [{m.get('conversation_id')}] {m.get('memory_value')}")
        t.close()
        typer.echo(f"\nstate in {work_dir}/ (ledger.db, quarantine/, data-docs/); Prefect artifacts of the "
                   "flow run: sync-sample-chats (markdown), sync-sample-chats-table. Run again: 0 add requests.")
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
