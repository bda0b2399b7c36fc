"""`memos-etl quarantine`: inspect, export and re-drive quarantined rows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from core.errors import MemosEtlError
from memos_etl.cli.common import ConfigOpt, LedgerOpt, SourceArg, TargetOpt, WorkOpt, load_config, print_report

app = typer.Typer(no_args_is_help=True, help="Inspect, export and re-drive quarantined rows.")


def pa_text_times(t):
    import pyarrow as pa

    return pa.Table.from_arrays(
        [c.cast(pa.string()) if pa.types.is_timestamp(c.type) else c for c in t.columns], names=t.column_names
    )


def _quarantined(work_dir, config, source, run):
    from tasks.quarantine import read_quarantine

    cfg = load_config(config, None, None, work_dir)
    return read_quarantine(cfg.state.work_dir, source, run)


@app.command("list")
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


@app.command("show")
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


@app.command("export")
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
        raise MemosEtlError("OUT must end in .parquet, .csv or .jsonl")
    typer.echo(f"{t.num_rows} rows -> {out}")


@app.command("redrive")
def quarantine_redrive(
    source: str = SourceArg,
    config: Optional[Path] = ConfigOpt,
    target_url: Optional[str] = TargetOpt,
    ledger: Optional[str] = LedgerOpt,
    work_dir: Optional[Path] = WorkOpt,
):
    """Re-validate a source's quarantined rows with the (fixed) mapping and load those that pass, once."""
    from flows.runner import redrive

    cfg = load_config(config, target_url, ledger, work_dir)
    report = redrive(cfg.mapping(source), cfg).to_dict()
    print_report(report, False)
