"""MemOS Cloud's knowledge bases (memos-api.md, "Documents"): the routes, their limits and codes,
the files' parsing, and what the dev-server holds of them.

Routes, all `POST`, with the cloud's envelope, API key and faults:
`create/knowledgebase` `{knowledgebase_name, knowledgebase_description?}` -> `{id}`;
`delete/knowledgebase` `{knowledgebase_id}` -> `{success}` (unlinked: later calls naming it
answer 50123); `add/knowledgebase-file` `{knowledgebase_id, file: [{name?, type?, content}]}` ->
`[{id, type, name, sizeMB, status: "running"}]`, a new id for every file of every upload (no
de-duplication, as MemOS); `get/knowledgebase-file` `{knowledgebase_id, type?, page, page_size}`
or `{file_ids}` -> `{total, page, page_size, file_detail_list: [{id, type, name, size, status}]}`
(`size` in bytes); `delete/knowledgebase-file` `{file_ids}` -> `{success}`.

An upload is checked whole before anything is stored, and refused whole (nothing stored) at its
first problem: 50120 unknown knowledge base (50123 a deleted one); 50103 more files than
`Faults.max_files_per_upload`; per file, 40009 a content neither an http(s) URL nor a data URL,
40008 a data URL that is not valid base64, 40007 a type other than PDF, DOCX, DOC, TXT, JSON,
MD, XML, 50104 a file over `max_file_bytes`; then 50105 the files together over
`max_upload_bytes`. A data URL's bytes are decoded and kept (with their sha256); a URL is kept as
given, not fetched (size 0). Limits and parsing are set like every fault: `POST /_dev/faults`.

Parsing: a file is `running` in the upload's answer and for `Faults.parse_polls` answers of
`get/knowledgebase-file` that list it, and at least `parse_seconds` after its upload (both 0 by
default: the first poll finds it done); then `failed` if its name matches one of
`parse_fail_names` (fnmatch globs, e.g. `["*broken*"]`) or its bytes contain `PARSE_FAILS`,
else `completed`.

Faults: `create/knowledgebase` and `add/knowledgebase-file`, the two writes that are not
idempotent, go through `adds.faulted` as message adds do: scripted entries (`{"drop": true}`,
`{"hang": s}`, `{"commit_then_fail": true}`: the upload stored, its answer lost; an entry with
`"route": "/add/knowledgebase-file"` is kept for the upload), `error_rate`,
`commit_then_fail_rate`, `drop_rate`, and the `rps` limit (40300). The deletes honour
`deletes_linger`; every route has the latency and the API key.

What it holds, for tests: `GET /_dev/knowledgebases` (each knowledge base with every file ever
uploaded to it, deleted ones marked) and `GET /_dev/knowledgebase-file/{id}` (a file's bytes).
`search/memory` with `knowledgebase_ids` (a list, or "all") also matches words in the completed
text files (MD, TXT, JSON, XML) of those knowledge bases, paragraph by paragraph.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import hashlib
import posixpath
import time
import urllib.parse
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from memos_etl.devserver.adds import faulted
from memos_etl.devserver.state import Dev, Server, envelope
from memos_etl.devserver.store import Store

router = APIRouter()

# codes, as MemOS Cloud documents them
E_BAD_REQUEST, E_MISSING_FIELD = 40000, 40001
E_UNSUPPORTED_TYPE, E_BAD_BASE64, E_BAD_CONTENT = 40007, 40008, 40009
E_TOO_MANY_FILES, E_FILE_TOO_LARGE, E_UPLOAD_TOO_LARGE = 50103, 50104, 50105
E_KB_NOT_FOUND, E_KB_NOT_LINKED = 50120, 50123

#: the types MemOS reads, by extension; a file's type is its name's extension (the name given,
#: else the URL's last segment); only a name without an extension is typed by its data URL's
#: media type (so `notes.md` sent as application/octet-stream is Markdown, and `page.html` is
#: refused whatever its media type says)
TYPES = {"pdf", "docx", "doc", "txt", "json", "md", "xml"}
MEDIA_TYPES = {
    "application/pdf": "pdf",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "application/msword": "doc",
    "text/plain": "txt",
    "application/json": "json",
    "text/markdown": "md",
    "text/x-markdown": "md",
    "application/xml": "xml",
    "text/xml": "xml",
}
TEXT_TYPES = {"txt", "json", "md", "xml"}  # what search/memory reads of a knowledge base
FILE_KINDS = ("document", "skill")
#: bytes that make a file's parse fail (put them in a test document)
PARSE_FAILS = b"MEMOS-DEV-PARSE-FAILS"
MB = 2**20


class Knowledge:
    """The knowledge bases and their files, in the store's SQLite database."""

    def __init__(self, store: Store):
        self.store = store
        with store.lock:
            store.db.executescript("""
                CREATE TABLE IF NOT EXISTS knowledgebases (
                    id TEXT PRIMARY KEY, name TEXT, description TEXT, created_at REAL,
                    deleted INTEGER DEFAULT 0);
                CREATE TABLE IF NOT EXISTS knowledgebase_files (
                    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE, knowledgebase_id TEXT,
                    upload_id TEXT, type TEXT, name TEXT, ext TEXT, media_type TEXT, url TEXT,
                    size INTEGER, sha256 TEXT, content BLOB, status TEXT, polls INTEGER DEFAULT 0,
                    created_at REAL, deleted INTEGER DEFAULT 0);
            """)

    def clear(self) -> None:
        with self.store.lock, self.store.db:
            self.store.db.execute("DELETE FROM knowledgebases")
            self.store.db.execute("DELETE FROM knowledgebase_files")

    def linked(self, kb_id: Any) -> tuple[int, str] | None:
        """Why `kb_id` cannot be used (50120 unknown, 50123 deleted); None: it can."""
        rows = self.store.query("SELECT deleted FROM knowledgebases WHERE id=?", (str(kb_id),))
        if not rows:
            return E_KB_NOT_FOUND, f"knowledge base {kb_id!r} not found"
        if rows[0][0]:
            return E_KB_NOT_LINKED, f"knowledge base {kb_id!r} is not linked to the project"
        return None

    def create(self, name: str, description: str) -> str:
        kb_id = str(uuid.uuid4())
        self.store.execute(
            "INSERT INTO knowledgebases (id, name, description, created_at) VALUES (?,?,?,?)",
            (kb_id, name, description, time.time()),
        )
        return kb_id

    def add(self, kb_id: str, files: list[dict]) -> list[dict]:
        """Store one upload's checked files, each under a new id; the upload's answer."""
        upload, now = uuid.uuid4().hex, time.time()
        rows = [(str(uuid.uuid4()), f) for f in files]
        with self.store.lock, self.store.db:
            self.store.db.executemany(
                "INSERT INTO knowledgebase_files (id, knowledgebase_id, upload_id, type, name, ext, "
                "media_type, url, size, sha256, content, status, created_at) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,'running',?)",
                [
                    (
                        fid,
                        kb_id,
                        upload,
                        f["type"],
                        f["name"],
                        f["ext"],
                        f["media_type"],
                        f["url"],
                        len(f["bytes"]),
                        hashlib.sha256(f["bytes"]).hexdigest(),
                        f["bytes"],
                        now,
                    )
                    for fid, f in rows
                ],
            )
        return [answered(fid, f) for fid, f in rows]

    def settle(self, faults, ids: list[str], poll: bool) -> dict[str, str]:
        """The parse status of the files `ids` now, ending the parses that are due; `poll`: this
        is an answer of get/knowledgebase-file, which counts toward `parse_polls`."""
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = self.store.query(
            f"SELECT id, name, status, polls, created_at, instr(content, ?) > 0 FROM knowledgebase_files "
            f"WHERE id IN ({marks})",
            [PARSE_FAILS, *ids],
        )
        now, status, ended, polled = time.time(), {}, [], []
        for fid, name, state, polls, created, marked in rows:
            if state == "running" and polls >= faults.parse_polls and now - created >= faults.parse_seconds:
                fails = marked or any(fnmatch.fnmatchcase(name, g) for g in faults.parse_fail_names)
                state = "failed" if fails else "completed"
                ended.append((state, fid))
            elif state == "running" and poll:
                polled.append((fid,))
            status[fid] = state
        with self.store.lock, self.store.db:
            self.store.db.executemany("UPDATE knowledgebase_files SET status=? WHERE id=?", ended)
            self.store.db.executemany("UPDATE knowledgebase_files SET polls=polls+1 WHERE id=?", polled)
        return status

    def held(self, faults) -> list[dict]:
        """Every knowledge base with every file uploaded to it (deleted ones too, marked)."""
        files: dict[str, list[dict]] = {}
        rows = self.store.query(
            "SELECT id, knowledgebase_id, upload_id, type, name, media_type, url, size, sha256, status, polls, "
            "created_at, deleted FROM knowledgebase_files ORDER BY seq"
        )
        status = self.settle(faults, [r[0] for r in rows], poll=False)
        for fid, kb, upload, kind, name, media, url, size, sha, _, polls, at, deleted in rows:
            files.setdefault(kb, []).append(
                {
                    "id": fid,
                    "upload_id": upload,
                    "type": kind,
                    "name": name,
                    "media_type": media,
                    "url": url,
                    "size": size,
                    "sha256": sha,
                    "status": status[fid],
                    "polls": polls,
                    "created_at": at,
                    "deleted": bool(deleted),
                }
            )
        kbs = self.store.query("SELECT id, name, description, created_at, deleted FROM knowledgebases ORDER BY rowid")
        return [
            {
                "id": i,
                "name": n,
                "description": d,
                "created_at": at,
                "deleted": bool(gone),
                "files": files.get(i, []),
            }
            for i, n, d, at, gone in kbs
        ]

    def search(self, faults, kb_ids: Any, query: str) -> list[dict]:
        """Word-overlap search, paragraph by paragraph, of the completed text files of the
        knowledge bases `kb_ids` (a list, or "all": every linked one), as store.search does for
        messages."""
        sql = (
            "SELECT f.id, f.knowledgebase_id, f.name, f.content FROM knowledgebase_files f "
            "JOIN knowledgebases k ON k.id = f.knowledgebase_id WHERE f.deleted = 0 AND k.deleted = 0 "
            f"AND f.ext IN ({','.join('?' * len(TEXT_TYPES))})"
        )
        args: list = sorted(TEXT_TYPES)
        if kb_ids != "all":
            ids = [str(i) for i in kb_ids or []]
            if not ids:
                return []
            sql += f" AND f.knowledgebase_id IN ({','.join('?' * len(ids))})"
            args += ids
        rows = self.store.query(sql, args)
        done = self.settle(faults, [r[0] for r in rows], poll=False)
        words = [w for w in str(query).lower().split() if len(w) > 2]
        hits = []
        for fid, kb, name, content in rows:
            if done[fid] != "completed":
                continue
            for para in bytes(content).decode("utf-8", errors="replace").split("\n\n"):
                score = sum(w in para.lower() for w in words)
                if score and para.strip():
                    hits.append(
                        {
                            "memory_key": name,
                            "memory_value": para.strip(),
                            "knowledgebase_id": kb,
                            "file_id": fid,
                            "relativity": score / max(1, len(words)),
                        }
                    )
        return hits


