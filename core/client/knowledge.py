"""Knowledge bases: where a documents source's files go, one `KnowledgeBase` per target kind.

MemOS Cloud's (`CloudKnowledgeBase`): create one, upload files into it (base64 data URLs), list
its files with their parse status, delete files. None of it is idempotent: every upload is a
new file with a new id, so the caller records intent in the ledger first (core/ledger/documents.py)
and settles an unanswered upload by looking for it (`find`) before anything is sent again.

Codes (MemOS Cloud docs, gathered in shared/memos-api.md): 40007 unsupported type, 40008/40009
bad content, 50103 more than 20 files, 50104 a file over 100 MB, 50105 an upload over 300 MB,
50107 invalid file, 50120 knowledge base not found, 50123 not linked to the project: each
refuses the request for good (TerminalBatchError), though 501xx sit in the server range."""

from __future__ import annotations

import base64
from typing import Protocol

from core.client.http import HttpTarget
from core.errors import TransientError

#: a refusal of the request itself, not a server failing: never retried
FINAL = frozenset({40007, 40008, 40009, 50103, 50104, 50105, 50107, 50120, 50123})
#: an upload's most (MemOS Cloud): files, and bytes of all its files together
UPLOAD_FILES = 20
UPLOAD_BYTES = 300 * 2**20
#: MemOS's parse statuses, compared in lower case (its docs spell them several ways)
DONE = {"completed": "completed", "success": "completed", "available": "completed", "failed": "failed"}


def data_url(media_type: str, data: bytes) -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode('ascii')}"


def status_of(answer: dict) -> str:
    """running | completed | failed, from an answer's status however MemOS spells it."""
    return DONE.get(str(answer.get("status") or "").lower(), "running")


class KnowledgeBase(Protocol):
    """What a documents run needs of the place its files go."""

    id: str
    requests: int  # requests sent so far (an upload is one on the cloud, one per file self-hosted)

    def upload(self, files: list[dict]) -> list[dict]:
        """Files ({path, sha256, name, media_type, data, size}) in one call; per file, in order,
        {id, status}, and `refused` (the reason) for a file refused while others were taken."""
        ...

    def find(self, sent: list[dict], taken: set[str]) -> dict[int, dict]:
        """Of versions sent without an answer ({path, sha256, name, size}), the ones the
        knowledge base holds (by their place in `sent`): {id, status}; `taken` ids belong to
        other versions."""
        ...

    def statuses(self, file_ids: list[str]) -> dict[str, str]:
        """file id -> running | completed | failed (absent: no longer held)."""
        ...

    def delete(self, file_ids: list[str]) -> None: ...

    def held(self) -> list[dict] | None:
        """Every live file ({id, name, size, status}), or None where the target cannot list them."""
        ...

    def search(self, user_id: str, query: str, limit: int = 6) -> list[dict]:
        """Memories of the knowledge base matching `query` ({memory_value, ...})."""
        ...


def create(target: HttpTarget, name: str, description: str = "") -> str:
    """A new knowledge base's id (MemOS Cloud: two creates of one name are two of them)."""
    body = {"knowledgebase_name": name, "knowledgebase_description": description}
    data = target._post("/create/knowledgebase", body, writes=True, final=FINAL) or {}
    return str(data["id"])


class CloudKnowledgeBase:
    """A MemOS Cloud knowledge base, by its id."""

    def __init__(self, target: HttpTarget, kb_id: str):
        self.target, self.id = target, kb_id
        self.requests = 0

    def upload(self, files: list[dict]) -> list[dict]:
        body = {
            "knowledgebase_id": self.id,
            "file": [
                {"name": f["name"], "type": "document", "content": data_url(f["media_type"], f["data"])} for f in files
            ],
        }
        self.requests += 1
        data = self.target._post("/add/knowledgebase-file", body, writes=True, final=FINAL)
        answer = data if isinstance(data, list) else (data or {}).get("file_detail_list") or []
        if len(answer) != len(files):
            # the upload may have been stored: the caller settles it like an unanswered one
            raise TransientError(
                f"/add/knowledgebase-file: {len(answer)} files answered for {len(files)}", in_doubt=True
            )
        return [{"id": str(a["id"]), "status": status_of(a)} for a in answer]

    def listing(self, page_size: int = 100) -> list[dict]:
        """Every file of the knowledge base ({id, name, size, status, ...}), page by page."""
        out: list[dict] = []
        page = 1
        while True:
            body = {"knowledgebase_id": self.id, "page": page, "page_size": page_size}
            data = self.target._post("/get/knowledgebase-file", body, writes=False, final=FINAL) or {}
            items = [dict(f) for f in data.get("file_detail_list") or []]
            out += items
            if len(items) < page_size or len(out) >= int(data.get("total") or 0):
                return out
            page += 1

    def held(self) -> list[dict] | None:
        return [{**f, "id": str(f["id"]), "status": status_of(f)} for f in self.listing()]

    def search(self, user_id: str, query: str, limit: int = 6) -> list[dict]:
        body = {"user_id": user_id, "query": query, "knowledgebase_ids": [self.id], "memory_limit_number": limit}
        data = self.target._post("/search/memory", body, writes=False, final=FINAL) or {}
        return list(data.get("memory_detail_list") or [])

    def find(self, sent: list[dict], taken: set[str]) -> dict[int, dict]:
        """By name and size (all MemOS keeps of a file that says which it is), each held file
        taken once."""
        files = self.listing()
        taken = set(taken)
        out: dict[int, dict] = {}
        for i, r in enumerate(sent):
            for f in files:
                fid = str(f["id"])
                if fid not in taken and f.get("name") == r["name"] and int(f.get("size") or -1) == r["size"]:
                    taken.add(fid)
                    out[i] = {"id": fid, "status": status_of(f)}
                    break
        return out

    def statuses(self, file_ids: list[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for i in range(0, len(file_ids), 100):
            body = {"file_ids": file_ids[i : i + 100]}
            data = self.target._post("/get/knowledgebase-file", body, writes=False, final=FINAL) or {}
            for f in data.get("file_detail_list") or []:
                out[str(f["id"])] = status_of(f)
        return out

    def delete(self, file_ids: list[str]) -> None:
        for i in range(0, len(file_ids), 100):
            body = {"file_ids": file_ids[i : i + 100]}
            self.target._post("/delete/knowledgebase-file", body, writes=True, final=FINAL)
