"""The local MemOS-compatible server (`dev-server`) and the `demo` that syncs the bundled sample into it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from memos_etl.cli.common import console_without_expected_tracebacks, load_config, print_report, require_prefect

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_MAPPING = ROOT / "schemas" / "mappings" / "sample.yaml"


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


def demo(work_dir: Path = typer.Option(Path(".memos-etl"), help="state directory for the demo")):
    """Sync the bundled sample into a local dev-server, print the report and a search."""
    from memos_etl.devserver import DevServer
    from tasks.validate import preload

    require_prefect("the demo")
    preload()  # Great Expectations imports while the dev-server and Prefect start
    work_dir.mkdir(parents=True, exist_ok=True)
    server = DevServer(db=str(work_dir / "devserver.db")).start()
    try:
        cfg = load_config(None, server.url, None, work_dir)
        cfg.target.name = "demo-dev-server"  # the ledger identity survives the port changing
        cfg.state.data_docs = True
        typer.echo(f"dev-server on {server.url}; syncing {SAMPLE_MAPPING.relative_to(ROOT)} ...")
        from flows.sync import run_sync
        from memos_etl.cli.prefect_api import api_server

        console_without_expected_tracebacks()
        with api_server():
            report = run_sync(str(SAMPLE_MAPPING), cfg)
        print_report(report, False)
        typer.echo("")
        user, query = "ana-00", "train weekdays run"
        typer.echo(f"search {user!r} for {query!r}:")
        from core.client import make_target

        t = make_target(cfg.target, pool_size=cfg.load.concurrency + 2)
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