def answered(fid: str, f: dict) -> dict:
    """A stored file as add/knowledgebase-file answers it."""
    size_mb = round(len(f["bytes"]) / MB, 6)
    return {"id": fid, "type": f["type"], "name": f["name"], "sizeMB": size_mb, "status": "running"}


async def knowledge(request: Request) -> Knowledge:
    """The app's knowledge bases (a FastAPI dependency, async as `state.server` is)."""
    return request.app.state.knowledge


Kb = Annotated[Knowledge, Depends(knowledge)]  # a route's `kb: Kb` parameter


def refused(srv: Server, route: str, code: int, message: str) -> JSONResponse:
    """A request refused by its checks (HTTP 400 with MemOS's code), counted in the hits."""
    srv.store.hit(route, 400, code)
    return envelope(code, message, status=400)


async def body_of(request: Request) -> dict | None:
    try:
        body = await request.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def decoded(i: int, item: Any, faults) -> dict | tuple[int, str]:
    """One entry of an upload's `file` list, checked and decoded: {type, name, ext, media_type,
    url, bytes}, or why it is refused (code, message)."""
    if not isinstance(item, dict):
        return E_BAD_REQUEST, f"file[{i}] is not an object"
    kind = item.get("type") or "document"
    if kind not in FILE_KINDS:
        return E_BAD_REQUEST, f"file[{i}].type must be one of {FILE_KINDS}"
    content, name = item.get("content"), item.get("name")
    if name is not None and not isinstance(name, str):
        return E_BAD_REQUEST, f"file[{i}].name must be a string"
    if not isinstance(content, str) or not content:
        return E_BAD_CONTENT, f"file[{i}].content is required: a URL or a base64 data URL"
    media, url, data = "", None, b""
    if content.startswith("data:"):
        head, comma, payload = content[5:].partition(",")
        if not comma or not head.endswith(";base64"):
            return E_BAD_BASE64, f"file[{i}].content is a data URL without ;base64"
        media = head[: -len(";base64")].split(";")[0].strip().lower()
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            return E_BAD_BASE64, f"file[{i}].content is not valid base64"
    elif urllib.parse.urlsplit(content).scheme in ("http", "https"):
        url = content
    else:
        return E_BAD_CONTENT, f"file[{i}].content is neither a URL nor a base64 data URL"
    if not name:
        segment = posixpath.basename(urllib.parse.urlsplit(url).path) if url else ""
        suffix = f".{MEDIA_TYPES[media]}" if media in MEDIA_TYPES else ""
        name = urllib.parse.unquote(segment) or f"file-{i + 1}{suffix}"
    ext = posixpath.splitext(name)[1].lstrip(".").lower() or MEDIA_TYPES.get(media, "")
    if ext not in TYPES:
        return E_UNSUPPORTED_TYPE, f"file[{i}] {name!r}: unsupported type (PDF, DOCX, DOC, TXT, JSON, MD, XML)"
    if len(data) > faults.max_file_bytes:
        return E_FILE_TOO_LARGE, f"file[{i}] {name!r}: {len(data)} bytes, more than {faults.max_file_bytes}"
    return {"type": kind, "name": name, "ext": ext, "media_type": media or None, "url": url, "bytes": data}


