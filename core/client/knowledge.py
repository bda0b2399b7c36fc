"""MemOS Cloud's knowledge bases: create one, upload files into it (base64 data URLs), list
its files with their parse status, delete files. None of it is idempotent: every upload is a
new file with a new id, so the caller records intent in the ledger first (core/ledger/documents.py).

Codes (MemOS Cloud docs, gathered in shared/memos-api.md): 40007 unsupported type, 40008/40009
bad content, 50103 more than 20 files, 50104 a file over 100 MB, 50105 an upload over 300 MB,
50107 invalid file, 50120 knowledge base not found, 50123 not linked to the project: each
refuses the request for good (TerminalBatchError), though 501xx sit in the server range."""

from __future__ import annotations

import base64

from core.client.http import HttpTarget

#: a refusal of the request itself, not a server failing: never retried
FINAL = frozenset({40007, 40008, 40009, 50103, 50104, 50105, 50107, 50120, 50123})
#: an upload's most (MemOS Cloud): files, and bytes of all its files together
UPLOAD_FILES = 20
UPLOAD_BYTES = 300 * 2**20
#: MemOS's parse statuses, compared in lower case (its docs spell them several ways)
DONE = {"completed": "completed", "success": "completed", "available": "completed", "failed": "failed"}


def data_url(media_type: str, data: bytes) -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode('ascii')}"


def create(target: HttpTarget, name: str, description: str = "") -> str:
    body = {"knowledgebase_name": name, "knowledgebase_description": description}
    data = target._post("/create/knowledgebase", body, writes=True, final=FINAL) or {}
    return str(data["id"])


def upload(target: HttpTarget, kb_id: str, files: list[dict]) -> list[dict]:
    """Upload files ({name, media_type, data}) in one request; MemOS's answer, one entry per
    file in order ({id, name, status, ...})."""
    body = {
        "knowledgebase_id": kb_id,
        "file": [
            {"name": f["name"], "type": "document", "content": data_url(f["media_type"], f["data"])} for f in files
        ],
    }
    data = target._post("/add/knowledgebase-file", body, writes=True, final=FINAL)
    answer = data if isinstance(data, list) else (data or {}).get("file_detail_list") or []
    if len(answer) != len(files):
        from core.errors import TransientError

        # the upload may have been stored: the caller settles it like an unanswered one
        raise TransientError(f"/add/knowledgebase-file: {len(answer)} files answered for {len(files)}", in_doubt=True)
    return [dict(a) for a in answer]


def listing(target: HttpTarget, kb_id: str, page_size: int = 100) -> list[dict]:
    """Every file of a knowledge base ({id, name, size, status, ...}), page by page."""
    out: list[dict] = []
    page = 1
    while True:
        body = {"knowledgebase_id": kb_id, "page": page, "page_size": page_size}
        data = target._post("/get/knowledgebase-file", body, writes=False, final=FINAL) or {}
        items = [dict(f) for f in data.get("file_detail_list") or []]
        out += items
        if len(items) < page_size or len(out) >= int(data.get("total") or 0):
            return out
        page += 1


def statuses(target: HttpTarget, file_ids: list[str]) -> dict[str, str]:
    """file id -> running | completed | failed (absent: MemOS no longer has it)."""
    out: dict[str, str] = {}
    for i in range(0, len(file_ids), 100):
        body = {"file_ids": file_ids[i : i + 100]}
        data = target._post("/get/knowledgebase-file", body, writes=False, final=FINAL) or {}
        for f in data.get("file_detail_list") or []:
            out[str(f["id"])] = DONE.get(str(f.get("status") or "").lower(), "running")
    return out


def delete(target: HttpTarget, file_ids: list[str]) -> None:
    for i in range(0, len(file_ids), 100):
        target._post("/delete/knowledgebase-file", {"file_ids": file_ids[i : i + 100]}, writes=True, final=FINAL)
