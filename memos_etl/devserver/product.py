"""The open-source MemOS server's `/product` routes (2.0.33, checked against a running one: see
deployments/memos-local): add, the listings, delete and search, with its codes (200 is success)."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from memos_etl.devserver.adds import add
from memos_etl.devserver.state import Dev, envelope
from memos_etl.devserver.store import content_text

router = APIRouter(prefix="/product")


def added(task_id: str, body: dict) -> list[dict]:
    """The open-source server answers an add with the memories it made at once (fast mode: the
    messages as "role: [time]: content" lines), not a task id."""
    if not body["messages"]:
        return []
    text = "".join(
        f"{m['role']}: [{m.get('chat_time') or 'now'}]: {content_text(m['content'])}\n" for m in body["messages"]
    )
    return [
        {
            "memory": text,
            "memory_id": str(uuid.uuid5(uuid.NAMESPACE_URL, task_id)),
            "memory_type": "LongTermMemory",
            "cube_id": body["user_id"],
        }
    ]


@router.post("/add")
async def product_add(request: Request, srv: Dev):
    return await add(srv, request, "session_id", 200, added, "Memory added successfully")


@router.post("/get_all")
async def product_get_all(request: Request, srv: Dev):
    # like MemOS 2.0.33 (text_mem): the user's memories as one cube of node groups
    body = await request.json()
    nodes = srv.store.nodes(body.get("user_id"))
    cube = {"cube_id": body.get("user_id"), "memories": [{"id": "root", "nodes": nodes}] if nodes else []}
    return envelope(200, "Memories retrieved successfully", [cube])


@router.post("/get_memory")
async def product_get_memory(request: Request, srv: Dev):
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
    nodes = srv.store.nodes(body.get("user_id") or body["mem_cube_id"])
    total = len(nodes)
    if body.get("page") and body.get("page_size"):
        start = (int(body["page"]) - 1) * int(body["page_size"])
        nodes = nodes[start : start + int(body["page_size"])]
    cube = {"cube_id": body["mem_cube_id"], "memories": nodes, "total_nodes": total}
    return envelope(
        200,
        "Memories retrieved successfully",
        {"text_mem": [cube], "pref_mem": [], "tool_mem": [], "skill_mem": []},
    )


@router.post("/delete_memory")
async def product_delete_memory(request: Request, srv: Dev):
    # MemOS 2.0.33's delete modes: memory_ids, or user_id / session_id conditions
    body = await request.json()
    session = body.get("session_id") or body.get("conversation_id")
    if srv.faults.deletes_linger:
        return envelope(200, "Memories deleted successfully", {"status": "success"})
    if body.get("memory_ids") is not None:
        ids = [int(i) for i in body["memory_ids"] if str(i).isdigit()]
        if ids:
            srv.store.execute(f"DELETE FROM messages WHERE id IN ({','.join('?' * len(ids))})", ids)
    elif body.get("user_id") or session:
        sql = "DELETE FROM messages WHERE 1=1"
        args: list[str] = []
        if body.get("user_id"):
            sql, args = sql + " AND user_id=?", args + [body["user_id"]]
        if session:
            sql, args = sql + " AND conversation_id=?", args + [session]
        srv.store.execute(sql, args)
        # as MemOS 2.0.33 answers it (deployments/memos-local): the memories are deleted, then
        # the handler fails on preference memory the server was started without
        return envelope(200, "Failed to delete memories", {"status": "failure"})
    else:
        return envelope(
            200,
            "Exactly one delete mode must be provided: memory_ids, file_ids, or filter/user_id/session_id.",
            {"status": "failure"},
        )
    return envelope(200, "Memories deleted successfully", {"status": "success"})


@router.post("/search")
async def product_search(request: Request, srv: Dev):
    body = await request.json()
    # like MemOS 2.0.33: top_k defaults to 10, memories below `relativity` (default 0.45;
    # 0 turns it off) are left out, and session_id only weighs results, it does not filter
    hits = srv.store.search(body.get("user_id"), body.get("query", ""), int(body.get("top_k") or 10))
    floor = float(body["relativity"]) if body.get("relativity") is not None else 0.45
    hits = [h for h in hits if h["relativity"] >= floor]
    memories = [{"memory": h["memory_value"], "metadata": {"session_id": h["conversation_id"]}} for h in hits]
    return envelope(
        200, "Search completed successfully", {"text_mem": [{"cube_id": body.get("user_id"), "memories": memories}]}
    )
