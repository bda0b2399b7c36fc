"""What `memos-etl status` shows, read straight through the database driver.

`status` should answer at once, and SQLAlchemy's import alone is 0.3-0.6 s on these machines.
So on a SQLite ledger (stdlib sqlite3) or a PostgreSQL one (psycopg) at the current schema
revision, the overview's few SELECTs run here in plain SQL, read-only. Anything else (another
database, a ledger that needs a migration, a driver error) returns None and the caller takes
the full path, core.ledger.Ledger, which also upgrades. tests/test_cli.py checks that both
paths give the same overview, on SQLite and on PostgreSQL.
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

from core.ledger.revision import HEAD

_OVERVIEW = (
    ("state", "SELECT source, target, cursor, updated_at FROM source_state"),
    ("batches", "SELECT source, target, status, SUM(n_messages) FROM batches GROUP BY source, target, status"),
    ("objects", "SELECT source, target, status, COUNT(*) FROM objects GROUP BY source, target, status"),
    ("documents", "SELECT source, target, status, COUNT(*) FROM documents GROUP BY source, target, status"),
    (
        "runs",
        "SELECT run_id, flow, source, target, started_at, finished_at, status, host, pid, report "
        "FROM runs ORDER BY started_at",
    ),
)
_ERASURES = (
    "SELECT erasure_id, user_id, conversation_id, target, erased_at, erased_by, memories_deleted, "
    "messages_forgotten, status FROM erasures ORDER BY erased_at"
)


def _connect(url: str):
    if url.startswith("sqlite:///"):
        import sqlite3

        path = url[len("sqlite:///") :].split("?", 1)[0]
        from pathlib import Path

        if not path or not Path(path).exists():
            return None
        return sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    scheme = urlsplit(url).scheme
    if scheme in ("postgresql", "postgresql+psycopg"):
        import psycopg

        parts = urlsplit(url)
        return psycopg.connect(
            host=parts.hostname or None,
            port=parts.port or None,
            user=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            dbname=parts.path.lstrip("/") or None,
            connect_timeout=10,
        )
    return None


def overview(url: str) -> tuple[list[dict], list[dict]] | None:
    """(per source and target rows, erasure log) as Ledger.source_overview / erasure_log give
    them, or None when this ledger needs the full path."""
    try:
        conn = _connect(url)
    except Exception:  # noqa: BLE001 - the full path reports the error properly
        return None
    if conn is None:
        return None
    try:
        cur = conn.cursor()
        cur.execute("SELECT version_num FROM memos_etl_ledger_version")
        row = cur.fetchone()
        if row is None or row[0] != HEAD:
            return None
        out: dict[tuple[str, str], dict] = {}
        cur.execute(_OVERVIEW[0][1])
        for src, tgt, cursor, upd in cur.fetchall():
            out[(src, tgt)] = {"source": src, "target": tgt, "cursor": cursor, "state_updated_at": upd}
        cur.execute(_OVERVIEW[1][1])
        for src, tgt, status, n in cur.fetchall():
            out.setdefault((src, tgt), {"source": src, "target": tgt})[status] = int(n or 0)
        cur.execute(_OVERVIEW[2][1])
        for src, tgt, status, n in cur.fetchall():
            out.setdefault((src, tgt), {"source": src, "target": tgt})[f"files_{status}"] = int(n)
        cur.execute(_OVERVIEW[3][1])
        for src, tgt, status, n in cur.fetchall():
            out.setdefault((src, tgt), {"source": src, "target": tgt})[f"documents_{status}"] = int(n)
        cur.execute(_OVERVIEW[4][1])
        names = [d[0] for d in cur.description]
        for values in cur.fetchall():
            r = dict(zip(names, values))
            row = out.setdefault((r["source"], r["target"]), {"source": r["source"], "target": r["target"]})
            row["last_run"] = r
            if r["flow"] != "backfill" and r["status"] != "running":
                row["last_sync"] = r
        cur.execute(_ERASURES)
        names = [d[0] for d in cur.description]
        erasures = [dict(zip(names, values)) for values in cur.fetchall()]
        return sorted(out.values(), key=lambda d: (d["source"], d["target"])), erasures
    except Exception:  # noqa: BLE001 - a table or column this SQL does not know: the full path
        return None
    finally:
        conn.close()
