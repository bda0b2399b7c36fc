"""What the ledger and the target hold: `status`, `reset` (a source's cursor), `search`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from memos_etl.cli.common import ConfigOpt, LedgerOpt, SourceArg, TargetOpt, WorkOpt, load_config


def status(
    config: Optional[Path] = ConfigOpt,
    ledger: Optional[str] = LedgerOpt,
    work_dir: Optional[Path] = WorkOpt,
    json_out: bool = typer.Option(False, "--json"),
    only_erasures: bool = typer.Option(False, "--erasures", help="only the erasure log (memos-etl erase)"),
):
    """Per source and target: cursor, last run, messages delivered, pending, in doubt, quarantined;
    then the erasure log (who was erased with `erase`, where and when: ids only)."""
    from core.ledger.overview import overview
    from tasks import cursor

    cfg = load_config(config, None, ledger, work_dir)
    fast = overview(cfg.state.ledger())  # plain SQL through the driver: no SQLAlchemy import
    if fast is not None:
        rows, erasures = fast
    else:
        from core.ledger import Ledger

        led = Ledger(cfg.state.ledger())
        try:
            rows = led.source_overview()
            erasures = led.erasure_log()
        finally:
            led.close()
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
            quarantined: int | str = 0
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
        docs = {k.removeprefix("documents_"): n for k, n in r.items() if k.startswith("documents_")}
        if docs:  # a documents source: files in a knowledge base, not messages
            held = sum(docs.get(k, 0) for k in ("running", "completed", "failed"))
            typer.echo(
                f"  documents   {held} in the knowledge base ({docs.get('completed', 0)} parsed, "
                f"{docs.get('running', 0)} parsing, {docs.get('failed', 0)} failed to parse); "
                f"{docs.get('sent', 0)} uploads in doubt; {docs.get('replaced', 0)} replaced, "
                f"{docs.get('deleted', 0)} deleted"
            )
            typer.echo(f"  quarantined {quarantined} files (memos-etl quarantine list --source {r['source']})")
            continue
        typer.echo(f"  delivered   {r.get('delivered', 0)} messages")
        typer.echo(f"  pending     {c.get('pending', 0)} (as of the last run)")
        typer.echo(f"  in doubt    {r.get('sent', 0)} messages sent, never confirmed")
        typer.echo(f"  refused     {r.get('failed', 0)} messages refused by the target (quarantined)")
        typer.echo(f"  quarantined {quarantined} rows (memos-etl quarantine list --source {r['source']})")
    if erasures:
        typer.echo("erasures (memos-etl erase; ids only)")
        for e in erasures:
            scope = e["user_id"] + (f" / {e['conversation_id']}" if e["conversation_id"] else " (whole user)")
            done = "done" if e["status"] == "done" else "STARTED, not finished: run erase again"
            deleted = {None: "?", -1: "all"}.get(e["memories_deleted"], e["memories_deleted"])
            typer.echo(
                f"  {str(e['erased_at'])[:19]}  {scope} on {e['target']} by {e['erased_by']}: {done}"
                + (
                    f" ({deleted} memories deleted, {e['messages_forgotten']} messages forgotten)"
                    if e["status"] == "done"
                    else ""
                )
            )


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

    cfg = load_config(config, None, ledger, work_dir)
    m = cfg.mapping(source)
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


def search(
    user_id: str,
    query: str,
    target_url: Optional[str] = TargetOpt,
    config: Optional[Path] = ConfigOpt,
    limit: int = typer.Option(5),
    knowledgebase: Optional[str] = typer.Option(
        None, "--knowledgebase", help="search this knowledge base (its name, as a documents source created it)"
    ),
):
    """Search a user's memories on the target (or a knowledge base's, with --knowledgebase)."""
    from core.client import make_target

    cfg = load_config(config, target_url, None, None)
    t = make_target(cfg.target)  # not through the pipeline: no GX import
    try:
        if knowledgebase is not None:
            from core.ledger import Ledger
            from flows.runner.knowledge import by_name

            led = Ledger(cfg.state.ledger())
            try:
                found = by_name(cfg, led, t, knowledgebase).search(user_id, query, limit)
            finally:
                led.close()
        else:
            found = t.search(user_id, query, limit)
        for m in found:
            typer.echo(f"- {m.get('memory_value')}")
    finally:
        t.close()
