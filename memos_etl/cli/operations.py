"""Operations on delivered data: `replay`, `rollback`, `reconcile`, `erase` (`forget`, its old name)."""

from __future__ import annotations

import functools
import importlib.util
import json
from pathlib import Path
from typing import Optional

import typer

from core.errors import OperationError
from memos_etl.cli.common import (
    ConfigOpt,
    LedgerOpt,
    SourceArg,
    TargetOpt,
    WorkOpt,
    load_config,
    print_report,
    require_prefect,
)


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

    cfg = load_config(config, target_url, ledger, work_dir)
    m = cfg.mapping(source)
    what = ", ".join([f"user {u}" for u in user] + [f"conversation {c}" for c in conversation])
    if not yes:
        typer.confirm(
            f"re-send every message of {what or '(nothing selected)'} from {m.source.name} to "
            f"{cfg.target.ledger_name}?",
            abort=True,
        )
    with progress.TerminalBars("replay "):
        report = do_replay(m, cfg, list(user), list(conversation), progress=progress.report).to_dict()
    print_report(report, json_out)
    if report["status"] != "completed":
        raise typer.Exit(2)


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
    from core.client import make_target
    from core.ledger import Ledger
    from tasks.rollback import rollback as do_rollback

    cfg = load_config(config, target_url, ledger, work_dir)
    led = Ledger(cfg.state.ledger())
    rec = led.run_record(run)
    led.close()
    if rec is None:
        raise OperationError(f"no run {run} in {cfg.state.ledger()}")
    delivered = rec["report"].get("counts", {}).get("delivered", "?")
    documents = _is_documents(cfg, rec["source"])
    if documents:
        if not yes:
            typer.confirm(
                f"delete the {delivered} files run {run} uploaded ({rec['source']}) from its knowledge base "
                f"on {rec['target']}?",
                abort=True,
            )
        from flows.runner.knowledge import rollback as rollback_documents

        t = make_target(cfg.target)
        try:
            out = rollback_documents(cfg, rec, t)
        finally:
            t.close()
        typer.echo(
            f"rolled back {out['run_id']}: {out['files_deleted']} files deleted from the knowledge base, "
            f"{out['files_forgotten']} files to read again"
        )
        return
    if not yes:
        typer.confirm(
            f"delete the memories of run {run} ({rec['flow']} of {rec['source']}, {delivered} messages "
            f"delivered) from {rec['target']}?",
            abort=True,
        )
    t = make_target(cfg.target, pool_size=cfg.load.concurrency + 2)
    try:
        out = do_rollback(cfg, run, t)
    finally:
        t.close()
    typer.echo(
        f"rolled back {out['run_id']}: {out['memories_deleted']} memories deleted from {out['users']} users, "
        f"{out['messages_forgotten']} messages in {out['requests']} requests forgotten by the ledger, "
        f"{out['files_forgotten']} files to read again, {out['cursor']}"
    )


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
    from tasks.reconcile import scan

    cfg = load_config(config, target_url, ledger, work_dir)
    out = scan(cfg.mapping(source), cfg)
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


