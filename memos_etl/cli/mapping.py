"""Working on a mapping, nothing sent: `preview`, `redact-check`, `presets`, `detect`, `expectations`."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Optional

import typer

from core.errors import MemosEtlError
from memos_etl.cli.common import ConfigOpt, SourceArg, load_config


def preview(
    source: Optional[str] = typer.Argument(None, help="a configured source or a mapping file (or use --preset)"),
    preset: Optional[str] = typer.Option(None, help="a preset from schemas/presets (see `memos-etl presets`)"),
    input_path: Optional[Path] = typer.Option(
        None, "--source", help="with --preset: the input file, directory or glob"
    ),
    requests: int = typer.Option(3, "--requests", "-n", help="requests to show"),
    constant: list[str] = typer.Option(
        [], "--constant", "-k", help="with --preset: NAME=VALUE for the preset's constants (e.g. self=1234)"
    ),
    config: Optional[Path] = ConfigOpt,
    json_out: bool = typer.Option(False, "--json"),
):
    """Show the first MemOS requests a mapping or preset makes of an input; nothing is sent and no
    state is kept (a dry run in a temporary directory). For iterating on a mapping."""
    import tempfile

    from core.config import preset_mapping
    from flows.runner import run, serial_fanout

    if (preset is None) == (source is None) or (preset is not None and input_path is None):
        raise MemosEtlError("give a SOURCE (configured name or mapping file), or --preset NAME --source PATH")
    cfg = load_config(config, None, None, None)
    bad = [c for c in constant if "=" not in c]
    if bad:
        raise MemosEtlError(f"--constant takes NAME=VALUE, got {bad[0]!r}")
    if preset is not None and input_path is not None:
        constants = dict(c.split("=", 1) for c in constant)
        m = preset_mapping(preset, input_path, {"constants": constants} if constants else None)
    else:
        assert source is not None  # checked above: a SOURCE or --preset with --source
        m = cfg.mapping(source)
    with tempfile.TemporaryDirectory(prefix="memos-etl-preview-") as tmp:
        cfg.state.work_dir, cfg.state.ledger_url, cfg.state.data_docs = tmp, None, False
        box = Path(tmp) / "outbox.jsonl"
        # one file and one bucket at a time: the same input previews the same requests every time
        report = run(m, cfg, outbox=box, stage_fanout=serial_fanout, load_fanout=serial_fanout)
        with open(box, encoding="utf-8") as fh:
            shown = [json.loads(line) for _, line in zip(range(requests), fh)]
    c = report.counts
    summary = {
        "source": m.source.name,
        "read": c.read,
        "requests": c.requests or None,
        "messages": c.planned,
        "quarantined": c.quarantined,
        "empty_skipped": c.empty_skipped,
        "skipped": dict(c.skipped),
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
        + (f", {sum(c.skipped.values())} not messages (skipped)" if c.skipped else "")
    )
    for kind, n in c.skipped.most_common(10):
        typer.echo(f"    {n:>6}  skipped {kind}")
    if report.redacting:
        typer.echo(
            f"    personal data: {c.redacted} messages redacted, {c.redaction_dropped} dropped: "
            + (", ".join(f"{e} {v['found']}" for e, v in sorted(c.redaction.items())) or "none found")
        )
    for reason, n in c.reasons.most_common(10):
        typer.echo(f"    {n:>6}  {reason}")
    for note in report.notes:
        typer.echo(f"    note: {note}")


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

    cfg = load_config(config, None, None, None)
    m = cfg.mapping(source)
    if m.redact is None:
        raise MemosEtlError(f"source {m.source.name!r} has no redact section: nothing would be redacted")
    redactor = redactor_for(m)
    assert redactor is not None  # m.redact is set (checked above)
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
    summary: dict[str, Any] = {
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


def presets():
    """List the bundled presets (schemas/presets) with the first line of their description."""
    from core.config import PRESETS, preset_names

    for name in preset_names():
        first = next(
            (ln[2:].strip() for ln in (PRESETS / f"{name}.yaml").read_text().splitlines() if ln.startswith("# ")), ""
        )
        typer.echo(f"{name:32} {first}")


def _described(preset: str, head: str) -> dict:
    """What a reader tells from a file's first bytes: a WhatsApp chat's language."""
    if preset != "whatsapp-txt":
        return {}
    from tasks.extract.chatlines import locale_of

    code = locale_of(head)
    return {"source": {"locale": code}} if code else {}


URL_ENV = "APP_DATABASE_URL"  # the variable a copied mapping names when the URL has a password


def _detect_database(arg: str, json_out: bool) -> None:
    """`detect` on a database: its tables' names and columns (and a few values of a column where
    they decide) matched against the app presets' signatures (core/config/detect_sql.py)."""
    import yaml
    from sqlalchemy.engine import make_url

    from core.config.detect_sql import Unreachable, detect_database, looked_for, shown, sqlite_url

    url = sqlite_url(arg) or arg
    try:
        matches = detect_database(url)
    except Unreachable as exc:
        typer.secho(f"cannot inspect {exc}", err=True)
        raise typer.Exit(2) from None
    if json_out:
        typer.echo(json.dumps([m.__dict__ for m in matches], indent=2, ensure_ascii=False))
    parsed = make_url(url)
    secret = parsed.password is not None
    stem = Path(parsed.database or "app").stem
    for m in matches if not json_out else []:
        typer.echo(f"{m.preset}: {m.what}: tables {', '.join(m.files)}")
        name = re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{stem}-{m.preset}").strip("-")
        sql: dict = {"url_env": URL_ENV} if secret else {"url": url}
        sql.update(m.settings.get("source", {}).get("sql", {}))
        body = {"preset": m.preset, "source": {"name": name, "type": "sql", "sql": sql}}
        typer.echo("  a mapping to copy (schemas/mappings/<name>.yaml):")
        if secret:
            typer.echo(f"    # {URL_ENV} holds the URL, {shown(url)} (its password is not printed here)")
        for line in yaml.safe_dump(body, sort_keys=False, allow_unicode=True).splitlines():
            typer.echo(f"    {line}")
    if not matches:
        if not json_out:
            typer.secho(f"no preset reads the tables of {shown(url)}: looked for {looked_for()}", err=True)
        raise typer.Exit(2)


