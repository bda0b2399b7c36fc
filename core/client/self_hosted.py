"""The open-source MemOS server (2.0.x): POST {base}/product/add, the conversation is its
`session_id`. It stores memories, not messages: whether an add landed, and what to delete, is
read from a user's memory listing and the `info` every request carries."""

from __future__ import annotations

import time
from typing import Any

from core.client.http import HttpTarget, Reply
from core.client.memories import memory
from core.errors import CannotTell, TerminalBatchError, TransientError

# The open-source server silently drops `info` keys that name a field of its memory items
# (MemOS 2.0.33, memos/memories/textual/item.py list_all_fields; it logs "info fields can not
# contain ..."): memos-etl's own `source` among them. Such keys are sent as etl_<key>.
RESERVED_INFO_KEYS = frozenset(
    (
        "background confidence covered_history created_at dialog_id embedding evolve_to file_ids history id "
        "info internal_info is_fast key mem_cube_id memory memory_type metadata original_text preference "
        "preference_type relativity score session_id source sources status tags type updated_at usage "
        "user_id version visibility working_binding"
    ).split()
)


class SelfHostedTarget(HttpTarget):
    """The open-source MemOS server: POST {base}/product/add; conversation is `session_id`."""

    kind = "self-hosted"
    route = "/product/add"
    ok_codes = (200, 0)

    def add_fields(self, batch) -> dict:
        info = batch.info
        if not RESERVED_INFO_KEYS.isdisjoint(info):
            info = {f"etl_{k}" if k in RESERVED_INFO_KEYS else k: v for k, v in info.items()}
        body = {
            "user_id": batch.user_id,
            "session_id": batch.conversation_id,
            "info": info,
            "async_mode": "async" if self.cfg.async_mode else "sync",
        }
        if self.cfg.mode:
            body["mode"] = self.cfg.mode
        if batch.tags:
            body["custom_tags"] = batch.tags
        return body

    def add(self, batch) -> Reply:
        data = self._post("/product/add", self.add_payload(batch), writes=True)
        task_id = data.get("task_id") if isinstance(data, dict) else None
        return Reply(data=data if isinstance(data, dict) else {"data": data}, task_id=task_id)

    def get_messages(self, user_id: str, conversation_id: str, limit: int = 50) -> list[dict]:
        # the open-source server stores memories, not the raw messages, and has no route that
        # lists a session's messages: whether an add landed is read from its memories instead
        # (request_landed)
        raise CannotTell("the self-hosted MemOS server cannot list a conversation's messages")

    #: /product/get_all lists at most about this many of a user's memories (MemOS 2.0.33): a
    #: listing this long may have left out the memories looked for
    LISTING_CAP = 200

    def request_landed(self, user_id: str, session_id: str, batch_key: str) -> tuple[bool | None, list[dict]]:
        """Did an unanswered add land? Its memories carry the request's `info` (our batch_key)
        and, in `sources`, the raw messages they came from. Waits (up to extraction_wait_s)
        while any memory of the session is still at the fast stage: background extraction
        replaces those, and a request whose memories are in flight is not judged missing.
        Returns (True: a memory names the request; False: the settled, complete listing has
        none; None: cannot tell), and the session's memories for the caller's own check of
        their sources."""

        def names_it(nodes: list[dict]) -> bool:
            return any(_matches(n.get("metadata") or {}, {"info.batch_key": batch_key}) for n in nodes)

        nodes, complete, in_flight = self.settled_listing(user_id, session_id, until=names_it)
        if names_it(nodes):
            return True, nodes
        if in_flight or not complete:
            return None, nodes
        return False, nodes

    def settled_listing(
        self, user_id: str, session_id: str | None = None, until=lambda nodes: False
    ) -> tuple[list[dict], bool, bool]:
        """The user's (or one session's) memories once none is at the fast stage: background
        extraction replaces those. Polls for up to extraction_wait_s, or until `until(nodes)`.
        Returns (memories, whether the listing is complete, whether some are still in flight)."""
        deadline = time.monotonic() + self.cfg.extraction_wait_s
        while True:
            nodes, complete = self.listing(user_id)
            if session_id is not None:
                nodes = [n for n in nodes if (n.get("metadata") or {}).get("session_id") == session_id]
            in_flight = any((n.get("metadata") or {}).get("is_fast") for n in nodes)
            if not in_flight or until(nodes) or time.monotonic() >= deadline:
                return nodes, complete, in_flight
            time.sleep(1.0)

    def task_status(self, task_id: str) -> str:
        return "unknown"

    def find_memories(self, user_id: str, where: dict, page_size: int = 50) -> list[str]:
        """Ids of a user's memories whose metadata match `where` (e.g. {"info.run_id": ...}; an
        info key the server reserves is looked up as etl_<key> too), from the complete listing,
        once background extraction has replaced the fast memories (or extraction_wait_s passed)."""
        nodes, complete, _ = self.settled_listing(user_id)
        if not complete:
            raise CannotTell(
                f"{user_id} has more memories than /product/get_all lists and the server has no "
                "/product/get_memory: its memories cannot all be found"
            )
        return [str(n["id"]) for n in nodes if n.get("id") is not None and _matches(n.get("metadata") or {}, where)]

    def delete_memories(self, memory_ids: list[str]) -> int:
        """Delete memories by id through /product/delete_memory (its memory_ids mode)."""
        for i in range(0, len(memory_ids), 100):
            self._post("/product/delete_memory", {"memory_ids": memory_ids[i : i + 100]}, writes=True)
        return len(memory_ids)

    PAGE = 500  # memories per /product/get_memory page

    def memories(self, user_id: str, session_id: str | None = None) -> list[dict]:
        """The user's text memories, optionally of one session: every one of them, from
        /product/get_memory page by page (MemOS 2.0.33; its PostgreSQL graph store ignores
        paging and answers all at once, others page: both end here). A server without that
        route gets /product/get_all, which lists at most about 200 (`listing` says so)."""
        nodes, _ = self.listing(user_id)
        if session_id is not None:
            nodes = [n for n in nodes if (n.get("metadata") or {}).get("session_id") == session_id]
        return nodes

    def listing(self, user_id: str) -> tuple[list[dict], bool]:
        """(the user's memories, whether that is every one of them)."""
        try:
            return self._memory_pages(user_id), True
        except TerminalBatchError:  # no such route (an older server): the capped listing
            data = self._post("/product/get_all", {"user_id": user_id, "memory_type": "text_mem"}, writes=False)
            nodes = [
                n
                for cube in data or []
                if isinstance(cube, dict)
                for group in cube.get("memories") or []
                for n in group.get("nodes") or []
            ]
            return nodes, len(nodes) < self.LISTING_CAP

    def _memory_pages(self, user_id: str) -> list[dict]:
        seen: dict[str, dict] = {}
        page = 1
        while True:
            data = self._post(
                "/product/get_memory",
                {
                    "mem_cube_id": user_id,
                    "user_id": user_id,
                    "page": page,
                    "page_size": self.PAGE,
                    "include_preference": False,
                    "include_tool_memory": False,
                    "include_skill_memory": False,
                },
                writes=False,
            )
            cubes = (data or {}).get("text_mem") or []
            nodes = [n for c in cubes if isinstance(c, dict) for n in c.get("memories") or [] if isinstance(n, dict)]
            total = next((c.get("total_nodes") for c in cubes if isinstance(c, dict)), None)
            new = [n for n in nodes if str(n.get("id")) not in seen]
            seen.update((str(n.get("id")), n) for n in new)
            if not new or len(nodes) != self.PAGE or (isinstance(total, int) and len(seen) >= total):
                return list(seen.values())
            page += 1

    def delete_user_memories(self, user_id: str, session_id: str | None = None) -> int:
        """Delete a user's (or one session's) memories with MemOS 2.0.33's
        /product/delete_memory (its user_id / session_id delete conditions). Background
        extraction replaces fast memories after the add answered, so first wait (up to
        `extraction_wait_s`) until none is left at the fast stage, and check afterwards that
        the listing is empty. Returns how many memories were listed before the delete."""
        nodes, _, _ = self.settled_listing(user_id, session_id)
        body = {"user_id": user_id, **({"session_id": session_id} if session_id is not None else {})}
        for attempt in range(3):
            # 2.0.33 answers {"status": "failure"} to a delete by user_id / session_id even when
            # it deleted them (it fails afterwards, on preference memory a server without it
            # lacks): the listing, not the answer, says whether they are gone
            self._post("/product/delete_memory", body, writes=True)
            left = self.memories(user_id, session_id)
            if not left:
                return len(nodes)
            time.sleep(1.0 + attempt)  # an extraction that was still running added some back
        raise TransientError(
            f"{len(left)} memories of {user_id}{'/' + session_id if session_id else ''} are "
            "still listed after three deletes; run erase again"
        )

    def delete_conversation_memories(self, user_id: str, conversation_id: str, batch_keys: list[str]) -> int:
        return self.delete_user_memories(user_id, conversation_id)

    def request_memories(self, user_id: str, batch_keys: list[str]) -> dict[str, list[dict]]:
        """One settled, complete listing of the user for all of its requests, grouped by the
        batch key each memory's info carries."""
        nodes, complete, _ = self.settled_listing(user_id)
        if not complete:
            raise CannotTell(f"{user_id} has more memories than /product/get_all lists: they cannot all be checked")
        out: dict[str, list[dict]] = {k: [] for k in batch_keys}
        for n in nodes:
            m = _memory(n)
            if m["batch_key"] in out:
                out[m["batch_key"]].append(m)
        return out

    def user_memories(self, user_id: str) -> list[dict]:
        nodes, complete = self.listing(user_id)
        return [_memory(n) for n in nodes]

    def search(self, user_id: str, query: str, limit: int = 6) -> list[dict]:
        # relativity 0: the server's default floor (0.45) hides weaker matches, and a check of
        # what was loaded wants the closest memories whatever their score
        data = self._post(
            "/product/search", {"user_id": user_id, "query": query, "top_k": limit, "relativity": 0}, writes=False
        )
        out = []
        for cube in (data or {}).get("text_mem") or []:
            for m in cube.get("memories") or []:
                out.append(
                    {"memory_value": m.get("memory"), "conversation_id": (m.get("metadata") or {}).get("session_id")}
                )
        return out


def _matches(metadata: dict, where: dict) -> bool:
    for key, want in where.items():
        *path, last = key.split(".")
        holder: Any = metadata
        for part in path:
            holder = holder.get(part) if isinstance(holder, dict) else None
        if not isinstance(holder, dict):
            return False
        got = holder.get(last, holder.get(f"etl_{last}"))
        if got is None or str(got) != str(want):
            return False
    return True


def _memory(node: dict) -> dict:
    md = node.get("metadata") or {}
    info = md.get("info")
    key = info.get("batch_key", info.get("etl_batch_key")) if isinstance(info, dict) else None
    return memory(node.get("id"), node.get("memory"), md.get("session_id"), key, bool(md.get("is_fast")))