def erase(
    user: Optional[str] = typer.Option(None, "--user", help="the MemOS user_id to erase"),
    conversation: Optional[str] = typer.Option(None, "--conversation", help="erase only this conversation"),
    document: Optional[str] = typer.Option(
        None, "--document", help="a documents source's file to erase (its path under the source; with --source)"
    ),
    source: Optional[str] = typer.Option(None, "--source", help="the documents source of --document"),
    yes: bool = typer.Option(False, "--yes", "-y"),
    config: Optional[Path] = ConfigOpt,
    target_url: Optional[str] = typer.Option(
        None, "--target", "--target-url", help="MemOS base URL (overrides target.base_url)"
    ),
    ledger: Optional[str] = LedgerOpt,
    work_dir: Optional[Path] = WorkOpt,
):
    """Erase a user (or one conversation) for good: delete their memories on the target, keep
    them out of every later sync, backfill, replay, re-drive and reset (an erasure record), drop
    their quarantined rows and dry-run requests, and log the erasure (ids and time only).

    Exit codes: 0 erased; 1 error; 2 erasure recorded but the target's memories not (all)
    deleted (run erase again)."""
    from core.client import make_target
    from core.ledger import Ledger
    from tasks.erase import erase as do_erase

    cfg = load_config(config, target_url, ledger, work_dir)
    if document is not None or user is None:
        _erase_document(cfg, document, source, yes)
        return
    led = Ledger(cfg.state.ledger())
    try:
        batches = led.delivered_batches(
            cfg.target.ledger_name, users=[user], conversations=[conversation] if conversation else None
        )
    finally:
        led.close()
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
    t = make_target(cfg.target)  # not through the pipeline: no GX import
    try:
        out = do_erase(cfg, t, user, conversation)
    finally:
        t.close()
    if importlib.util.find_spec("prefect") is not None:  # not in the Airflow environment
        from flows.events import emit_now, erasure_event
        from memos_etl.cli.prefect_api import api_server

        with api_server():  # the erasure in Prefect's event feed (ids only), for automations and audit
            payload = erasure_event(cfg.target.ledger_name, out, user, conversation)
            emit_now("erasure.done" if out["complete"] else "erasure.incomplete", None, cfg.target.ledger_name, payload)
    if not out["complete"]:
        typer.secho(
            f"erase {scope}: erasure recorded ({out['erasure_id']}), but {out['problem']}",
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


@functools.wraps(erase)
def forget(*args, **kwargs):
    typer.secho("note: `memos-etl forget` is now `memos-etl erase`; the old name keeps working", err=True)
    return erase(*args, **kwargs)


forget.__doc__ = "The old name of `erase`: works the same, with a note that the name changed."


#: listing calls above which `verify --all` asks first
ASK_ABOVE = 500


def verify(
    source: str = SourceArg,
    sample: int = typer.Option(50, "--sample", help="requests to check, a seeded sample"),
    all_requests: bool = typer.Option(False, "--all", help="check every delivered request"),
    run: Optional[str] = typer.Option(None, "--run", help="only the requests of this run id"),
    seed: int = typer.Option(0, help="the sample's seed: the same seed checks the same requests"),
    yes: bool = typer.Option(False, "--yes", "-y", help="do not ask before a large --all"),
    no_prefect: bool = typer.Option(False, "--no-prefect", help="no Prefect flow run, artifact or events"),
    config: Optional[Path] = ConfigOpt,
    target_url: Optional[str] = TargetOpt,
    ledger: Optional[str] = LedgerOpt,
    work_dir: Optional[Path] = WorkOpt,
    json_out: bool = typer.Option(False, "--json"),
):
    """Check what MemOS made of a source's delivered requests: memories found, none (stored
    nothing), still extracting, the same memory repeated under one request; and that erased
    users left no memory or search hit. Exit codes: 0 clean, 2 findings, 1 error."""
    from flows.runner.verify import run_verify, verify_cost

    cfg = load_config(config, target_url, ledger, work_dir)
    m = cfg.mapping(source)
    if m.documents is not None:  # files in a knowledge base: each delivered one there, parsed, once
        from core.client import make_target
        from flows.runner.knowledge import verify as verify_documents

        t = make_target(cfg.target)
        try:
            result = verify_documents(m, cfg, t)
        finally:
            t.close()
        if json_out:
            typer.echo(json.dumps(result, indent=2, default=str))
        else:
            typer.echo(
                f"{result['files']} files of {m.source.name} in knowledge base {result['knowledgebase']}: "
                + ", ".join(f"{n} {k}" for k, n in sorted(result["by_status"].items()))
                + (
                    f"; {result['in_doubt']} uploads in doubt (the next sync settles them)"
                    if result["in_doubt"]
                    else ""
                )
            )
            for f in result["findings"]:
                typer.echo(f"  {f['path']} ({f['file_id']}): {f['finding']}")
        if result["status"] != "clean":
            raise typer.Exit(2)
        return
    wanted = None if all_requests else sample
    n, calls = verify_cost(m, cfg, wanted, run)
    if all_requests and calls > ASK_ABOVE and not yes:
        typer.confirm(f"verify all {n} delivered requests of {m.source.name}: about {calls} listing calls?", abort=True)
    if not json_out:
        typer.echo(f"checking {n} requests of {m.source.name} on {cfg.target.ledger_name} (~{calls} listing calls) ...")
    if no_prefect:
        result = run_verify(m, cfg, sample=wanted, seed=seed, run_id=run).to_dict()
    else:
        require_prefect("verify")
        from flows.heartbeat import in_process
        from flows.verify import verify_flow
        from memos_etl.cli.prefect_api import api_server

        overrides = cfg.model_dump(exclude={"sources"})
        with api_server(), in_process():
            result = verify_flow(source, str(cfg.path_) if cfg.path_ else None, overrides, wanted, seed, run)
    if json_out:
        typer.echo(json.dumps(result, indent=2, default=str))
    else:
        from tasks.verify import VerifyResult

        typer.echo("\n".join(VerifyResult.from_dict(result).lines()))
    if result["status"] != "clean":
        raise typer.Exit(2)


def _is_documents(cfg, source: str) -> bool:
    """Whether a source of the run config is a documents source (a source no longer in the
    config: not one)."""
    try:
        return cfg.mapping(source).documents is not None
    except Exception:  # a source removed from the config since its run: treated as chats
        return False


def _erase_document(cfg, path: str | None, source: str | None, yes: bool) -> None:
    """`erase --document PATH --source SOURCE`: one file of a documents source, for good."""
    if path is None or source is None:
        raise OperationError("erase needs --user (chats), or --document PATH with --source (a documents source)")
    m = cfg.mapping(source)
    if m.documents is None:
        raise OperationError(f"source {m.source.name} is not a documents source: erase its chats with --user")
    if not yes:
        typer.confirm(
            f"erase {path!r} of {m.source.name}: delete it from the knowledge base on {cfg.target.ledger_name} "
            "and never upload it again?",
            abort=True,
        )
    from core.client import make_target
    from flows.runner.knowledge import erase as erase_document

    t = make_target(cfg.target)
    try:
        out = erase_document(cfg, m, path, t)
    finally:
        t.close()
    typer.echo(
        f"erased {path!r} of {m.source.name}: {out['files_deleted']} files deleted from the knowledge base, "
        f"{out['versions_forgotten']} versions forgotten; no later run uploads it (erasure {out['erasure_id']})"
    )
