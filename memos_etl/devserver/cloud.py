"""The MemOS Cloud routes this project uses: add, the recent-message and memory listings, search,
delete and task status, with the cloud's codes (0 is success)."""

from __future__ import annotations

import json

from fastapi import APIRouter, Request

from memos_etl.devserver.adds import add
from memos_etl.devserver.knowledge import Kb, search_hits
from memos_etl.devserver.state import Dev, envelope

router = APIRouter()


@router.post("/add/message")
async def add_message(request: Request, srv: Dev):
    return await add(
        srv,
        request,
        "conversation_id",
        0,
        lambda task_id, body: {"success": True, "task_id": task_id, "status": "running"},
    )


@router.post("/get/message")
async def get_message(request: Request, srv: Dev):
    if refused := await srv.gate(request):
        return refused
    if srv.faults.get_message_fails:
        return envelope(50000, "injected: get/message unavailable", status=503)
    body = await request.json()
    limit = max(1, min(int(body.get("message_limit_number") or 6), 50))
    rows = srv.store.query(
        "SELECT role, content, created_at FROM messages WHERE user_id=? AND conversation_id=? ORDER BY id DESC LIMIT ?",
        (body.get("user_id"), body.get("conversation_id"), limit),
    )
    detail = [{"role": r, "content": c, "create_time": t, "update_time": t} for r, c, t in reversed(rows)]
    return envelope(0, "ok", {"message_detail_list": detail})


@router.post("/search/memory")
async def search_memory(request: Request, srv: Dev, kb: Kb):
    if refused := await srv.gate(request):
        return refused
    body = await request.json()
    limit = int(body.get("memory_limit_number") or 6)
    hits = srv.store.search(body.get("user_id"), body.get("query", ""), limit, body.get("conversation_id"))
    if found := search_hits(srv, kb, body):  # with knowledgebase_ids: their text files too
        hits = sorted(hits + found, key=lambda h: -h["relativity"])[: max(1, min(limit, 50))]
    return envelope(0, "ok", {"memory_detail_list": hits})


@router.post("/get/memory")
async def get_memory(request: Request, srv: Dev):
    if refused := await srv.gate(request, latency=True):  # the network's latency, as for adds
        return refused
    body = await request.json()
    size = max(1, min(int(body.get("size") or 10), 50))
    page = max(1, int(body.get("page") or 1))
    sql = "SELECT id, conversation_id, role, content, chat_time, info FROM messages WHERE user_id=?"
    args: list = [body.get("user_id")]
    for key, value in (body.get("filter") or {}).items():
        if not str(key).startswith("info.") or not str(key)[5:].replace("_", "").isalnum():
            return envelope(40000, f"filter on {key!r} is not supported here", status=400)
        sql += f" AND json_extract(info, '$.{key[5:]}') = ?"
        args.append(value)
    rows = srv.store.query(sql + " ORDER BY id LIMIT ? OFFSET ?", args + [size, (page - 1) * size])
    listed = [
        {
            "id": str(i),
            "memory_key": f"{r} said",
            "memory_value": f"at {t}: {c}",  # the time it was said, as in the store's nodes
            "conversation_id": conv,
            "chat_time": t,
            "info": json.loads(inf),
        }
        for i, conv, r, c, t, inf in rows
    ]
    return envelope(0, "ok", {"memory_detail_list": listed})


@router.post("/delete/memory")
async def delete_memory(request: Request, srv: Dev):
    if refused := await srv.gate(request, latency=True):
        return refused
    body = await request.json()
    ids = [int(i) for i in body.get("memory_ids") or []]
    if srv.faults.deletes_linger and (ids or body.get("user_id")):
        return envelope(0, "ok", {"success": True})
    if ids:
        srv.store.execute(f"DELETE FROM messages WHERE id IN ({','.join('?' * len(ids))})", ids)
    elif body.get("user_id"):
        srv.store.execute("DELETE FROM messages WHERE user_id=?", [body["user_id"]])
    else:
        return envelope(40000, "give memory_ids or user_id", status=400)
    return envelope(0, "ok", {"success": True})


@router.post("/get/status")
async def get_status(request: Request, srv: Dev):
    if refused := await srv.gate(request):
        return refused
    task_id = (await request.json()).get("task_id")
    status = "failed" if task_id in srv.failed_tasks else "completed"
    return envelope(0, "ok", [{"task_id": task_id, "status": status}])
