"""The `/_dev` routes tests and the demo drive the server with: counts, everything stored, faults
and reset. Not part of either MemOS API."""

from __future__ import annotations

import json

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from memos_etl.devserver.knowledge import Kb
from memos_etl.devserver.state import Dev

router = APIRouter(prefix="/_dev")
ADD_ROUTES = ("/add/message", "/product/add")  # cloud or self-hosted


@router.get("/stats")
async def stats(srv: Dev):
    hits = srv.store.query("SELECT route, status, code, COUNT(*) FROM hits GROUP BY route, status, code")
    n = srv.store.query("SELECT COUNT(*) FROM messages")[0][0]
    return {
        "add_requests": sum(c for r, _, _, c in hits if r in ADD_ROUTES),
        "add_ok": sum(c for r, s, _, c in hits if r in ADD_ROUTES and s == 200),
        "messages": n,
        "by_code": [{"route": r, "status": s, "code": c, "count": k} for r, s, c, k in hits],
    }


@router.get("/messages")
async def all_messages(srv: Dev):
    rows = srv.store.query(
        "SELECT user_id, conversation_id, role, content, chat_time, info, created_at, parts FROM messages ORDER BY id"
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
            **({"parts": json.loads(p)} if p else {}),
        }
        for u, c, r, t, ct, i, at, p in rows
    ]


@router.post("/faults")
async def set_faults(request: Request, srv: Dev):
    try:
        srv.faults.reset(**(await request.json()))
    except ValueError as exc:
        return JSONResponse({"ok": False, "error": str(exc)}, status_code=400)
    return {"ok": True}


@router.post("/reset")
async def reset(srv: Dev, kb: Kb):
    srv.store.clear()
    kb.clear()
    srv.faults.reset()
    return {"ok": True}
