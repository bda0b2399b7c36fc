"""A local MemOS-compatible server: the demo's and the tests' MemOS, with fault injection.

It implements the MemOS Cloud routes this project uses (`/add/message`, `/get/message`,
`/search/memory`, `/get/status`) over real HTTP, with the same envelope and error codes, and
stores what it accepts in SQLite. Like MemOS, it has no idempotency: the same request twice
stores its messages twice, which is what lets tests catch a loader that duplicates.

Fault injection (`/_dev/faults`, or CLI flags): latency, a requests-per-second limit and a
tokens-per-minute limit (answered like MemOS: HTTP 429 / codes 40300 and 40309 with
Retry-After), a random 5xx share, and a queue of scripted faults for the next add requests:
an error status/code, or `hang` (store the messages or not, then answer only after the
client has given up: the in-doubt case).
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
from fastapi.responses import JSONResponse

from schemas.message import ALLOWED_ROLES, MAX_ID_CHARS
from tasks.budget import BYTES_PER_TOKEN

# codes this server answers with, inside MemOS's documented ranges
E_MISSING_FIELD, E_ID_TOO_LONG, E_BAD_MESSAGES, E_BAD_ROLE, E_EMPTY_CONTENT, E_TOO_LARGE = (
    40001, 40002, 40003, 40004, 40005, 40006)


class Faults:
    def __init__(self):
        self.reset()

    def reset(self, **kw):
        self.latency_ms = 0.0
        self.rps = 0.0  # 0: unlimited
        self.tokens_per_minute = 0
        self.error_rate = 0.0
        self.max_request_tokens = 40_000
        self.script: deque = deque()  # [{"status": 500, "code": 50000} | {"hang": 5, "store": true}]
        self.api_key: str | None = None
        self.get_message_fails = False  # a target that cannot say what it holds
        for k, v in kw.items():
            if k == "script":
                self.script = deque(v)
            elif hasattr(self, k):
                setattr(self, k, v)


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
        rows = [(rid, body["user_id"], body["conversation_id"], m["role"], m["content"], m.get("chat_time"),
                 json.dumps(body.get("info") or {}), json.dumps(body.get("tags") or []), now)
                for m in body["messages"]]
        with self.lock, self.db:
            self.db.executemany("INSERT INTO messages (request_id, user_id, conversation_id, role, content, "
                                "chat_time, info, tags, created_at) VALUES (?,?,?,?,?,?,?,?,?)", rows)
        return rid

    def hit(self, route: str, status: int, code: int) -> None:
        with self.lock, self.db:
            self.db.execute("INSERT INTO hits VALUES (?,?,?,?)", (route, status, code, time.time()))

    def query(self, sql: str, args=()) -> list[tuple]:
        with self.lock:
            return self.db.execute(sql, args).fetchall()

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
            while self.tokens and now - self.tokens[0][0] >= 60.0:
                self.tokens.popleft()
            if faults.rps and len(self.reqs) >= faults.rps:
                return 40300, max(0.01, 1.0 - (now - self.reqs[0]))
            used = sum(t for _, t in self.tokens)
            if faults.tokens_per_minute and used + tokens > faults.tokens_per_minute:
                return 40309, max(0.05, 60.0 - (now - self.tokens[0][0])) if self.tokens else 1.0
            self.reqs.append(now)
            self.tokens.append((now, tokens))
        return None


def request_tokens(body: dict) -> int:
    n = 0
    for m in body.get("messages") or []:
        if isinstance(m, dict) and isinstance(m.get("content"), str):
            n += -(-len(m["content"].encode()) // BYTES_PER_TOKEN)
    return n


def validate_add(body: dict) -> tuple[int, str] | None:
    for f in ("user_id", "conversation_id"):
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


def create_app(store: Store | None = None, faults: Faults | None = None) -> FastAPI:
    store = store or Store()
    faults = faults or Faults()
    window = _Window()
    app = FastAPI(title="memos-etl dev-server", docs_url=None, redoc_url=None)
    app.state.store, app.state.faults = store, faults

    def auth_failed(request: Request) -> JSONResponse | None:
        if faults.api_key and request.headers.get("authorization") != f"Token {faults.api_key}":
            return _env(40100, "invalid or missing API key", status=401)
        return None

    @app.post("/add/message")
    async def add_message(request: Request):
        if faults.latency_ms:
            await asyncio.sleep(faults.latency_ms / 1000.0)
        resp = auth_failed(request)
        if resp is None:
            try:
                body = await request.json()
            except ValueError:
                body = None
            if not isinstance(body, dict):
                resp = _env(E_BAD_MESSAGES, "body must be a JSON object", status=400)
        if resp is None:
            bad = validate_add(body)
            tokens = request_tokens(body) if not bad else 0
            if bad:
                resp = _env(bad[0], bad[1], status=400)
            elif tokens > faults.max_request_tokens:
                resp = _env(E_TOO_LARGE, f"request has ~{tokens} tokens, limit {faults.max_request_tokens}", status=400)
        if resp is None and faults.script:
            fault = faults.script.popleft()
            if "hang" in fault:
                # the in-doubt case: the client gives up waiting; whether the messages were
                # stored depends on "store" (default true: applied, answer lost)
                if fault.get("store", True):
                    store.add(body)
                store.hit("/add/message", 0, 0)
                await asyncio.sleep(float(fault["hang"]))
                return _env(0, "ok (too late)", {"success": True, "task_id": "late", "status": "running"})
            resp = _env(fault.get("code", 50000), "injected fault", status=fault.get("status", 500),
                        headers={"Retry-After": str(fault["retry_after"])} if "retry_after" in fault else None)
        if resp is None and faults.error_rate and random.random() < faults.error_rate:
            resp = _env(50000, "injected random server error", status=500)
        if resp is None:
            limited = window.admit(faults, tokens)
            if limited:
                code, wait = limited
                resp = _env(code, "rate limited" if code == 40300 else "token window exceeded", status=429,
                            headers={"Retry-After": f"{wait:.3f}"})
        if resp is None:
            task_id = store.add(body)
            resp = _env(0, "ok", {"success": True, "task_id": task_id, "status": "running"})
        code = json.loads(resp.body).get("code")
        store.hit("/add/message", resp.status_code, code)
        return resp

    @app.post("/get/message")
    async def get_message(request: Request):
        resp = auth_failed(request)
        if resp:
            return resp
        if faults.get_message_fails:
            return _env(50000, "injected: get/message unavailable", status=503)
        body = await request.json()
        limit = max(1, min(int(body.get("message_limit_number") or 6), 50))
        rows = store.query("SELECT role, content, created_at FROM messages WHERE user_id=? AND conversation_id=? "
                           "ORDER BY id DESC LIMIT ?", (body.get("user_id"), body.get("conversation_id"), limit))
        detail = [{"role": r, "content": c, "create_time": t, "update_time": t} for r, c, t in reversed(rows)]
        return _env(0, "ok", {"message_detail_list": detail})

    @app.post("/search/memory")
    async def search_memory(request: Request):
        resp = auth_failed(request)
        if resp:
            return resp
        body = await request.json()
        words = [w for w in str(body.get("query", "")).lower().split() if len(w) > 2]
        limit = max(1, min(int(body.get("memory_limit_number") or 6), 50))
        args: list = [body.get("user_id")]
        sql = "SELECT conversation_id, role, content, chat_time FROM messages WHERE user_id=?"
        if body.get("conversation_id"):
            sql += " AND conversation_id=?"
            args.append(body["conversation_id"])
        scored = []
        for conv, role, content, chat_time in store.query(sql, args):
            low = content.lower()
            score = sum(w in low for w in words)
            if score:
                scored.append((score, conv, role, content, chat_time))
        scored.sort(key=lambda r: -r[0])
        seen: set = set()  # like MemOS, one memory per fact, however often it was said
        scored = [r for r in scored if not (r[3] in seen or seen.add(r[3]))]
        memories = [{"memory_key": f"{role} said", "memory_value": content, "conversation_id": conv,
                     "chat_time": chat_time, "relativity": score / max(1, len(words))}
                    for score, conv, role, content, chat_time in scored[:limit]]
        return _env(0, "ok", {"memory_detail_list": memories})

    @app.post("/get/status")
    async def get_status(request: Request):
        body = await request.json()
        return _env(0, "ok", [{"task_id": body.get("task_id"), "status": "completed"}])

    @app.get("/_dev/stats")
    async def stats():
        hits = store.query("SELECT route, status, code, COUNT(*) FROM hits GROUP BY route, status, code")
        n = store.query("SELECT COUNT(*) FROM messages")[0][0]
        adds = sum(c for r, _, _, c in hits if r == "/add/message")
        ok = sum(c for r, s, _, c in hits if r == "/add/message" and s == 200)
        return {"add_requests": adds, "add_ok": ok, "messages": n,
                "by_code": [{"route": r, "status": s, "code": c, "count": k} for r, s, c, k in hits]}

    @app.get("/_dev/messages")
    async def all_messages():
        rows = store.query("SELECT user_id, conversation_id, role, content, chat_time, info FROM messages ORDER BY id")
        return [{"user_id": u, "conversation_id": c, "role": r, "content": t, "chat_time": ct,
                 "info": json.loads(i)} for u, c, r, t, ct, i in rows]

    @app.post("/_dev/faults")
    async def set_faults(request: Request):
        faults.reset(**(await request.json()))
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
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning",
                                access_log=False, timeout_keep_alive=30)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="memos-dev-server", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "DevServer":
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
