"""The dev-server's MemOS Cloud knowledge bases over real HTTP: every route, every refusal code,
the parse status flow, an upload stored but not answered, the rate limit, and what tests read
of what it holds (`/_dev/knowledgebases`, a file's bytes)."""

from __future__ import annotations

import base64
import hashlib
import time

import pytest
import requests

from memos_etl.devserver.knowledge import PARSE_FAILS
from tests.helpers import set_faults

UPLOAD = "/add/knowledgebase-file"


def call(url: str, route: str, body: dict, timeout: float = 10) -> dict:
    """A POST answered with HTTP 200 and code 0: its data."""
    resp = requests.post(url + route, json=body, timeout=timeout)
    assert resp.status_code == 200, resp.text
    env = resp.json()
    assert env["code"] == 0, env
    return env["data"]


def refusal(url: str, route: str, body: dict) -> tuple[int, int]:
    resp = requests.post(url + route, json=body, timeout=10)
    return resp.status_code, resp.json()["code"]


def data_url(data: bytes, media: str = "application/octet-stream") -> str:
    return f"data:{media};base64,{base64.b64encode(data).decode()}"


def new_kb(url: str, name: str = "handbook") -> str:
    return call(url, "/create/knowledgebase", {"knowledgebase_name": name, "knowledgebase_description": "d"})["id"]


def held(url: str) -> list[dict]:
    return requests.get(url + "/_dev/knowledgebases", timeout=10).json()


def held_files(url: str) -> list[dict]:
    return [f for kb in held(url) for f in kb["files"]]


def listed(url: str, **query) -> dict:
    return call(url, "/get/knowledgebase-file", query)


PDF = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n"  # binary, not UTF-8
MD = b"# Leave policy\n\nEmployees get twenty vacation days.\n\nParental leave is sixteen weeks.\n"


def test_routes_round_trip_with_identical_bytes_and_no_deduplication(dev_server):
    url = dev_server.url
    kb = new_kb(url)
    files = [
        {"name": "policy.md", "content": data_url(MD, "text/markdown")},
        {"name": "scan.PDF", "content": data_url(PDF, "application/pdf")},
        {"content": data_url(b'{"a": 1}', "application/json"), "type": "skill"},  # named by its media type
        {"name": "remote.txt", "content": "https://example.com/files/remote.txt"},  # kept as a URL, not fetched
    ]
    first = call(url, UPLOAD, {"knowledgebase_id": kb, "file": files})
    assert [(f["name"], f["type"], f["status"]) for f in first] == [
        ("policy.md", "document", "running"),
        ("scan.PDF", "document", "running"),
        ("file-3.json", "skill", "running"),
        ("remote.txt", "document", "running"),
    ]
    assert first[0]["sizeMB"] == round(len(MD) / 2**20, 6)
    again = call(url, UPLOAD, {"knowledgebase_id": kb, "file": files[:1]})  # the same file: a new id
    assert again[0]["id"] not in {f["id"] for f in first}

    (base,) = held(url)
    assert (base["id"], base["name"], base["description"], base["deleted"]) == (kb, "handbook", "d", False)
    by_id = {f["id"]: f for f in base["files"]}
    assert len(by_id) == 5
    for sent, body in ((first[0], MD), (first[1], PDF), (again[0], MD)):
        f = by_id[sent["id"]]
        assert (f["size"], f["sha256"]) == (len(body), hashlib.sha256(body).hexdigest())
        assert requests.get(f"{url}/_dev/knowledgebase-file/{sent['id']}", timeout=10).content == body
    assert by_id[first[3]["id"]]["url"] == "https://example.com/files/remote.txt"

    page = listed(url, knowledgebase_id=kb)
    assert (page["total"], page["page"], page["page_size"]) == (5, 1, 20)
    assert {f["status"] for f in page["file_detail_list"]} == {"completed"}  # the default: done at the first poll
    assert page["file_detail_list"][0] == {
        "id": first[0]["id"],
        "type": "document",
        "name": "policy.md",
        "size": len(MD),
        "status": "completed",
    }
    second = listed(url, knowledgebase_id=kb, page=2, page_size=2)
    assert [f["id"] for f in second["file_detail_list"]] == [first[2]["id"], first[3]["id"]]
    assert second["total"] == 5
    assert [f["name"] for f in listed(url, knowledgebase_id=kb, type="skill")["file_detail_list"]] == ["file-3.json"]
    by_ids = listed(url, file_ids=[first[1]["id"], again[0]["id"]])
    assert [f["id"] for f in by_ids["file_detail_list"]] == [first[1]["id"], again[0]["id"]]

    assert call(url, "/delete/knowledgebase-file", {"file_ids": [again[0]["id"]]}) == {"success": True}
    assert listed(url, knowledgebase_id=kb)["total"] == 4
    assert listed(url, file_ids=[again[0]["id"]])["file_detail_list"] == []
    assert [f["id"] for f in held_files(url) if f["deleted"]] == [again[0]["id"]]

    assert call(url, "/delete/knowledgebase", {"knowledgebase_id": kb}) == {"success": True}
    assert held(url)[0]["deleted"] is True
    assert refusal(url, UPLOAD, {"knowledgebase_id": kb, "file": files[:1]}) == (400, 50123)
    assert refusal(url, "/get/knowledgebase-file", {"knowledgebase_id": kb}) == (400, 50123)

    requests.post(url + "/_dev/reset", timeout=10).raise_for_status()
    assert held(url) == []


