"""The self-hosted knowledge base without the real server (that is tests/test_documents_real.py):
the file server memos-etl serves a file's bytes from to MemOS (once, at an unguessable path,
gone after), and SelfHostedKnowledgeBase's adds against a stand-in that downloads the URL the
way MemOS's file parser does."""

from __future__ import annotations

import hashlib
import threading

import pytest
import requests

from core.client.file_server import FileServer
from core.client.knowledge_self_hosted import SelfHostedKnowledgeBase, file_id, open_self_hosted
from core.config.documents import DocumentsConfig
from core.errors import TerminalBatchError, TransientError


def test_a_file_is_served_once_at_an_unguessable_path_and_gone_after():
    with FileServer() as fs:
        url = fs.offer(b"# Kettle\n\nDescale on Thursdays.\n", "sub/kettle notes.md", "text/markdown")
        other = fs.offer(b"other", "other.txt")
        token, name = url[len(fs.base_url) + 1 :].split("/")
        assert name == "kettle%20notes.md" and len(token) >= 43  # 32 random bytes, base64url
        assert url != other and other.split("/")[-2] != token
        # a guess, a near miss and the bare base are 404 and take nothing
        for wrong in (fs.base_url + "/", fs.base_url + "/" + token, url[:-1], url.replace(token, token[:-1] + "A")):
            assert requests.get(wrong, timeout=5).status_code == 404
        got = requests.get(url, timeout=5)
        assert got.status_code == 200 and got.content == b"# Kettle\n\nDescale on Thursdays.\n"
        assert got.headers["Content-Type"] == "text/markdown" and got.headers["Cache-Control"] == "no-store"
        assert requests.get(url, timeout=5).status_code == 404  # served once
        fs.withdraw(other)  # the add was answered: gone whether or not it was fetched
        assert requests.get(other, timeout=5).status_code == 404
        assert fs.offered == 0 and len(fs.fetched) == 1
        port = fs.port
    with pytest.raises(requests.ConnectionError):  # closed with the add: nothing listens
        requests.get(f"http://127.0.0.1:{port}/", timeout=2)


def test_serve_url_is_the_address_memos_is_told():
    """MemOS is told serve_url's address (a proxy, a container's name); a prefix it carries
    may reach the server or be stripped on the way: either finds the file."""
    with FileServer("127.0.0.1", 0, "http://etl.internal:8765/files/") as fs:
        url = fs.offer(b"x", "a.txt")
        assert url.startswith("http://etl.internal:8765/files/") and url.endswith("/a.txt")
        rest = url[len("http://etl.internal:8765") :]
        assert requests.get(f"http://127.0.0.1:{fs.port}{rest}", timeout=5).content == b"x"
        url = fs.offer(b"y", "b.txt")
        rest = url[len("http://etl.internal:8765/files") :]
        assert requests.get(f"http://127.0.0.1:{fs.port}{rest}", timeout=5).content == b"y"


class StandIn:
    """A target whose /product/add downloads the file URL like MemOS's parser (requests.get),
    keeps memories by file id, and can refuse or fail an add."""

    def __init__(self):
        self.memories: list[dict] = []
        self.bodies: list[dict] = []
        self.fail: dict[str, Exception] = {}  # file name -> raised instead of adding

    def _post(self, route, body, writes, final=frozenset()):
        self.bodies.append(body)
        if route == "/product/add":
            f = body["messages"][0]["content"][0]["file"]
            if f["filename"] in self.fail:
                raise self.fail[f["filename"]]
            text = requests.get(f["file_data"], timeout=5).text
            m = {
                "id": str(len(self.memories)),
                "memory": text,
                "metadata": {"file_ids": [f["file_id"]], "info": body["info"]},
            }
            self.memories.append(m)
            return [{"memory": text, "memory_id": m["id"]}]
        if route == "/product/get_memory":
            return {"text_mem": [{"memories": list(self.memories), "total_nodes": len(self.memories)}]}
        if route == "/product/delete_memory":
            self.memories = [m for m in self.memories if not set(m["metadata"]["file_ids"]) & set(body["file_ids"])]
            return {"status": "success"}
        raise AssertionError(route)


def _file(path: str, data: bytes) -> dict:
    return {
        "path": path,
        "name": path,
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data),
        "media_type": "text/plain",
        "data": data,
    }