@router.post("/create/knowledgebase")
async def create_knowledgebase(request: Request, srv: Dev, kb: Kb) -> Response:
    route = request.url.path
    if answer := await srv.gate(request, latency=True, slow=True):
        return answer
    body = await body_of(request)
    if body is None:
        return refused(srv, route, E_BAD_REQUEST, "body must be a JSON object")
    name, description = body.get("knowledgebase_name"), body.get("knowledgebase_description") or ""
    if not isinstance(name, str) or not name.strip():
        return refused(srv, route, E_MISSING_FIELD, "knowledgebase_name is required")
    if not isinstance(description, str):
        return refused(srv, route, E_BAD_REQUEST, "knowledgebase_description must be a string")

    def commit(real: bool) -> str:
        return kb.create(name, description) if real else str(uuid.uuid4())

    return await faulted(srv, route, 0, commit, lambda kb_id, msg: envelope(0, msg, {"id": kb_id}))


@router.post("/delete/knowledgebase")
async def delete_knowledgebase(request: Request, srv: Dev, kb: Kb) -> Response:
    if answer := await srv.gate(request, latency=True):
        return answer
    body = await body_of(request) or {}
    if not body.get("knowledgebase_id"):
        return envelope(E_MISSING_FIELD, "knowledgebase_id is required", status=400)
    if bad := kb.linked(body["knowledgebase_id"]):
        return envelope(bad[0], bad[1], status=400)
    if not srv.faults.deletes_linger:
        kb.store.execute("UPDATE knowledgebases SET deleted=1 WHERE id=?", (str(body["knowledgebase_id"]),))
    return envelope(0, "ok", {"success": True})