def detect(
    path: str = typer.Argument(
        ..., help="a file, a folder or a .zip, as downloaded; or a database: a SQLAlchemy URL or a SQLite file"
    ),
    json_out: bool = typer.Option(False, "--json"),
):
    """Which preset reads this input: sniffs the files' names and first bytes (never reads
    them whole), or a database's tables (names and columns), and prints each match with a
    mapping to copy. Exit codes: 0 a match; 2 none (or a database it cannot open)."""
    from core.config.detect_sql import is_database

    if is_database(path):
        _detect_database(path, json_out)
        return
    return _detect_path(Path(path), json_out)


def _detect_path(path: Path, json_out: bool) -> None:
    """`detect` on a file, a folder or a .zip (core/config/detect.py)."""
    import yaml

    from core.config.detect import LOOKED_FOR
    from core.config.detect import detect as sniff

    if not path.exists():
        raise MemosEtlError(f"{path}: no such file or directory")
    matches = sniff(path, _described)
    if json_out:
        typer.echo(json.dumps([m.__dict__ for m in matches], indent=2, ensure_ascii=False))
    for m in matches:
        files = ", ".join(m.files[:3]) + (f" and {len(m.files) - 3} more" if len(m.files) > 3 else "")
        if json_out:
            continue
        if m.preset is None:
            typer.echo(f"{m.what}: {files}")
            continue
        locale = m.settings.get("source", {}).get("locale")
        typer.echo(f"{m.preset}: {m.what}{f' (language: {locale})' if locale else ''}: {files}")
        name = re.sub(r"[^A-Za-z0-9_.-]+", "-", path.stem).strip("-") or m.preset
        body: dict = {"preset": m.preset, "source": {"name": name, "path": str(path.resolve())}}
        for key, value in m.settings.items():
            body[key] = {**body.get(key, {}), **value} if isinstance(value, dict) else value
        if m.needs:
            body.setdefault("constants", {}).update({k: f"<{v}>" for k, v in m.needs.items()})
        typer.echo("  a mapping to copy (schemas/mappings/<name>.yaml):")
        for line in yaml.safe_dump(body, sort_keys=False, allow_unicode=True).splitlines():
            typer.echo(f"    {line}")
    if not any(m.preset for m in matches):
        if not matches and not json_out:
            typer.secho(f"no preset reads {path}: looked for {LOOKED_FOR}", err=True)
        raise typer.Exit(2)


def expectations(mapping: Path, out: Optional[Path] = typer.Option(None, help="write the suite here (JSON)")):
    """The Great Expectations suite a mapping validates with: canonical checks plus its `checks`."""
    from core.config import load_mapping
    from tasks.validate import Validator

    suite = Validator(load_mapping(mapping), load_config(None, None, None, None).load).suite_json()
    text = json.dumps(suite, indent=2, default=str, sort_keys=True)
    if out:
        out.write_text(text + "\n")
        typer.echo(f"{len(suite.get('expectations', []))} expectations -> {out}")
    else:
        typer.echo(text)