def test_upload_find_statuses_delete_by_our_own_file_ids():
    t = StandIn()
    kb = SelfHostedKnowledgeBase(t, "handbook")
    a, b = _file("a.md", b"alpha words"), _file("sub/b.txt", b"beta words")
    answer = kb.upload([a, b])
    ids = [file_id("handbook", f["path"], f["sha256"]) for f in (a, b)]
    assert answer == [{"id": ids[0], "status": "completed"}, {"id": ids[1], "status": "completed"}]
    assert [m["memory"] for m in t.memories] == ["alpha words", "beta words"]
    add = t.bodies[0]
    assert add["async_mode"] == "sync" and add["writable_cube_ids"] == ["handbook"] and add["user_id"] == "handbook"
    assert add["info"]["doc_path"] == "a.md"
    # the same path and bytes: the same id; another version: another
    assert file_id("handbook", "a.md", a["sha256"]) == ids[0] != file_id("handbook", "a.md", "0" * 64)
    assert kb.find([a, b, _file("c.md", b"never sent")], set()) == {0: answer[0], 1: answer[1]}
    assert kb.find([a], {ids[0]}) == {}
    assert kb.statuses([*ids, "etl-unknown"]) == {ids[0]: "completed", ids[1]: "completed"}
    held = {f["path"]: f for f in kb.held() or []}
    assert held["sub/b.txt"]["name"] == "sub/b.txt" and held["sub/b.txt"]["memories"] == 1
    kb.delete([ids[0]])
    assert t.bodies[-1] == {"file_ids": [ids[0]], "writable_cube_ids": ["handbook"]}
    assert kb.statuses(ids) == {ids[1]: "completed"}


def test_a_failed_download_is_failed_and_a_cut_batch_is_in_doubt():
    t = StandIn()
    kb = SelfHostedKnowledgeBase(t, "kb")
    a, b, c = _file("a.md", b"a"), _file("b.md", b"b"), _file("c.md", b"c")
    t.memories.append(
        {
            "id": "x",
            "memory": "[File URL download failed: http://...]",
            "metadata": {"file_ids": [file_id("kb", "z.md", "1")]},
        }
    )
    assert kb.statuses([file_id("kb", "z.md", "1")]) == {file_id("kb", "z.md", "1"): "failed"}
    # refused: that file is failed (nothing of it held), the others go on
    t.fail["b.md"] = TerminalBatchError("/product/add: HTTP 422", detail="")
    assert [x["status"] for x in kb.upload([a, b, c])] == ["completed", "failed", "completed"]
    # cut after the first file was added: in doubt (the caller settles by id, never resends blind)
    t.fail = {"b.md": TransientError("/product/add: connection refused")}
    with pytest.raises(TransientError) as exc:
        kb.upload([_file("d.md", b"d"), b])
    assert exc.value.in_doubt
    # cut before anything was added: as the server said (safe to resend)
    with pytest.raises(TransientError) as exc:
        kb.upload([b])
    assert not exc.value.in_doubt


def test_open_self_hosted_reads_the_documents_settings():
    kb = open_self_hosted(object(), DocumentsConfig(knowledgebase="handbook"))
    assert (kb.id, kb.user_id, kb.serve_host, kb.serve_port, kb.serve_url) == (
        "handbook",
        "handbook",
        "127.0.0.1",
        0,
        None,
    )
    docs = DocumentsConfig(
        knowledgebase_id="cube-7",
        user_id="docs-bot",
        serve_host="0.0.0.0",
        serve_port=8765,
        serve_url="http://etl:8765",
    )
    kb = open_self_hosted(object(), docs)
    assert (kb.id, kb.user_id, kb.serve_port, kb.serve_url) == ("cube-7", "docs-bot", 8765, "http://etl:8765")
    with pytest.raises(ValueError):
        DocumentsConfig(knowledgebase="x", serve_url="ftp://etl")


def test_files_are_served_while_the_add_runs_only():
    """Threads: MemOS fetches from another thread while the add blocks (the sync add)."""
    seen = []
    with FileServer() as fs:
        url = fs.offer(b"bytes", "f.txt")
        th = threading.Thread(target=lambda: seen.append(requests.get(url, timeout=5).content))
        th.start()
        th.join()
        fs.withdraw(url)
    assert seen == [b"bytes"]
