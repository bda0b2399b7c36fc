"""What a documents source's ledger says against what its knowledge base holds: `verify` (every
delivered file there, parsed and once), `rollback` of one documents run, and the knowledge base
a source or a name stands for (read only: a run creates it, these never do)."""

from __future__ import annotations

from collections import Counter

from core.client import knowledge
from core.config import Mapping, RunConfig
from core.errors import OperationError, SourceError, TargetError
from core.ledger import Ledger

#: the statuses of a version MemOS was given and still holds
DELIVERED = ("running", "completed", "failed")


def open_knowledgebase(cfg: RunConfig, ledger: Ledger, target, mapping: Mapping, create: bool = False):
    """The knowledge base of a documents mapping: given by id, known to the ledger by its name,
    or (`create`: a sync) created now. The create is recorded first, so one with no answer is
    not repeated blindly: MemOS has no call that lists knowledge bases."""
    docs = mapping.documents
    assert docs is not None  # a documents source
    if target.kind != "cloud" or docs.knowledgebase_id or not create:
        return by_name(cfg, ledger, target, docs.key, docs)
    known, kb_id = ledger.knowledgebase(cfg.target.ledger_name, docs.key)
    if kb_id:
        return knowledge.CloudKnowledgeBase(target, kb_id)
    if known:
        raise SourceError(
            mapping.source.name,
            f"knowledge base {docs.knowledgebase}",
            "a run created it and got no answer, and MemOS cannot list knowledge bases to find it: "
            "look it up in the MemOS console and set documents.knowledgebase_id",
        )
    assert docs.knowledgebase is not None  # no id given: the config requires the name
    ledger.save_knowledgebase(cfg.target.ledger_name, docs.key, None)
    try:
        kb_id = knowledge.create(target, docs.knowledgebase, docs.description)
    except TargetError as exc:
        if not getattr(exc, "in_doubt", False):  # never made: the next run creates it
            ledger.documents_forget_knowledgebase(cfg.target.ledger_name, docs.key)
        raise
    ledger.save_knowledgebase(cfg.target.ledger_name, docs.key, kb_id)
    return knowledge.CloudKnowledgeBase(target, kb_id)


def by_name(cfg: RunConfig, ledger: Ledger, target, name: str, docs=None) -> knowledge.KnowledgeBase:
    """A knowledge base by its name as the ledger keeps it (a run created it; `id:<id>` for one
    given by id); on a self-hosted server, the cube of that name. `docs`: the mapping's section,
    when there is one (its id, and its self-hosted settings)."""
    if target.kind != "cloud":
        from core.client.knowledge_self_hosted import open_self_hosted
        from core.config.documents import DocumentsConfig

        return open_self_hosted(target, docs or DocumentsConfig(knowledgebase=name))
    if docs is not None and docs.knowledgebase_id:
        return knowledge.CloudKnowledgeBase(target, docs.knowledgebase_id)
    _, kb_id = ledger.knowledgebase(cfg.target.ledger_name, name)
    if not kb_id:
        raise OperationError(
            f"no knowledge base {name!r} in the ledger for {cfg.target.ledger_name}: a documents sync creates it "
            "(or give its id)"
        )
    return knowledge.CloudKnowledgeBase(target, kb_id)