@router.post("/add/knowledgebase-file")
async def add_knowledgebase_file(request: Request, srv: Dev, kb: Kb) -> Response:
    route, faults = request.url.path, srv.faults
    if answer := await srv.gate(request, latency=True, slow=True):
        return answer
    body = await body_of(request)
    if body is None:
        return refused(srv, route, E_BAD_REQUEST, "body must be a JSON object")
    if not body.get("knowledgebase_id"):
        return refused(srv, route, E_MISSING_FIELD, "knowledgebase_id is required")
    if bad := kb.linked(body["knowledgebase_id"]):
        return refused(srv, route, *bad)
    items = body.get("file")
    if not isinstance(items, list) or not items:
        return refused(srv, route, E_MISSING_FIELD, "file must be a non-empty list")
    if len(items) > faults.max_files_per_upload:
        return refused(srv, route, E_TOO_MANY_FILES, f"{len(items)} files, more than {faults.max_files_per_upload}")
    files = []
    for i, item in enumerate(items):
        f = decoded(i, item, faults)
        if isinstance(f, tuple):
            return refused(srv, route, *f)
        files.append(f)
    total = sum(len(f["bytes"]) for f in files)
    if total > faults.max_upload_bytes:
        return refused(srv, route, E_UPLOAD_TOO_LARGE, f"upload of {total} bytes, more than {faults.max_upload_bytes}")
    kb_id = str(body["knowledgebase_id"])

    def commit(real: bool) -> list[dict]:
        return kb.add(kb_id, files) if real else [answered(str(uuid.uuid4()), f) for f in files]

    return await faulted(srv, route, 0, commit, lambda listed, msg: envelope(0, msg, listed))


