"""A local MemOS-compatible server: the demo's and the tests' MemOS, with fault injection.

It implements the MemOS Cloud routes this project uses (`/add/message`, `/get/message`,
`/search/memory`, `/get/status`) and the self-hosted server's `/product/add` and
`/product/search`, over real HTTP, with the same envelopes and error codes, and stores what
it accepts in SQLite. Like MemOS, it has no idempotency: the same request twice stores its
messages twice, which is what lets tests catch a loader that duplicates.

Fault injection (`POST /_dev/faults`, or CLI flags; see `Faults`), random choices drawn from
a seeded generator so a failing test can be replayed: latency and slow answers; a
requests-per-second and a tokens-per-minute limit answered in either of MemOS's styles
(HTTP 429 with Retry-After, or HTTP 200 with code 40300/40309); 5xx before the write;
commit-then-fail (the write happens, then a 500 or a dropped connection); failing
background extraction; and a script of faults for the next requests, including `hang`
(answer only after the client has given up).
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import sqlite3
import threading
import time
import uuid
from collections import deque

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from core.budget import BYTES_PER_TOKEN
from schemas.message import ALLOWED_ROLES, MAX_ID_CHARS

# codes this server answers with, inside MemOS's documented ranges
E_MISSING_FIELD, E_ID_TOO_LONG, E_BAD_MESSAGES, E_BAD_ROLE, E_EMPTY_CONTENT, E_TOO_LARGE = (
    40001,
    40002,
    40003,
    40004,
    40005,
    40006,
)


class Faults:
    """What the server does wrong, and how often. Random choices come from `seed`."""

    def __init__(self):
        self.reset()

    def reset(self, **kw):
        self.seed: int | None = None
        self.latency_ms = 0.0
        self.slow_rate, self.slow_ms = 0.0, 0.0  # a share of requests answered slowly
        self.rps = 0.0  # 0: unlimited
        self.tokens_per_minute = 0
        self.token_window_s = 60.0  # the window tokens_per_minute applies to (benchmarks compress it)
        self.rate_limit_style = "http429"  # or "envelope200": HTTP 200 with code 40300/40309
        self.error_rate = 0.0  # 5xx before storing anything
        self.commit_then_fail_rate = 0.0  # store the messages, then answer 500
        self.drop_rate = 0.0  # store the messages, then drop the connection mid-answer
        self.extraction_fail_rate = 0.0  # share of tasks whose background extraction fails
        self.max_request_tokens = 40_000
        # scripted faults for the next add requests, in order:
        # {"status": 500, "code": 50000, "retry_after": 1} | {"hang": 5, "store": true}
        # | {"commit_then_fail": true} | {"drop": true, "store": true} | {"pass": true} (no fault)
        self.script: deque = deque()
        self.api_key: str | None = None
        self.get_message_fails = False  # a target that cannot say what it holds
        for k, v in kw.items():
            if k == "script":
                self.script = deque(v)
            elif hasattr(self, k):
                setattr(self, k, v)
            else:
                raise ValueError(f"unknown fault {k!r}")
        self.rng = random.Random(self.seed)

    def chance(self, share: float) -> bool:
        return bool(share) and self.rng.random() < share


class Store:
    """SQLite storage of what the server accepted; one connection behind a lock."""

    def __init__(self, path: str = ":memory:"):
        self.db = sqlite3.connect(path, check_same_thread=False)
        self.lock = threading.Lock()
        with self.lock:
            self.db.executescript("""
                PRAGMA journal_mode=WAL;
                CREATE TABLE IF NOT EXISTS messages (
                    id INTEGER PRIMARY KEY AUTOINCREMENT, request_id TEXT, user_id TEXT,
                    conversation_id TEXT, role TEXT, content TEXT, chat_time TEXT, info TEXT,
                    tags TEXT, created_at REAL);
                CREATE INDEX IF NOT EXISTS ix_conv ON messages(user_id, conversation_id, id);
                CREATE TABLE IF NOT EXISTS hits (route TEXT, status INTEGER, code INTEGER, at REAL);
            """)

    def add(self, body: dict) -> str:
        rid = uuid.uuid4().hex
        now = time.time()
        rows = [
            (
                rid,
                body["user_id"],
                body["conversation_id"],
                m["role"],
                m["content"],
                m.get("chat_time"),
                json.dumps(body.get("info") or {}),
                json.dumps(body.get("tags") or []),
                now,
            )
            for m in body["messages"]
        ]
        with self.lock, self.db:
            self.db.executemany(
                "INSERT INTO messages (request_id, user_id, conversation_id, role, content, "
                "chat_time, info, tags, created_at) VALUES (?,?,?,?,?,?,?,?,?)",
                rows,
            )
        return rid

    def hit(self, route: str, status: int, code: int) -> None:
        with self.lock, self.db:
            self.db.execute("INSERT INTO hits VALUES (?,?,?,?)", (route, status, code, time.time()))

    def query(self, sql: str, args=()) -> list[tuple]:
        with self.lock:
            return self.db.execute(sql, args).fetchall()

    def execute(self, sql: str, args=()) -> int:
        with self.lock, self.db:
            return self.db.execute(sql, args).rowcount

    def clear(self) -> None:
        with self.lock, self.db:
            self.db.execute("DELETE FROM messages")
            self.db.execute("DELETE FROM hits")


def _env(code: int, message: str, data=None, status: int = 200, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"code": code, "message": message, "data": data}, status_code=status, headers=headers)


class _Window:
    """Sliding one-second and one-minute windows for the rate limits."""

    def __init__(self):
        self.lock = threading.Lock()
        self.reqs: deque = deque()
        self.tokens: deque = deque()

    def admit(self, faults: Faults, tokens: int) -> tuple[int, float] | None:
        now = time.monotonic()
        with self.lock:
            while self.reqs and now - self.reqs[0] >= 1.0:
                self.reqs.popleft()
            while self.tokens and now - self.tokens[0][0] >= faults.token_window_s:
                self.tokens.popleft()
            if faults.rps and len(self.reqs) >= faults.rps:
                return 40300, max(0.01, 1.0 - (now - self.reqs[0]))
            used = sum(t for _, t in self.tokens)
            if faults.tokens_per_minute and used + tokens > faults.tokens_per_minute:
                return 40309, max(0.05, faults.token_window_s - (now - self.tokens[0][0])) if self.tokens else 1.0
            self.reqs.append(now)
            self.tokens.append((now, tokens))
        return None


def request_tokens(body: dict) -> int:
    n = 0
    for m in body.get("messages") or []:
        if isinstance(m, dict) and isinstance(m.get("content"), str):
            n += -(-len(m["content"].encode()) // BYTES_PER_TOKEN)
    return n


def validate_add(body: dict, conversation: str = "conversation_id") -> tuple[int, str] | None:
    for f in ("user_id", conversation):
        v = body.get(f)
        if not isinstance(v, str) or not v:
            return E_MISSING_FIELD, f"{f} is required"
        if len(v) > MAX_ID_CHARS:
            return E_ID_TOO_LONG, f"{f} longer than {MAX_ID_CHARS} characters"
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        return E_BAD_MESSAGES, "messages must be a non-empty list"
    for i, m in enumerate(msgs):
        if not isinstance(m, dict):
            return E_BAD_MESSAGES, f"messages[{i}] is not an object"
        if m.get("role") not in ALLOWED_ROLES:
            return E_BAD_ROLE, f"messages[{i}].role must be one of {ALLOWED_ROLES}"
        if not isinstance(m.get("content"), str) or not m["content"].strip():
            return E_EMPTY_CONTENT, f"messages[{i}].content is empty"
    return None


NOT_JSON = object()


def validate_product_add(body) -> JSONResponse | None:
    """The open-source server's answers to a bad `/product/add` (MemOS 2.0.33, checked against a
    running one: see deployments/memos-local). Only the request's shape is checked (FastAPI):
    a type error is HTTP 422 with code 422 in MemOS's envelope plus FastAPI's `detail`; no
    user_id is HTTP 400, code 400. Empty content, an empty or 300-character user_id, a missing
    session_id (stored as "default_session") and an empty message list (nothing stored) are
    all accepted: unlike the cloud API it does not police content, so the loader must."""
    problems = []
    if body is NOT_JSON:
        problems.append((["body", 0], "json_invalid", "JSON decode error"))
    elif not isinstance(body, dict):
        problems.append((["body"], "model_attributes_type", "Input should be a valid dictionary"))
    else:
        for f in ("user_id", "session_id"):
            if body.get(f) is not None and not isinstance(body[f], str):
                problems.append((["body", f], "string_type", "Input should be a valid string"))
        msgs = body.get("messages")
        if msgs is not None and not isinstance(msgs, (str, list)):
            problems.append((["body", "messages"], "list_type", "Input should be a valid list"))
        for i, m in enumerate(msgs if isinstance(msgs, list) else []):
            if not isinstance(m, dict):
                problems.append((["body", "messages", i], "model_type", "Input should be an object"))
            elif m.get("role") not in ALLOWED_ROLES:
                problems.append(
                    (["body", "messages", i, "role"], "literal_error", f"Input should be one of {ALLOWED_ROLES}")
                )
            elif not isinstance(m.get("content"), str):
                kind = "missing" if "content" not in m else "string_type"
                problems.append(
                    (
                        ["body", "messages", i, "content"],
                        kind,
                        "Field required" if kind == "missing" else "Input should be a valid string",
                    )
                )
    if problems:
        text = "; ".join(f"[{' -> '.join(map(str, loc))}] {msg} (type: {kind})" for loc, kind, msg in problems)
        return JSONResponse(
            {
                "code": 422,
                "message": f"Parameter validation error on POST /product/add: {text}",
                "detail": [{"type": kind, "loc": loc, "msg": msg} for loc, kind, msg in problems],
                "data": None,
            },
            status_code=422,
        )
    if body.get("user_id") is None:
        return _env(400, "user_id and session_id must be strings", status=400)
    return None


def product_messages(body: dict) -> dict:
    """What the open-source server stores of an accepted body: a string is one message,
    a missing session is "default_session"."""
    msgs = body.get("messages")
    if isinstance(msgs, str):
        msgs = [{"role": "user", "content": msgs}]
    return {**body, "messages": msgs or [], "session_id": body.get("session_id") or "default_session"}


class _DroppedResponse(Response):
    """Starts an answer, then breaks the connection: the client cannot know what happened."""

    async def __call__(self, scope, receive, send):
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"400")],
            }
        )
        await send({"type": "http.response.body", "body": b'{"code": 0, "mess', "more_body": True})
        raise ConnectionAbortedError("dev-server: injected connection drop")


def create_app(store: Store | None = None, faults: Faults | None = None) -> FastAPI:
    store = store or Store()
    faults = faults or Faults()
    window = _Window()
    failed_tasks: set[str] = set()
    app = FastAPI(title="memos-etl dev-server", docs_url=None, redoc_url=None)
    app.state.store, app.state.faults = store, faults

    def auth_failed(request: Request) -> JSONResponse | None:
        if faults.api_key and request.headers.get("authorization") != f"Token {faults.api_key}":
            return _env(40100, "invalid or missing API key", status=401)
        return None

    def stored(body: dict, conversation: str) -> str:
        task_id = store.add({**body, "conversation_id": body[conversation]})
        if faults.chance(faults.extraction_fail_rate):
            failed_tasks.add(task_id)
        return task_id

    async def add(request: Request, conversation: str, ok_code: int, ok_data, ok_message: str = "ok") -> Response:
        route = request.url.path
        if faults.latency_ms:
            await asyncio.sleep(faults.latency_ms / 1000.0)
        if faults.chance(faults.slow_rate):
            await asyncio.sleep(faults.slow_ms / 1000.0)
        resp = auth_failed(request)
        body = None
        if resp is None:
            try:
                body = await request.json()
            except ValueError:
                body = NOT_JSON
        tokens = 0
        if resp is None and conversation == "session_id":  # the open-source server
            resp = validate_product_add(body)
            if resp is None:
                body = product_messages(body)
                tokens = request_tokens(body)
        elif resp is None:
            bad = (
                (E_BAD_MESSAGES, "body must be a JSON object")
                if not isinstance(body, dict)
                else validate_add(body, conversation)
            )
            tokens = request_tokens(body) if not bad else 0
            if bad:
                resp = _env(bad[0], bad[1], status=400)
            elif tokens > faults.max_request_tokens:
                resp = _env(E_TOO_LARGE, f"request has ~{tokens} tokens, limit {faults.max_request_tokens}", status=400)
        if resp is None and faults.script:
            fault = faults.script.popleft()
            if fault.get("pass"):
                pass
            elif "hang" in fault:
                # the in-doubt case: the client gives up waiting; whether the messages were
                # stored depends on "store" (default true: applied, answer lost)
                if fault.get("store", True):
                    stored(body, conversation)
                store.hit(route, 0, 0)
                await asyncio.sleep(float(fault["hang"]))
                return _env(ok_code, "ok (too late)", ok_data("late", body))
            elif fault.get("drop"):
                if fault.get("store", True):
                    stored(body, conversation)
                store.hit(route, 0, 0)
                return _DroppedResponse()
            elif fault.get("commit_then_fail"):
                stored(body, conversation)
                resp = _env(50000, "injected: failed after commit", status=500)
            else:
                headers = {"Retry-After": str(fault["retry_after"])} if "retry_after" in fault else None
                resp = _env(
                    fault.get("code", 50000), "injected fault", status=fault.get("status", 500), headers=headers
                )
        if resp is None and faults.chance(faults.error_rate):
            resp = _env(50000, "injected random server error", status=500)
        if resp is None:
            limited = window.admit(faults, tokens)
            if limited:
                code, wait = limited
                text = "rate limited" if code == 40300 else "token window exceeded"
                if faults.rate_limit_style == "envelope200":
                    resp = _env(code, text, status=200)
                else:
                    resp = _env(code, text, status=429, headers={"Retry-After": f"{wait:.3f}"})
        if resp is None and faults.chance(faults.commit_then_fail_rate):
            stored(body, conversation)
            resp = _env(50000, "injected: failed after commit", status=500)
        if resp is None and faults.chance(faults.drop_rate):
            stored(body, conversation)
            store.hit(route, 0, 0)
            return _DroppedResponse()
        if resp is None:
            resp = _env(ok_code, ok_message, ok_data(stored(body, conversation), body))
        code = json.loads(resp.body).get("code")
        store.hit(route, resp.status_code, code)
        return resp

    @app.post("/add/message")
    async def add_message(request: Request):
        return await add(
            request,
            "conversation_id",
            0,
            lambda task_id, body: {"success": True, "task_id": task_id, "status": "running"},
        )

    @app.post("/product/add")
    async def product_add(request: Request):
        return await add(request, "session_id", 200, product_added, "Memory added successfully")

    def product_added(task_id: str, body: dict) -> list[dict]:
        # the open-source server answers with the memories it made at once (fast mode: the
        # messages as "role: [time]: content" lines), not a task id
        if not body["messages"]:
            return []
        text = "".join(f"{m['role']}: [{m.get('chat_time') or 'now'}]: {m['content']}\n" for m in body["messages"])
        return [
            {
                "memory": text,
                "memory_id": str(uuid.uuid5(uuid.NAMESPACE_URL, task_id)),
                "memory_type": "LongTermMemory",
                "cube_id": body["user_id"],
            }
        ]

    def product_nodes(user_id) -> list[dict]:
        # a memory per stored message, with its session, the request's info and the raw message
        # it came from in `sources` (MemOS 2.0.33 writes each source as JSON text)
        rows = store.query(
            "SELECT id, conversation_id, role, content, chat_time, info FROM messages WHERE user_id=? ORDER BY id",
            (user_id,),
        )
        return [
            {
                "id": str(i),
                "memory": f"{r}: {c}",
                "metadata": {
                    "session_id": conv,
                    "info": json.loads(inf) if inf else {},
                    "is_fast": False,
                    "memory_type": "LongTermMemory",
                    "sources": [json.dumps({"type": "chat", "role": r, "content": c, "chat_time": t})],
                },
            }
            for i, conv, r, c, t, inf in rows
        ]

    @app.post("/product/get_all")
    async def product_get_all(request: Request):
        # like MemOS 2.0.33 (text_mem): the user's memories as one cube of node groups
        body = await request.json()
        nodes = product_nodes(body.get("user_id"))
        cube = {"cube_id": body.get("user_id"), "memories": [{"id": "root", "nodes": nodes}] if nodes else []}
        return _env(200, "Memories retrieved successfully", [cube])

    @app.post("/product/get_memory")
    async def product_get_memory(request: Request):
        # MemOS 2.0.33's paged listing: mem_cube_id (required), page from 1 and page_size (its
        # PostgreSQL store ignores them and answers everything; this one pages, as its other
        # stores do), text_mem[0] = {cube_id, memories, total_nodes}
        body = await request.json()
        if not body.get("mem_cube_id"):
            return JSONResponse(
                {
                    "code": 422,
                    "message": "Parameter validation error on POST /product/get_memory: mem_cube_id: Field required",
                    "data": None,
                },
                status_code=422,
            )
        nodes = product_nodes(body.get("user_id") or body["mem_cube_id"])
        total = len(nodes)
        if body.get("page") and body.get("page_size"):
            start = (int(body["page"]) - 1) * int(body["page_size"])
            nodes = nodes[start : start + int(body["page_size"])]
        cube = {"cube_id": body["mem_cube_id"], "memories": nodes, "total_nodes": total}
        return _env(
            200,
            "Memories retrieved successfully",
            {"text_mem": [cube], "pref_mem": [], "tool_mem": [], "skill_mem": []},
        )

    @app.post("/product/delete_memory")
    async def product_delete_memory(request: Request):
        # MemOS 2.0.33's delete modes: memory_ids, or user_id / session_id conditions
        body = await request.json()
        session = body.get("session_id") or body.get("conversation_id")
        if body.get("memory_ids") is not None:
            ids = [int(i) for i in body["memory_ids"] if str(i).isdigit()]
            if ids:
                store.execute(f"DELETE FROM messages WHERE id IN ({','.join('?' * len(ids))})", ids)
        elif body.get("user_id") or session:
            sql, args = "DELETE FROM messages WHERE 1=1", []
            if body.get("user_id"):
                sql, args = sql + " AND user_id=?", args + [body["user_id"]]
            if session:
                sql, args = sql + " AND conversation_id=?", args + [session]
            store.execute(sql, args)
            # as MemOS 2.0.33 answers it (deployments/memos-local): the memories are deleted, then
            # the handler fails on preference memory the server was started without
            return _env(200, "Failed to delete memories", {"status": "failure"})
        else:
            return _env(
                200,
                "Exactly one delete mode must be provided: memory_ids, file_ids, or filter/user_id/session_id.",
                {"status": "failure"},
            )
        return _env(200, "Memories deleted successfully", {"status": "success"})

    @app.post("/product/search")
    async def product_search(request: Request):
        body = await request.json()
        # like MemOS 2.0.33: top_k defaults to 10, memories below `relativity` (default 0.45;
        # 0 turns it off) are left out, and session_id only weighs results, it does not filter
        hits = search(body.get("user_id"), body.get("query", ""), int(body.get("top_k") or 10))
        floor = float(body["relativity"]) if body.get("relativity") is not None else 0.45
        hits = [h for h in hits if h["relativity"] >= floor]
        memories = [{"memory": h["memory_value"], "metadata": {"session_id": h["conversation_id"]}} for h in hits]
        return _env(
            200, "Search completed successfully", {"text_mem": [{"cube_id": body.get("user_id"), "memories": memories}]}
        )

    def search(user_id, query: str, limit: int, conversation_id=None) -> list[dict]:
        words = [w for w in str(query).lower().split() if len(w) > 2]
        limit = max(1, min(limit, 50))
        args: list = [user_id]
        sql = "SELECT conversation_id, role, content, chat_time FROM messages WHERE user_id=?"
        if conversation_id:
            sql += " AND conversation_id=?"
            args.append(conversation_id)
        scored = []
        for conv, role, content, chat_time in store.query(sql, args):
            low = content.lower()
            score = sum(w in low for w in words)
            if score:
                scored.append((score, conv, role, content, chat_time))
        scored.sort(key=lambda r: -r[0])
        seen: set = set()  # like MemOS, one memory per fact, however often it was said
        scored = [r for r in scored if not (r[3] in seen or seen.add(r[3]))]
        return [
            {
                "memory_key": f"{role} said",
                "memory_value": content,
                "conversation_id": conv,
                "chat_time": chat_time,
                "relativity": score / max(1, len(words)),
            }
            for score, conv, role, content, chat_time in scored[:limit]
        ]

    @app.post("/get/message")
    async def get_message(request: Request):
        resp = auth_failed(request)
        if resp:
            return resp
        if faults.get_message_fails:
            return _env(50000, "injected: get/message unavailable", status=503)
        body = await request.json()
        limit = max(1, min(int(body.get("message_limit_number") or 6), 50))
        rows = store.query(
            "SELECT role, content, created_at FROM messages WHERE user_id=? AND conversation_id=? "
            "ORDER BY id DESC LIMIT ?",
            (body.get("user_id"), body.get("conversation_id"), limit),
        )
        detail = [{"role": r, "content": c, "create_time": t, "update_time": t} for r, c, t in reversed(rows)]
        return _env(0, "ok", {"message_detail_list": detail})

    @app.post("/search/memory")
    async def search_memory(request: Request):
        resp = auth_failed(request)
        if resp:
            return resp
        body = await request.json()
        hits = search(
            body.get("user_id"),
            body.get("query", ""),
            int(body.get("memory_limit_number") or 6),
            body.get("conversation_id"),
        )
        return _env(0, "ok", {"memory_detail_list": hits})

    @app.post("/get/memory")
    async def get_memory(request: Request):
        if faults.latency_ms:  # the network's latency, as for adds
            await asyncio.sleep(faults.latency_ms / 1000.0)
        resp = auth_failed(request)
        if resp:
            return resp
        body = await request.json()
        size = max(1, min(int(body.get("size") or 10), 50))
        page = max(1, int(body.get("page") or 1))
        sql = "SELECT id, conversation_id, role, content, chat_time, info FROM messages WHERE user_id=?"
        args: list = [body.get("user_id")]
        for key, value in (body.get("filter") or {}).items():
            if not str(key).startswith("info.") or not str(key)[5:].replace("_", "").isalnum():
                return _env(40000, f"filter on {key!r} is not supported here", status=400)
            sql += f" AND json_extract(info, '$.{key[5:]}') = ?"
            args.append(value)
        rows = store.query(sql + " ORDER BY id LIMIT ? OFFSET ?", args + [size, (page - 1) * size])
        return _env(
            0,
            "ok",
            {
                "memory_detail_list": [
                    {
                        "id": str(i),
                        "memory_key": f"{r} said",
                        "memory_value": c,
                        "conversation_id": conv,
                        "chat_time": t,
                        "info": json.loads(inf),
                    }
                    for i, conv, r, c, t, inf in rows
                ]
            },
        )

    @app.post("/delete/memory")
    async def delete_memory(request: Request):
        if faults.latency_ms:
            await asyncio.sleep(faults.latency_ms / 1000.0)
        resp = auth_failed(request)
        if resp:
            return resp
        body = await request.json()
        ids = [int(i) for i in body.get("memory_ids") or []]
        if ids:
            store.execute(f"DELETE FROM messages WHERE id IN ({','.join('?' * len(ids))})", ids)
        elif body.get("user_id"):
            store.execute("DELETE FROM messages WHERE user_id=?", [body["user_id"]])
        else:
            return _env(40000, "give memory_ids or user_id", status=400)
        return _env(0, "ok", {"success": True})

    @app.post("/get/status")
    async def get_status(request: Request):
        resp = auth_failed(request)
        if resp:
            return resp
        task_id = (await request.json()).get("task_id")
        return _env(0, "ok", [{"task_id": task_id, "status": "failed" if task_id in failed_tasks else "completed"}])

    @app.get("/_dev/stats")
    async def stats():
        hits = store.query("SELECT route, status, code, COUNT(*) FROM hits GROUP BY route, status, code")
        n = store.query("SELECT COUNT(*) FROM messages")[0][0]
        adds = sum(c for r, _, _, c in hits if r in ("/add/message", "/product/add"))  # cloud or self-hosted
        ok = sum(c for r, s, _, c in hits if r in ("/add/message", "/product/add") and s == 200)
        return {
            "add_requests": adds,
            "add_ok": ok,
            "messages": n,
            "by_code": [{"route": r, "status": s, "code": c, "count": k} for r, s, c, k in hits],
        }

    @app.get("/_dev/messages")
    async def all_messages():
        rows = store.query(
            "SELECT user_id, conversation_id, role, content, chat_time, info, created_at FROM messages ORDER BY id"
        )
        return [
            {
                "user_id": u,
                "conversation_id": c,
                "role": r,
                "content": t,
                "chat_time": ct,
                "info": json.loads(i),
                "created_at": at,
            }
            for u, c, r, t, ct, i, at in rows
        ]

    @app.post("/_dev/faults")
    async def set_faults(request: Request):
        try:
            faults.reset(**(await request.json()))
        except ValueError as exc:
            return JSONResponse({"ok": False, "error": str(exc)}, status_code=400)
        return {"ok": True}

    @app.post("/_dev/reset")
    async def reset():
        store.clear()
        faults.reset()
        return {"ok": True}

    return app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DevServer:
    """Runs the dev-server in a background thread on loopback (tests, demo)."""

    def __init__(self, port: int = 0, db: str = ":memory:", **faults):
        self.port = port or free_port()
        self.faults = Faults()
        self.faults.reset(**faults)
        self.store = Store(db)
        self.app = create_app(self.store, self.faults)
        # injected connection drops are exceptions by design: keep uvicorn from printing them
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=self.port, log_level="critical", access_log=False, timeout_keep_alive=30
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="memos-dev-server", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> DevServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError(f"dev-server did not start on port {self.port}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def serve(host: str, port: int, db: str, **faults) -> None:
    """Run in the foreground (`memos-etl dev-server`)."""
    f = Faults()
    f.reset(**faults)
    uvicorn.run(create_app(Store(db), f), host=host, port=port, log_level="info")