def verify(mapping: Mapping, cfg: RunConfig, target) -> dict:
    """Every delivered version: still held, parsed (completed), and held once. Findings per
    file; `status` clean or findings."""
    assert mapping.documents is not None  # a documents source
    name, target_name = mapping.source.name, cfg.target.ledger_name
    ledger = Ledger(cfg.state.ledger())
    try:
        kb = open_knowledgebase(cfg, ledger, target, mapping)
        rows = ledger.documents(target_name, name, DELIVERED)
        in_doubt = ledger.documents(target_name, name, ("sent",))
    finally:
        ledger.close()
    now = kb.statuses([r["file_id"] for r in rows])
    listing = kb.held()
    names = Counter(f.get("name") for f in listing) if listing is not None else Counter()
    findings: list[dict] = []
    by: Counter[str] = Counter()
    for r in rows:
        status = now.get(r["file_id"])
        by[status or "missing"] += 1
        if status is None:
            findings.append({"path": r["path"], "file_id": r["file_id"], "finding": "missing from the knowledge base"})
        elif status == "failed":
            findings.append({"path": r["path"], "file_id": r["file_id"], "finding": "MemOS could not parse it"})
        elif status == "running":
            findings.append({"path": r["path"], "file_id": r["file_id"], "finding": "still parsing"})
        if listing is not None and names[r["name"]] > 1:
            findings.append({"path": r["path"], "file_id": r["file_id"], "finding": f"held {names[r['name']]} times"})
    return {
        "source": name,
        "target": target_name,
        "knowledgebase": kb.id,
        "files": len(rows),
        "by_status": dict(by),
        "in_doubt": len(in_doubt),
        "findings": findings,
        "status": "clean" if not findings and not in_doubt else "findings",
    }


def rollback(cfg: RunConfig, run: dict, target) -> dict:
    """Undo one documents run: the files it uploaded deleted there and forgotten by the ledger,
    its files read again by the next sync. Versions it replaced stay deleted: the next sync
    uploads the files as the source holds them then."""
    if run["status"] in ("running", "rolled_back"):
        raise OperationError(f"run {run['run_id']} is {run['status'].replace('_', ' ')}")
    target_name = cfg.target.ledger_name
    mapping = cfg.mapping(run["source"])
    if mapping.documents is None:
        raise OperationError(f"source {run['source']} is not a documents source")
    ledger = Ledger(cfg.state.ledger())
    try:
        kb = open_knowledgebase(cfg, ledger, target, mapping)
        mine = [
            r
            for r in ledger.documents(target_name, run["source"], ("sent", *DELIVERED))
            if r["run_id"] == run["run_id"]
        ]
        ids = [r["file_id"] for r in mine if r["file_id"]]
        if ids:
            kb.delete(ids)
        ledger.documents_forget(target_name, run["source"], [(r["path"], r["sha256"]) for r in mine])
        files = ledger.forget_units_of_run(run["source"], target_name, run["run_id"])
        ledger.set_run_status(run["run_id"], "rolled_back")
    finally:
        ledger.close()
    return {"run_id": run["run_id"], "source": run["source"], "files_deleted": len(ids), "files_forgotten": files}


def erasure_scope(source: str, path: str) -> tuple[str, str]:
    """The erasure record's (user_id, conversation_id) of one document: the source, and its path
    (a path longer than the column, by its hash)."""
    import hashlib

    key = path if len(path) <= 128 else "sha256:" + hashlib.sha256(path.encode()).hexdigest()[:40]
    return f"~documents:{source}", key


def erased_paths(ledger: Ledger, source: str) -> set[str]:
    """The erasure scopes of a documents source's erased files (conversation ids of its scope)."""
    user = f"~documents:{source}"
    return {cid for u, cid in ledger.erased()[1] if u == user}


def erase(cfg: RunConfig, mapping: Mapping, path: str, target) -> dict:
    """Erase one document for good: recorded first (no later run of the source uploads that
    path again), then every version of it deleted in the knowledge base and forgotten."""
    assert mapping.documents is not None  # a documents source
    name, target_name = mapping.source.name, cfg.target.ledger_name
    ledger = Ledger(cfg.state.ledger())
    try:
        erasure = ledger.start_erasure(*erasure_scope(name, path), target_name)
        kb = open_knowledgebase(cfg, ledger, target, mapping)
        mine = [r for r in ledger.documents(target_name, name, ("sent", *DELIVERED)) if r["path"] == path]
        ids = [r["file_id"] for r in mine if r["file_id"]]
        if ids:
            kb.delete(ids)
        ledger.documents_forget(target_name, name, [(r["path"], r["sha256"]) for r in mine])
        ledger.forget_units(name, target_name, [path])
        ledger.finish_erasure(erasure, len(ids), 0)
    finally:
        ledger.close()
    return {"erasure_id": erasure, "path": path, "files_deleted": len(ids), "versions_forgotten": len(mine)}
