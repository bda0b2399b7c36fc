"""Documents: every version of a document file uploaded to a knowledge base, and the knowledge
bases the ledger created.

A version is (path, sha256). It is written `sent` before its upload goes out, so an upload
that is never answered is known (in doubt) and settled before anything is sent again; MemOS's
answer gives it its file id and `running`; parsing ends `completed` or `failed`. A newer
version of the same path is uploaded first and the older one deleted there after (`replaced`);
a path gone from the source is deleted there under `on_delete: delete` (`deleted`)."""

from __future__ import annotations

import sqlalchemy as sa

from core.ledger.db import Store, guarded, now
from core.ledger.tables import documents, knowledgebases

#: statuses of a version MemOS holds (or may hold: sent)
HELD = ("sent", "running", "completed", "failed")


class Documents(Store):
    @guarded("reading knowledge bases")
    def knowledgebase(self, target: str, name: str) -> tuple[bool, str | None]:
        """(known, id): known with no id is a create that was never answered."""
        with self.engine.connect() as c:
            row = c.execute(
                sa.select(knowledgebases.c.knowledgebase_id).where(
                    knowledgebases.c.target == target, knowledgebases.c.name == name
                )
            ).first()
        return (row is not None, row[0] if row else None)

    @guarded("recording a knowledge base")
    def save_knowledgebase(self, target: str, name: str, kb_id: str | None) -> None:
        with self.engine.begin() as c:
            c.execute(knowledgebases.delete().where(knowledgebases.c.target == target, knowledgebases.c.name == name))
            c.execute(
                knowledgebases.insert(),
                {"target": target, "name": name, "knowledgebase_id": kb_id, "created_at": now()},
            )

    @guarded("forgetting a knowledge base")
    def documents_forget_knowledgebase(self, target: str, name: str) -> None:
        """A create MemOS refused or never received: made again by the next run."""
        with self.engine.begin() as c:
            c.execute(knowledgebases.delete().where(knowledgebases.c.target == target, knowledgebases.c.name == name))

    @guarded("reading documents")
    def documents(self, target: str, source: str, statuses: tuple[str, ...] = HELD) -> list[dict]:
        """The versions of a source's documents in these statuses, oldest first: the columns a
        run works with (ROW)."""
        with self.engine.connect() as c:
            rows = c.execute(
                sa.select(*(documents.c[k] for k in ROW))
                .where(documents.c.target == target, documents.c.source == source, documents.c.status.in_(statuses))
                .order_by(documents.c.sent_at, documents.c.path)
            ).all()
        return [dict(zip(ROW, r, strict=True)) for r in rows]

    @guarded("counting documents")
    def documents_count(self, target: str, source: str) -> dict[str, int]:
        """status -> versions of a source's documents in it."""
        with self.engine.connect() as c:
            rows = c.execute(
                sa.select(documents.c.status, sa.func.count())
                .where(documents.c.target == target, documents.c.source == source)
                .group_by(documents.c.status)
            ).all()
        return {st: int(n) for st, n in rows}

    @guarded("recording documents sent")
    def documents_sent(self, target: str, source: str, run_id: str, kb_id: str, files: list[dict]) -> None:
        """Before an upload: each file (path, sha256, size, name) `sent`."""
        t = now()
        with self.engine.begin() as c:
            c.execute(_BY_KEY_DELETE, [_keyed(target, source, f["path"], f["sha256"]) for f in files])
            c.execute(
                documents.insert(),
                [
                    {
                        "target": target,
                        "source": source,
                        "path": f["path"],
                        "sha256": f["sha256"],
                        "size": f["size"],
                        "name": f["name"],
                        "knowledgebase_id": kb_id,
                        "file_id": None,
                        "status": "sent",
                        "run_id": run_id,
                        "sent_at": t,
                        "updated_at": t,
                        "detail": None,
                    }
                    for f in files
                ],
            )

    @guarded("recording documents")
    def documents_update(self, target: str, source: str, changes: list[dict]) -> None:
        """Each change names a version (path, sha256) and the columns it sets (file_id, status,
        detail)."""
        if not changes:
            return
        t = now()
        groups: dict[tuple[str, ...], list[dict]] = {}  # one statement per set of columns, run for all
        for ch in changes:
            cols = tuple(k for k in ("file_id", "status", "detail") if k in ch)
            row = {**_keyed(target, source, ch["path"], ch["sha256"]), "u_at": t}
            groups.setdefault(cols, []).append(row | {f"v_{k}": ch[k] for k in cols})
        with self.engine.begin() as c:
            for cols, rows in groups.items():
                values: dict = {k: sa.bindparam(f"v_{k}") for k in cols} | {"updated_at": sa.bindparam("u_at")}
                c.execute(documents.update().where(*_BY_KEY).values(values), rows)

    @guarded("forgetting documents")
    def documents_forget(self, target: str, source: str, versions: list[tuple[str, str]]) -> None:
        """Versions never taken by MemOS (an unanswered upload found absent): sent again."""
        if not versions:
            return
        with self.engine.begin() as c:
            c.execute(_BY_KEY_DELETE, [_keyed(target, source, path, sha) for path, sha in versions])


#: the columns `documents()` gives
ROW = ("path", "sha256", "size", "name", "file_id", "status", "run_id")
#: one version by its key, as bound parameters: a statement compiled once and run for many rows
_BY_KEY = (
    documents.c.target == sa.bindparam("k_target"),
    documents.c.source == sa.bindparam("k_source"),
    documents.c.path == sa.bindparam("k_path"),
    documents.c.sha256 == sa.bindparam("k_sha"),
)
_BY_KEY_DELETE = documents.delete().where(*_BY_KEY)


def _keyed(target: str, source: str, path: str, sha: str) -> dict:
    return {"k_target": target, "k_source": source, "k_path": path, "k_sha": sha}