def test_two_knowledge_bases_of_one_name_are_two(dev_server):
    assert new_kb(dev_server.url) != new_kb(dev_server.url)
    assert [kb["name"] for kb in held(dev_server.url)] == ["handbook", "handbook"]


def one(name: str | None, content: str) -> dict:
    return {"content": content} if name is None else {"name": name, "content": content}


KB = "the knowledge base"  # stands for the test's knowledge base id
REFUSALS = {
    "HTML by its name": (40007, {}, [one("page.html", data_url(b"<p>x</p>", "text/html"))]),
    "HTML by its media type": (40007, {}, [one(None, data_url(b"<p>x</p>", "text/html"))]),
    "a name's extension wins over the media type": (40007, {}, [one("a.png", data_url(b"x", "text/plain"))]),
    "not base64": (40008, {}, [one("a.md", "data:text/markdown;base64,@@not base64@@")]),
    "a data URL without ;base64": (40008, {}, [one("a.md", "data:text/markdown,plain")]),
    "neither a URL nor a data URL": (40009, {}, [one("a.md", "just some text")]),
    "more files than the limit": (
        50103,
        {"max_files_per_upload": 2},
        [one(f"{i}.md", data_url(b"x")) for i in range(3)],
    ),
    "a file over the limit": (50104, {"max_file_bytes": 1024}, [one("big.txt", data_url(b"x" * 1025))]),
    "an upload over the limit": (
        50105,
        {"max_upload_bytes": 3000},
        [one("a.txt", data_url(b"a" * 2000)), one("b.txt", data_url(b"b" * 2000))],
    ),
    "an unknown knowledge base": (50120, {}, [one("a.md", data_url(b"x"))]),
}


@pytest.mark.parametrize("case", REFUSALS)
def test_an_upload_is_refused_whole_with_memos_code(dev_server, case):
    url = dev_server.url
    code, limits, files = REFUSALS[case]
    kb = new_kb(url)
    set_faults(url, **limits)
    target = "no-such-knowledge-base" if code == 50120 else kb
    ok = [one("fine.md", data_url(b"fine"))]  # a good file beside the bad ones is not stored either
    assert refusal(url, UPLOAD, {"knowledgebase_id": target, "file": ok + files}) == (400, code)
    assert held_files(url) == []
    if limits:  # at the limit itself: accepted
        at = {
            50103: [one(f"{i}.md", data_url(b"x")) for i in range(2)],
            50104: [one("big.txt", data_url(b"x" * 1024))],
            50105: [one("a.txt", data_url(b"a" * 2000)), one("b.txt", data_url(b"b" * 1000))],
        }[code]
        assert len(call(url, UPLOAD, {"knowledgebase_id": kb, "file": at})) == len(at)


def test_the_other_routes_refusals(dev_server):
    url = dev_server.url
    kb = new_kb(url)
    assert refusal(url, "/create/knowledgebase", {"knowledgebase_description": "no name"}) == (400, 40001)
    assert refusal(url, UPLOAD, {"knowledgebase_id": kb, "file": []}) == (400, 40001)
    assert refusal(url, UPLOAD, {"knowledgebase_id": kb, "file": [{"type": "video", "content": "https://x/a.md"}]}) == (
        400,
        40000,
    )
    get = "/get/knowledgebase-file"
    assert refusal(url, get, {}) == (400, 40000)  # neither
    assert refusal(url, get, {"knowledgebase_id": kb, "file_ids": []}) == (400, 40000)  # both
    assert refusal(url, get, {"knowledgebase_id": "no-such"}) == (400, 50120)
    assert refusal(url, "/delete/knowledgebase", {"knowledgebase_id": "no-such"}) == (400, 50120)
    assert refusal(url, "/delete/knowledgebase-file", {}) == (400, 40001)
    set_faults(url, api_key="secret")
    assert refusal(url, UPLOAD, {"knowledgebase_id": kb, "file": [one("a.md", data_url(b"x"))]}) == (401, 40100)
    assert refusal(url, get, {"knowledgebase_id": kb}) == (401, 40100)