@router.post("/get/knowledgebase-file")
async def get_knowledgebase_file(request: Request, srv: Dev, kb: Kb) -> Response:
    if answer := await srv.gate(request, latency=True):
        return answer
    body = await body_of(request)
    if body is None:
        return envelope(E_BAD_REQUEST, "body must be a JSON object", status=400)
    kb_id, file_ids = body.get("knowledgebase_id"), body.get("file_ids")
    if bool(kb_id) == (file_ids is not None):
        return envelope(E_BAD_REQUEST, "give either knowledgebase_id or file_ids, not both or neither", status=400)
    sql = "SELECT id, type, name, size FROM knowledgebase_files WHERE deleted=0"
    args: list = []
    page, size = 1, None
    if file_ids is not None:
        if not isinstance(file_ids, list) or not all(isinstance(i, str) for i in file_ids):
            return envelope(E_BAD_REQUEST, "file_ids must be a list of strings", status=400)
        sql += f" AND id IN ({','.join('?' * len(file_ids))})"
        args += file_ids
    else:
        if bad := kb.linked(kb_id):
            return envelope(bad[0], bad[1], status=400)
        sql, args = sql + " AND knowledgebase_id=?", [str(kb_id)]
        if body.get("type") is not None:
            if body["type"] not in FILE_KINDS:
                return envelope(E_BAD_REQUEST, f"type must be one of {FILE_KINDS}", status=400)
            sql, args = sql + " AND type=?", args + [body["type"]]
        try:
            page, size = int(body.get("page") or 1), int(body.get("page_size") or 20)
        except (TypeError, ValueError):
            return envelope(E_BAD_REQUEST, "page and page_size must be integers", status=400)
        if page < 1 or size < 1:
            return envelope(E_BAD_REQUEST, "page and page_size start at 1", status=400)
    rows = kb.store.query(sql + " ORDER BY seq", args)
    total = len(rows)
    if size is not None:
        rows = rows[(page - 1) * size : page * size]
    status = kb.settle(srv.faults, [r[0] for r in rows], poll=True)
    listed = [{"id": i, "type": t, "name": n, "size": s, "status": status[i]} for i, t, n, s in rows]
    return envelope(0, "ok", {"total": total, "page": page, "page_size": size or total, "file_detail_list": listed})


@router.post("/delete/knowledgebase-file")
async def delete_knowledgebase_file(request: Request, srv: Dev, kb: Kb) -> Response:
    if answer := await srv.gate(request, latency=True):
        return answer
    body = await body_of(request) or {}
    ids = body.get("file_ids")
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
        return envelope(E_MISSING_FIELD, "file_ids must be a non-empty list of strings", status=400)
    if not srv.faults.deletes_linger:
        kb.store.execute(f"UPDATE knowledgebase_files SET deleted=1 WHERE id IN ({','.join('?' * len(ids))})", ids)
    return envelope(0, "ok", {"success": True})


control = APIRouter(prefix="/_dev")  # not part of MemOS: what tests read


@control.get("/knowledgebases")
async def held(srv: Dev, kb: Kb):
    return kb.held(srv.faults)


@control.get("/knowledgebase-file/{file_id}")
async def file_bytes(file_id: str, kb: Kb) -> Response:
    rows = kb.store.query("SELECT content, media_type FROM knowledgebase_files WHERE id=?", (file_id,))
    if not rows:
        return JSONResponse({"error": f"no file {file_id!r}"}, status_code=404)
    return Response(bytes(rows[0][0]), media_type=rows[0][1] or "application/octet-stream")


def search_hits(srv: Server, kb: Knowledge, body: dict) -> list[dict]:
    """search/memory's hits in the knowledge bases its `knowledgebase_ids` names (none when absent)."""
    ids = body.get("knowledgebase_ids")
    return kb.search(srv.faults, ids, body.get("query", "")) if ids else []
