"""The write path both APIs share: the preamble, the request's checks (the cloud API's rules, or
the open-source server's request model), scripted and random faults, the rate limits, then the
store."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from core.budget import BYTES_PER_TOKEN
from memos_etl.devserver.faults import DroppedResponse
from memos_etl.devserver.state import Server, envelope
from memos_etl.devserver.store import content_text
from schemas.message import ALLOWED_ROLES, MAX_ID_CHARS

T = TypeVar("T")  # what a write's commit returns: a task id, the files stored

# codes this server answers with, inside MemOS's documented ranges
E_MISSING_FIELD, E_ID_TOO_LONG, E_BAD_MESSAGES, E_BAD_ROLE, E_EMPTY_CONTENT, E_TOO_LARGE = (
    40001,
    40002,
    40003,
    40004,
    40005,
    40006,
)


def request_tokens(body: dict) -> int:
    n = 0
    for m in body.get("messages") or []:
        if isinstance(m, dict) and isinstance(m.get("content"), (str, list)):
            n += -(-len(content_text(m["content"]).encode()) // BYTES_PER_TOKEN)
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
        content = m.get("content")
        if isinstance(content, list):
            problem = parts_problem(content)
            if problem:
                return E_BAD_MESSAGES, f"messages[{i}].content: {problem}"
            continue
        if not isinstance(content, str) or not content.strip():
            return E_EMPTY_CONTENT, f"messages[{i}].content is empty"
    return None


#: the published limit of files in one message
MAX_FILES = 20


def parts_problem(content: list) -> str | None:
    """What is wrong with a content of parts, as the cloud API would refuse it; None: fine.
    text {text}, image_url {url}, file {file_data} (a URL or base64); at least one part that
    says something, at most MAX_FILES files."""
    if not content:
        return "an empty list of parts"
    files = 0
    said = False
    for j, p in enumerate(content):
        kind = p.get("type") if isinstance(p, dict) else None
        if kind == "text":
            if not isinstance(p.get("text"), str):
                return f"part {j}: text must be a string"
            said = said or bool(p["text"].strip())
        elif kind == "image_url":
            url = (p.get("image_url") or {}).get("url") if isinstance(p.get("image_url"), dict) else None
            if not isinstance(url, str) or not url:
                return f"part {j}: image_url.url is required"
            files, said = files + 1, True
        elif kind == "file":
            data = (p.get("file") or {}).get("file_data") if isinstance(p.get("file"), dict) else None
            if not isinstance(data, str) or not data:
                return f"part {j}: file.file_data is required"
            files, said = files + 1, True
        else:
            return f"part {j}: unknown type {kind!r} (text, image_url, file)"
    if files > MAX_FILES:
        return f"{files} files, more than {MAX_FILES}"
    return None if said else "no part says anything"


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
            elif not isinstance(m.get("content"), (str, list)):
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
        return envelope(400, "user_id and session_id must be strings", status=400)
    return None


def product_messages(body: dict) -> dict:
    """What the open-source server stores of an accepted body: a string is one message,
    a missing session is "default_session"."""
    msgs = body.get("messages")
    if isinstance(msgs, str):
        msgs = [{"role": "user", "content": msgs}]
    return {**body, "messages": msgs or [], "session_id": body.get("session_id") or "default_session"}


def stored(srv: Server, body: dict, conversation: str) -> str:
    task_id = srv.store.add({**body, "conversation_id": body[conversation]})
    if srv.faults.chance(srv.faults.extraction_fail_rate):
        srv.failed_tasks.add(task_id)
    return task_id


async def add(
    srv: Server,
    request: Request,
    conversation: str,
    ok_code: int,
    ok_data: Callable[[str, dict], object],
    ok_message: str = "ok",
) -> Response:
    """One add request through everything the server can do to it; every answer is counted in
    the store's hits by route, status and code."""
    faults = srv.faults
    route = request.url.path
    resp: Response | None = await srv.gate(request, latency=True, slow=True)
    body: Any = None  # the parsed JSON; only used once the checks below have passed it
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
            resp = envelope(bad[0], bad[1], status=400)
        elif tokens > faults.max_request_tokens:
            resp = envelope(E_TOO_LARGE, f"request has ~{tokens} tokens, limit {faults.max_request_tokens}", status=400)
    if resp is not None:
        srv.store.hit(route, resp.status_code, json.loads(resp.body).get("code"))
        return resp

    def commit(real: bool) -> str:
        return stored(srv, body, conversation) if real else uuid.uuid4().hex

    def answer(task_id: str, message: str) -> Response:
        return envelope(ok_code, message, ok_data(task_id, body))

    return await faulted(srv, route, tokens, commit, answer, ok_message)


async def faulted(
    srv: Server,
    route: str,
    tokens: int,
    commit: Callable[[bool], T],
    answer: Callable[[T, str], Response],
    ok_message: str = "ok",
) -> Response:
    """A write that passed its route's checks, through the scripted and random faults and the
    rate limits, then stored: `commit(True)` stores it and returns what the answer names (a task
    id, the files stored), `commit(False)` a stand-in for what was not stored; `answer(result,
    message)` is the route's success. Every answer is counted in the store's hits."""
    store, faults = srv.store, srv.faults
    resp: Response | None = None
    fault = faults.scripted(route)
    if fault is not None:
        if fault.get("pass"):
            pass
        elif "hang" in fault:
            # the in-doubt case: the client gives up waiting; whether the write was stored
            # depends on "store" (default true: applied, answer lost)
            result = commit(bool(fault.get("store", True)))
            store.hit(route, 0, 0)
            await asyncio.sleep(float(fault["hang"]))
            return answer(result, "ok (too late)")
        elif fault.get("drop"):
            if fault.get("store", True):
                commit(True)
            store.hit(route, 0, 0)
            return DroppedResponse()
        elif fault.get("commit_then_fail"):
            commit(True)
            resp = envelope(50000, "injected: failed after commit", status=500)
        elif fault.get("store_nothing"):  # accepted, and nothing made of it (MemOS#1355)
            resp = answer(commit(False), ok_message)
        elif fault.get("duplicate"):  # accepted, and stored twice
            commit(True)
            resp = answer(commit(True), ok_message)
        else:
            headers = {"Retry-After": str(fault["retry_after"])} if "retry_after" in fault else None
            resp = envelope(
                fault.get("code", 50000), "injected fault", status=fault.get("status", 500), headers=headers
            )
    if resp is None and faults.chance(faults.error_rate):
        resp = envelope(50000, "injected random server error", status=500)
    if resp is None:
        limited = srv.window.admit(faults, tokens)
        if limited:
            code, wait = limited
            text = "rate limited" if code == 40300 else "token window exceeded"
            if faults.rate_limit_style == "envelope200":
                resp = envelope(code, text, status=200)
            else:
                resp = envelope(code, text, status=429, headers={"Retry-After": f"{wait:.3f}"})
    if resp is None and faults.chance(faults.commit_then_fail_rate):
        commit(True)
        resp = envelope(50000, "injected: failed after commit", status=500)
    if resp is None and faults.chance(faults.drop_rate):
        commit(True)
        store.hit(route, 0, 0)
        return DroppedResponse()
    if resp is None:
        resp = answer(commit(True), ok_message)
    store.hit(route, resp.status_code, json.loads(resp.body).get("code"))
    return resp