def test_parse_status_running_then_completed_or_failed(dev_server):
    url = dev_server.url
    kb = new_kb(url)
    set_faults(url, parse_polls=2, parse_fail_names=["*broken*"])
    sent = call(
        url,
        UPLOAD,
        {
            "knowledgebase_id": kb,
            "file": [
                one("good.md", data_url(MD)),
                one("broken.pdf", data_url(PDF)),
                one("marked.txt", data_url(b"text then " + PARSE_FAILS)),
            ],
        },
    )
    ids = [f["id"] for f in sent]
    statuses = [[f["status"] for f in listed(url, file_ids=ids)["file_detail_list"]] for _ in range(4)]
    assert statuses == [["running"] * 3, ["running"] * 3, ["completed", "failed", "failed"]] + [
        ["completed", "failed", "failed"]
    ]
    assert [f["status"] for f in held_files(url)] == ["completed", "failed", "failed"]

    set_faults(url, parse_seconds=0.5)  # by time: the polls alone do not end it
    (late,) = call(url, UPLOAD, {"knowledgebase_id": kb, "file": [one("later.md", data_url(MD))]})
    assert listed(url, file_ids=[late["id"]])["file_detail_list"][0]["status"] == "running"
    time.sleep(0.6)
    assert listed(url, file_ids=[late["id"]])["file_detail_list"][0]["status"] == "completed"


@pytest.mark.parametrize(
    "fault, failure",
    [
        ({"drop": True}, requests.exceptions.ChunkedEncodingError),  # the answer cut mid-way
        ({"hang": 2}, requests.exceptions.Timeout),  # answered after the client gave up
        ({"commit_then_fail": True}, None),  # a 500 after the write
    ],
    ids=["drop", "hang", "commit_then_fail"],
)
def test_an_upload_stored_but_not_answered(dev_server, fault, failure):
    url = dev_server.url
    kb = new_kb(url)
    # kept for the upload: a message add in between passes untouched
    set_faults(url, script=[{"route": UPLOAD, **fault}])
    msg = {"user_id": "u", "conversation_id": "c", "messages": [{"role": "user", "content": "hi"}]}
    assert call(url, "/add/message", msg)["success"] is True
    body = {"knowledgebase_id": kb, "file": [one("policy.md", data_url(MD))]}
    if failure is None:
        resp = requests.post(url + UPLOAD, json=body, timeout=10)
        assert (resp.status_code, resp.json()["code"]) == (500, 50000)
    else:
        with pytest.raises(failure):
            requests.post(url + UPLOAD, json=body, timeout=0.5)
    (stored,) = held_files(url)  # stored once, though the client was told nothing
    assert (stored["name"], stored["sha256"]) == ("policy.md", hashlib.sha256(MD).hexdigest())
    # what a loader settles with before any resend: a file of that name and size is there
    (found,) = listed(url, knowledgebase_id=kb)["file_detail_list"]
    assert (found["id"], found["name"], found["size"]) == (stored["id"], "policy.md", len(MD))
    call(url, UPLOAD, body)  # the script is spent: the next upload is answered, and is a second file
    assert len(held_files(url)) == 2


@pytest.mark.parametrize("style, answer", [("http429", (429, 40300)), ("envelope200", (200, 40300))])
def test_uploads_are_rate_limited(dev_server, style, answer):
    url = dev_server.url
    kb = new_kb(url)
    set_faults(url, rps=2, rate_limit_style=style)  # the create counts: it is rate limited too
    body = {"knowledgebase_id": kb, "file": [one("a.md", data_url(b"x"))]}
    call(url, UPLOAD, body)
    resp = requests.post(url + UPLOAD, json=body, timeout=10)
    assert (resp.status_code, resp.json()["code"]) == answer
    assert style == "envelope200" or float(resp.headers["Retry-After"]) > 0
    assert len(held_files(url)) == 1


def test_search_memory_finds_text_in_the_named_knowledge_bases(dev_server):
    url = dev_server.url
    kb, other = new_kb(url), new_kb(url, "other")
    set_faults(url, parse_fail_names=["broken*"])
    call(url, UPLOAD, {"knowledgebase_id": kb, "file": [one("policy.md", data_url(MD))]})
    call(url, UPLOAD, {"knowledgebase_id": other, "file": [one("broken.md", data_url(b"parental leave too"))]})
    listed(url, knowledgebase_id=kb), listed(url, knowledgebase_id=other)

    def search(**extra) -> list[dict]:
        body = {"user_id": "u", "query": "how long is parental leave", **extra}
        return call(url, "/search/memory", body)["memory_detail_list"]

    assert search() == []  # no knowledgebase_ids: messages only
    assert search(knowledgebase_ids=[]) == []
    hits = search(knowledgebase_ids=[kb])  # best first: both words, then the heading's "leave"
    assert [(h["memory_value"], h["memory_key"], h["knowledgebase_id"]) for h in hits] == [
        ("Parental leave is sixteen weeks.", "policy.md", kb),
        ("# Leave policy", "policy.md", kb),
    ]
    assert {h["knowledgebase_id"] for h in search(knowledgebase_ids="all")} == {kb}  # a failed parse is not searched
