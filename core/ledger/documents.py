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
        """The versions of a source's documents in these statuses, oldest first."""
        with self.engine.connect() as c:
            rows = c.execute(
                sa.select(documents)
                .where(documents.c.target == target, documents.c.source == source, documents.c.status.in_(statuses))
                .order_by(documents.c.sent_at, documents.c.path)
            ).mappings()
            return [dict(r) for r in rows]

    @guarded("recording documents sent")
    def documents_sent(self, target: str, source: str, run_id: str, kb_id: str, files: list[dict]) -> None:
        """Before an upload: each file (path, sha256, size, name) `sent`."""
        t = now()
        with self.engine.begin() as c:
            for f in files:
                c.execute(documents.delete().where(*_key(target, source, f["path"], f["sha256"])))
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
        t = now()
        with self.engine.begin() as c:
            for ch in changes:
                values = {k: ch[k] for k in ("file_id", "status", "detail") if k in ch}
                c.execute(
                    documents.update()
                    .where(*_key(target, source, ch["path"], ch["sha256"]))
                    .values(**values, updated_at=t)
                )

    @guarded("forgetting documents")
    def documents_forget(self, target: str, source: str, versions: list[tuple[str, str]]) -> None:
        """Versions never taken by MemOS (an unanswered upload found absent): sent again."""
        with self.engine.begin() as c:
            for path, sha in versions:
                c.execute(documents.delete().where(*_key(target, source, path, sha)))


def _key(target: str, source: str, path: str, sha: str) -> list:
    return [
        documents.c.target == target,
        documents.c.source == source,
        documents.c.path == path,
        documents.c.sha256 == sha,
    ]
