"""Iceberg tables beside plain Parquet of the same messages, side by side in one run.

The dry-run messages (benchmarks/data.py's files) appended to an Iceberg table by `pyiceberg`
(a SQLite catalog, one snapshot a file): a dry run of the table against a dry run of the
Parquet files, alternated after a warm-up; then the table's full sync (ledger writes, the
in-process instant target), a sync with no snapshot since (no data file read), a nightly sync
after 1% more messages were appended, and one after 1% of the rows of the last file were
updated (an overwrite: the file rewritten, both versions read to find what changed), each
against the full sync's time."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

from benchmarks.data import generate
from benchmarks.pipeline_bench import ours, reset, table_against_parquet


def _catalog(d: Path):
    from pyiceberg.catalog.sql import SqlCatalog

    (d / "wh").mkdir(parents=True, exist_ok=True)
    return SqlCatalog("bench", uri=f"sqlite:///{d / 'catalog.db'}", warehouse=(d / "wh").as_uri())


def _write(base: Path, n: int) -> tuple[Path, Path, Path]:
    """(parquet mapping, iceberg mapping, table folder) for `n` messages, the table written anew."""
    parquet_map = generate(base / f"m{n}", n)
    d = base / f"iceberg{n}"
    shutil.rmtree(d, ignore_errors=True)
    cat = _catalog(d)
    cat.create_namespace("chats")
    files = sorted((base / f"m{n}" / "data").glob("*.parquet"))
    table = None
    for f in files:
        data = pq.read_table(f)
        table = table or cat.create_table("chats.messages", schema=data.schema)
        table.append(data)
    m = yaml.safe_load(parquet_map.read_text())
    catalog = {"type": "sql", "uri": f"sqlite:///{d / 'catalog.db'}", "warehouse": (d / "wh").as_uri()}
    m["source"] = {
        "name": "bench-iceberg",
        "type": "iceberg",
        "iceberg": {"table": "chats.messages", "catalog_name": "bench", "catalog": catalog},
    }
    (d / "mapping.yaml").write_text(yaml.safe_dump(m, sort_keys=False))
    return parquet_map, d / "mapping.yaml", d


def _append(d: Path, n: int) -> int:
    """1% more messages: copies of the first conversations under new ids."""
    table = _catalog(d).load_table("chats.messages")
    extra = table.scan(limit=n // 100).to_arrow()
    for col in ("message_id", "conversation_id"):
        i = extra.schema.get_field_index(col)
        extra = extra.set_column(i, col, pc.binary_join_element_wise(extra[col].cast(pa.string()), "new", "-"))
    table.append(extra.cast(table.schema().as_arrow()))
    return extra.num_rows


def _update(d: Path, n: int) -> int:
    """1% of the rows, all in the last data file, get new text: pyiceberg rewrites that file."""
    from pyiceberg.expressions import In

    table = _catalog(d).load_table("chats.messages")
    ids = pq.read_table(_last_file(table), columns=["message_id"]).column(0).to_pylist()[: n // 100]
    rows = table.scan(row_filter=In("message_id", ids)).to_arrow()
    edited = pc.binary_join_element_wise(rows["text"].cast(pa.string()), "(edited)", " ")
    rows = rows.set_column(rows.schema.get_field_index("text"), "text", edited)
    table.overwrite(rows.cast(table.schema().as_arrow()), overwrite_filter=In("message_id", ids))
    return rows.num_rows


def _last_file(table) -> str:
    from urllib.parse import urlparse

    snap = table.current_snapshot()
    paths = [t.file.file_path for t in table.scan(snapshot_id=snap.snapshot_id).plan_files()]
    return urlparse(sorted(paths)[-1]).path


def run(base: Path, n: int, log=print) -> dict:
    parquet, iceberg, d = _write(base, n)
    out: dict = {"messages": n, **table_against_parquet(parquet, iceberg, base, "iceberg")}
    best = {k: max(r["per_min"] for r in out[k]) for k in ("parquet", "iceberg")}
    log(f"iceberg dry run {best['iceberg'] / 1e6:.2f}M msg/min, {out['ratio']:.2f} of Parquet")

    work = base / "work-iceberg-full"
    reset(work)
    full, _, s_full = ours(iceberg, work)
    out["full"] = {"seconds": s_full, "delivered": full.counts.delivered}
    noop, _, s_noop = ours(iceberg, work)
    out["noop"] = {"seconds": s_noop, "read": noop.counts.read, "requests": noop.counts.requests}
    out["noop"]["ratio_to_full"] = s_noop / s_full
    appended = _append(d, n)
    r, _, s = ours(iceberg, work)
    out["appended"] = {
        "seconds": s,
        "appended": appended,
        "delivered": r.counts.delivered,
        "read": r.counts.read,
        "ratio_to_full": s / s_full,
    }
    updated = _update(d, n)
    r, _, s = ours(iceberg, work)
    out["updated"] = {
        "seconds": s,
        "updated": updated,
        "read": r.counts.read,
        "changed_after_delivery": r.counts.changed_after_delivery,
        "requests": r.counts.requests,
        "ratio_to_full": s / s_full,
    }
    a, u = out["appended"], out["updated"]
    log(
        f"iceberg full sync {s_full:.1f}s, no-op {s_noop:.2f}s, nightly after 1% appended {a['seconds']:.2f}s "
        f"({a['ratio_to_full']:.3f}), after 1% updated {u['seconds']:.2f}s ({u['ratio_to_full']:.3f}; "
        f"{u['changed_after_delivery']:,} changed after delivery)"
    )
    return out


def rows(m: dict) -> list[tuple[str, str, str, str]]:
    """Rows for the results table."""
    best = {k: max(m[k], key=lambda r: r["per_min"]) for k in ("parquet", "iceberg")}
    f, z, a, u = m["full"], m["noop"], m["appended"], m["updated"]
    return [
        (
            f"Iceberg table dry run, {m['messages']:,} messages (10 snapshots)",
            f"{best['iceberg']['per_min'] / 1e6:.2f}M msg/min, the same as Parquet files "
            f"{best['parquet']['per_min'] / 1e6:.2f}M",
            f"{m['ratio']:.2f} of Parquet",
            ">= 0.8 of Parquet",
        ),
        (
            "Iceberg nightly sync after 1% appended (snapshots compared)",
            f"{a['seconds']:.2f}s, {a['read']:,} read, {a['delivered']:,} delivered",
            f"{a['ratio_to_full']:.3f} of the full sync ({f['seconds']:.1f}s)",
            "<= 0.05 of the full sync",
        ),
        (
            "Iceberg nightly sync after 1% updated in one file (its old and new version read)",
            f"{u['seconds']:.2f}s, {u['read']:,} read, {u['changed_after_delivery']:,} changed after delivery, "
            f"{u['requests']} requests",
            f"{u['ratio_to_full']:.3f} of the full sync",
            "the rewritten file's share of the table (0.1 here)",
        ),
        (
            "Iceberg sync with no snapshot since",
            f"{z['seconds']:.2f}s, {z['read']} read, {z['requests']} requests",
            f"{z['ratio_to_full']:.4f} of the full sync",
            "no data file read, 0 requests",
        ),
    ]
