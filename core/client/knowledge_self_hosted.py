"""The open-source MemOS server's stand-in for a knowledge base (issue 40, item 5).

The server (MemoryOS 2.0.33) has no knowledge-base or upload route. What it has:
- a file goes in as a message part of `/product/add`,
  `{"type": "file", "file": {"file_data", "file_id", "filename"}}`; only an http(s) URL in
  `file_data` is read (downloaded, `.md`/`.txt` kept as text, others through MarkItDown),
  base64 is not decoded and local paths are not read;
- every memory made from it carries `metadata.file_ids == [file_id]` and `info.file_id`, the
  `file_id` being whatever the request said;
- `/product/delete_memory` deletes by `file_ids`, within `writable_cube_ids`;
- a cube (`writable_cube_ids`; the storage partition, `user_name` in its graph store) is the
  nearest thing to a knowledge base.

So here: the knowledge base is a cube; each file version gets a `file_id` of memos-etl's own
making (from the cube, the file's path and its sha256), known before anything is sent, so an
add with no answer is settled by looking for that id, and a file is deleted by it. The bytes
are served to the server from memos-etl (core/client/file_server.py) for the length of one
synchronous add, which downloads and parses the file before it answers.

Status: `completed` when memories with the file's id are held, `failed` when the only ones
held are the server's markers of a download or parse failure, absent when none are (the
server has no parse status of its own). See docs/documents-self-hosted.md."""

from __future__ import annotations

import hashlib

from core.client.file_server import FileServer
from core.errors import TerminalBatchError, TransientError

#: the memory text the server stores instead of a file it could not download or parse
#: (memos/mem_reader/read_multi_modal/file_content_parser.py, _handle_url and parse_fine)
FAILED_MARKERS = ("[File URL download failed", "[File parsing error")
#: memories per /product/get_memory page
PAGE = 500


def file_id(cube: str, path: str, sha256: str) -> str:
    """A file version's id in the cube: stable, so a resend or a settle names the same file."""
    return "etl-" + hashlib.sha256(f"{cube}\n{path}\n{sha256}".encode()).hexdigest()[:40]


def open_self_hosted(target, docs) -> SelfHostedKnowledgeBase:
    cube = docs.knowledgebase_id or docs.knowledgebase
    return SelfHostedKnowledgeBase(
        target,
        cube,
        user_id=docs.user_id or cube,
        serve_host=docs.serve_host,
        serve_port=docs.serve_port,
        serve_url=docs.serve_url,
    )


