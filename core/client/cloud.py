"""MemOS Cloud: POST {base}/add/message with `Authorization: Token <key>`; the cloud lists a
conversation's messages (in-doubt checks) and finds memories by their `info`."""

from __future__ import annotations

from core.client.http import HttpTarget, Reply
from core.client.memories import memory
from core.errors import CannotTell


class CloudTarget(HttpTarget):
    """MemOS Cloud: POST {base}/add/message with `Authorization: Token <key>`."""

    kind = "cloud"
    route = "/add/message"
    ok_codes = (0,)

    def add_fields(self, batch) -> dict:
        body = {
            "user_id": batch.user_id,
            "conversation_id": batch.conversation_id,
            "info": batch.info,
            "async_mode": self.cfg.async_mode,
        }
        if batch.tags:
            body["tags"] = batch.tags
        if batch.agent_id:
            body["agent_id"] = batch.agent_id
        if batch.app_id:
            body["app_id"] = batch.app_id
        return body

    def add(self, batch) -> Reply:
        data = self._post("/add/message", self.add_payload(batch), writes=True) or {}
        return Reply(data=data, task_id=data.get("task_id") if isinstance(data, dict) else None)

    def get_messages(self, user_id: str, conversation_id: str, limit: int = 50) -> list[dict]:
        data = self._post(
            "/get/message",
            {"user_id": user_id, "conversation_id": conversation_id, "message_limit_number": limit},
            writes=False,
        )
        return list((data or {}).get("message_detail_list") or [])

    def task_status(self, task_id: str) -> str:
        data = self._post("/get/status", {"task_id": task_id}, writes=False)
        items = data if isinstance(data, list) else [data] if isinstance(data, dict) else []
        for item in items:
            if isinstance(item, dict) and item.get("status"):
                return str(item["status"])
        return "unknown"

    def find_memories(self, user_id: str, where: dict, page_size: int = 50) -> list[str]:
        """Ids of a user's memories whose fields match `where` (e.g. {"info.run_id": ...})."""
        return [str(m["id"]) for m in self._memory_items(user_id, where, page_size) if m.get("id") is not None]

    def _memory_items(self, user_id: str, where: dict, page_size: int = 50) -> list[dict]:
        out: list[dict] = []
        page = 1
        while True:
            body = {"user_id": user_id, "page": page, "size": page_size, "filter": where}
            data = self._post("/get/memory", body, writes=False) or {}
            items = data.get("memory_detail_list") or []
            out += [m for m in items if isinstance(m, dict)]
            if len(items) < page_size:
                return out
            page += 1

    def request_memories(self, user_id: str, batch_keys: list[str]) -> dict[str, list[dict]]:
        """One filtered listing per request: /get/memory on info.batch_key."""
        return {k: [_memory(m) for m in self._memory_items(user_id, {"info.batch_key": k})] for k in batch_keys}

    def user_memories(self, user_id: str) -> list[dict]:
        return [_memory(m) for m in self._memory_items(user_id, {})]

    def delete_memories(self, memory_ids: list[str]) -> int:
        deleted = 0
        for i in range(0, len(memory_ids), 100):
            chunk = memory_ids[i : i + 100]
            self._post("/delete/memory", {"memory_ids": chunk}, writes=True)
            deleted += len(chunk)
        return deleted

    def delete_user_memories(self, user_id: str) -> int | None:
        """Every memory of a user (MemOS deletes by user_id; it does not say how many: None)."""
        self._post("/delete/memory", {"user_id": user_id}, writes=True)
        return None

    def request_landed(self, user_id: str, session_id: str, batch_key: str) -> tuple[bool | None, list[dict]]:
        """The cloud lists a conversation's messages (get_messages): that is its in-doubt check."""
        raise CannotTell("MemOS Cloud is checked through its message listing, not its memories")

    def delete_conversation_memories(self, user_id: str, conversation_id: str, batch_keys: list[str]) -> int:
        """The memories the requests of one conversation made, found by their provenance."""
        ids: list[str] = []
        for key in batch_keys:
            ids += self.find_memories(user_id, {"info.batch_key": key})
        return self.delete_memories(sorted(set(ids))) if ids else 0

    def search(self, user_id: str, query: str, limit: int = 6) -> list[dict]:
        data = self._post(
            "/search/memory", {"user_id": user_id, "query": query, "memory_limit_number": limit}, writes=False
        )
        return list((data or {}).get("memory_detail_list") or [])


def _memory(m: dict) -> dict:
    info = m.get("info")
    key = info.get("batch_key") if isinstance(info, dict) else None
    return memory(m.get("id"), m.get("memory_value") or m.get("memory"), m.get("conversation_id"), key)