class SelfHostedKnowledgeBase:
    """A cube of the open-source server, holding files as the memories made from them."""

    def __init__(
        self,
        target,
        cube: str,
        *,
        user_id: str | None = None,
        serve_host: str = "127.0.0.1",
        serve_port: int = 0,
        serve_url: str | None = None,
    ):
        self.target, self.id = target, cube
        self.user_id = user_id or cube
        self.serve_host, self.serve_port, self.serve_url = serve_host, serve_port, serve_url
        self.requests = 0

    def upload(self, files: list[dict]) -> list[dict]:
        """One synchronous add per file, each served from a file server that lives for this
        call. A file the server refused is answered with `refused` (nothing of it is held); a failure
        after the first file was added leaves the whole call in doubt (the next run settles each
        file by its id), so nothing is added twice."""
        out: list[dict] = []
        with FileServer(self.serve_host, self.serve_port, self.serve_url) as fs:
            for f in files:
                fid = file_id(self.id, f["path"], f["sha256"])
                url = fs.offer(f["data"], f["name"], f.get("media_type") or "application/octet-stream")
                self.requests += 1
                try:
                    data = self.target._post("/product/add", self._add_body(f, fid, url), writes=True)
                except TerminalBatchError as exc:
                    if not out and len(files) == 1:
                        raise
                    out.append({"id": fid, "status": "failed", "refused": str(exc)})  # nothing of it held
                    continue
                except TransientError as exc:
                    if not out:
                        raise
                    raise TransientError(
                        f"{exc} (after {len(out)} of {len(files)} files were added)", in_doubt=True
                    ) from None
                finally:
                    fs.withdraw(url)
                out.append({"id": fid, "status": _status([m.get("memory") for m in data or []])})
        return out

    def _add_body(self, f: dict, fid: str, url: str) -> dict:
        part = {"type": "file", "file": {"file_data": url, "file_id": fid, "filename": f["name"]}}
        return {
            "user_id": self.user_id,
            "writable_cube_ids": [self.id],
            "session_id": f["path"],  # a file's memories are one session, named by its path
            "async_mode": "sync",  # parsed before the answer: the URL is needed only meanwhile
            # what the memories say of their file (info keys the server keeps: not its own names)
            "info": {
                "doc_path": f["path"],
                "doc_name": f["name"],
                "doc_size": f["size"],
                "doc_sha256": f["sha256"],
                "etl_source": "documents",
            },
            "messages": [{"role": "user", "content": [part]}],
        }

    def memories_by_file(self) -> dict[str, list[dict]]:
        """file id -> the cube's memories made from that file (every memory of the cube is
        listed: the server's PostgreSQL store ignores /product/get_memory's filter)."""
        out: dict[str, list[dict]] = {}
        seen: set[str] = set()
        page = 1
        while True:
            body = {
                "mem_cube_id": self.id,
                "page": page,
                "page_size": PAGE,
                "include_preference": False,
                "include_tool_memory": False,
                "include_skill_memory": False,
            }
            data = self.target._post("/product/get_memory", body, writes=False)
            cubes = [c for c in (data or {}).get("text_mem") or [] if isinstance(c, dict)]
            nodes = [n for c in cubes for n in c.get("memories") or [] if isinstance(n, dict)]
            total = next((c.get("total_nodes") for c in cubes), None)
            new = [n for n in nodes if str(n.get("id")) not in seen]
            for n in new:
                seen.add(str(n.get("id")))
                for fid in (n.get("metadata") or {}).get("file_ids") or []:
                    out.setdefault(str(fid), []).append(n)
            if not new or len(nodes) != PAGE or (isinstance(total, int) and len(seen) >= total):
                return out
            page += 1

    def find(self, sent: list[dict], taken: set[str]) -> dict[int, dict]:
        """An unanswered add landed when memories with its file id are held."""
        held = self.memories_by_file()
        out: dict[int, dict] = {}
        for i, r in enumerate(sent):
            fid = file_id(self.id, r["path"], r["sha256"])
            if fid not in taken and fid in held:
                out[i] = {"id": fid, "status": _status([n.get("memory") for n in held[fid]])}
        return out

    def statuses(self, file_ids: list[str]) -> dict[str, str]:
        held = self.memories_by_file()
        return {fid: _status([n.get("memory") for n in held[fid]]) for fid in file_ids if fid in held}

    def held(self) -> list[dict] | None:
        """Every file the cube holds memories of ({id, name, size, status, memories}): name and
        size as the add's info recorded them (a file added by another client has neither)."""
        out = []
        for fid, nodes in self.memories_by_file().items():
            info = (nodes[0].get("metadata") or {}).get("info") or {}
            out.append(
                {
                    "id": fid,
                    "name": info.get("doc_name"),
                    "size": info.get("doc_size"),
                    "path": info.get("doc_path"),
                    "status": _status([n.get("memory") for n in nodes]),
                    "memories": len(nodes),
                }
            )
        return out

    def search(self, user_id: str, query: str, limit: int = 6) -> list[dict]:
        """The cube's memories closest to `query` (relativity 0: the server's default floor
        hides weaker matches), with the file each came from."""
        body = {
            "user_id": user_id or self.user_id,
            "readable_cube_ids": [self.id],
            "query": query,
            "top_k": limit,
            "relativity": 0,
        }
        data = self.target._post("/product/search", body, writes=False)
        out = []
        for cube in (data or {}).get("text_mem") or []:
            for m in cube.get("memories") or []:
                md = m.get("metadata") or {}
                out.append(
                    {
                        "memory_value": m.get("memory"),
                        "file_id": next(iter(md.get("file_ids") or []), None),
                        "path": (md.get("info") or {}).get("doc_path"),
                    }
                )
        return out

    def delete(self, file_ids: list[str]) -> None:
        for i in range(0, len(file_ids), 100):
            body = {"file_ids": file_ids[i : i + 100], "writable_cube_ids": [self.id]}
            data = self.target._post("/product/delete_memory", body, writes=True)
            if isinstance(data, dict) and data.get("status") == "failure":
                # the server caught an error of its store: what it deleted is unknown until listed
                raise TransientError(f"/product/delete_memory: the server could not delete files {body['file_ids']}")


def _status(memories: list) -> str:
    """completed: memories of the file's content; failed: only the server's failure markers,
    or nothing at all (a file it parsed to no text)."""
    texts = [str(m or "") for m in memories]
    if not texts or all(t.startswith(FAILED_MARKERS) for t in texts):
        return "failed"
    return "completed"
