"""MemOS targets: one HTTP edge where every failure is translated once.

Callers never look at status codes or envelopes: they catch
`TransientError` (retry later; `in_doubt` says whether the request may have been applied,
`throttled` that the target asked us to slow down), `TerminalBatchError` (this request is
bad; quarantine it and go on) or `FatalTargetError` (stop the run: authentication, quota).

Two adapters share that edge: `CloudTarget` (MemOS Cloud, `/add/message`) and
`SelfHostedTarget` (the open-source server, `/product/add`).
"""

from __future__ import annotations

import email.utils
import json
import os
import time
from dataclasses import dataclass

import requests
from requests.adapters import HTTPAdapter

from core.config import TargetConfig
from core.errors import CannotTell, FatalTargetError, TerminalBatchError, TransientError
from core.secrets import secret_block

THROTTLE_CODES = {40300, 40309}
SERVER_CODES = set(range(50000, 50145))
TERMINAL_CODES = set(range(40000, 40014))
FATAL_CODES = {40100, 40130, 40132, 40304}


def _never_connected(exc: requests.ConnectionError) -> bool:
    """No connection was made (refused, name not resolved, unreachable): the request never left,
    so repeating it is safe. urllib3 says so by type: NewConnectionError (NameResolutionError is
    one), under MaxRetryError when it went through the retry layer."""
    from urllib3.exceptions import MaxRetryError, NewConnectionError

    cause = exc.args[0] if exc.args else None
    if isinstance(cause, MaxRetryError):
        cause = cause.reason
    return isinstance(cause, NewConnectionError)


@dataclass
class Reply:
    data: dict
    task_id: str | None


def resolve_api_key(cfg: TargetConfig) -> str | None:
    """The key from the Prefect Secret block if one is named, else from the environment."""
    if cfg.api_key_block:
        return secret_block(cfg.api_key_block)
    return os.environ.get(cfg.api_key_env) or None


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Retry-After as seconds from now: a number of seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


# built once: json.dumps with options builds a new encoder on every call
_FIELDS_JSON = json.JSONEncoder(ensure_ascii=False, default=str).encode


def body_json(fields: dict, messages_json: str) -> str:
    """A request body as JSON text: `fields` plus the already serialised message array."""
    head = _FIELDS_JSON(fields)
    return (head[:-1] + ", " if len(head) > 2 else "{") + '"messages": ' + messages_json + "}"


class _HttpTarget:
    kind = "?"
    ok_codes: tuple = (0,)

    def __init__(self, cfg: TargetConfig, api_key: str | None, pool_size: int = 8):
        self.cfg = cfg
        self.base = cfg.base_url.rstrip("/")
        self.session = requests.Session()
        adapter = HTTPAdapter(pool_connections=pool_size, pool_maxsize=pool_size, max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers["Content-Type"] = "application/json"
        if api_key:
            # the key lives only in this header; it is never logged or put in a report
            self.session.headers["Authorization"] = f"Token {api_key}"

    def close(self) -> None:
        self.session.close()

    def add_body(self, batch) -> dict:
        """The add request's body as Python objects (inspection, tests)."""
        return {**self.add_fields(batch), "messages": batch.messages}

    def add_payload(self, batch) -> str:
        """The add request's body as JSON text, with the batch's message array spliced in as it
        was serialised (once, column-wise) when the batch was cut."""
        return body_json(self.add_fields(batch), batch.messages_json)

    def add_fields(self, batch) -> dict:
        raise NotImplementedError

    def _post(self, route: str, body: dict | str, writes: bool):
        url = self.base + route
        data = body.encode("utf-8") if isinstance(body, str) else json.dumps(body).encode("utf-8")
        try:
            resp = self.session.post(url, data=data, timeout=(min(10.0, self.cfg.timeout_s), self.cfg.timeout_s))
        except requests.ConnectTimeout as exc:
            raise TransientError(f"{route}: connect timeout: {exc}") from None
        except requests.ConnectionError as exc:
            # refused before a byte was sent is safe to repeat; a reset after sending is not
            refused = _never_connected(exc)
            raise TransientError(
                f"{route}: connection error: {exc}", in_doubt=writes and not refused, answered=False
            ) from None
        except requests.Timeout as exc:
            raise TransientError(
                f"{route}: no answer within {self.cfg.timeout_s}s: {exc}", in_doubt=writes, answered=False
            ) from None
        except requests.exceptions.ChunkedEncodingError as exc:
            raise TransientError(
                f"{route}: connection dropped mid-answer: {exc}", in_doubt=writes, answered=False
            ) from None
        return self._envelope(route, resp, writes)

    def _envelope(self, route: str, resp: requests.Response, writes: bool):
        retry_after = parse_retry_after(resp.headers.get("Retry-After"))
        try:
            env = resp.json()
        except ValueError:
            env = None
        code = env.get("code") if isinstance(env, dict) else None
        msg = (env.get("message") if isinstance(env, dict) else None) or resp.text[:300]
        where = f"{route}: HTTP {resp.status_code}, code {code}: {msg}"
        if resp.status_code in (401, 403) or code in FATAL_CODES:
            raise FatalTargetError(
                f"MemOS refused the run ({where}). Check the API key ({self.cfg.api_key_env} or "
                f"target.api_key_block) and quota; nothing is lost, the next run resumes."
            )
        if resp.status_code == 429 or code in THROTTLE_CODES:
            raise TransientError(where, retry_after=retry_after, throttled=True)
        if resp.status_code >= 500 or code in SERVER_CODES:
            # a server error can come after the write was committed: check before resending
            raise TransientError(where, retry_after=retry_after, in_doubt=writes)
        if resp.status_code in (400, 404, 413, 422) or code in TERMINAL_CODES:
            raise TerminalBatchError(where, detail=resp.text[:2000])
        if resp.status_code != 200 or not isinstance(env, dict) or code not in self.ok_codes:
            raise TerminalBatchError(f"unexpected answer: {where}", detail=resp.text[:2000])
        return env.get("data")


class CloudTarget(_HttpTarget):
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
        ids: list[str] = []
        page = 1
        while True:
            data = (
                self._post(
                    "/get/memory", {"user_id": user_id, "page": page, "size": page_size, "filter": where}, writes=False
                )
                or {}
            )
            items = data.get("memory_detail_list") or []
            ids += [str(m["id"]) for m in items if isinstance(m, dict) and m.get("id") is not None]
            if len(items) < page_size:
                return ids
            page += 1

    def delete_memories(self, memory_ids: list[str]) -> int:
        deleted = 0
        for i in range(0, len(memory_ids), 100):
            chunk = memory_ids[i : i + 100]
            self._post("/delete/memory", {"memory_ids": chunk}, writes=True)
            deleted += len(chunk)
        return deleted

    def delete_user_memories(self, user_id: str) -> None:
        """Every memory of a user (MemOS deletes by user_id; it does not say how many)."""
        self._post("/delete/memory", {"user_id": user_id}, writes=True)

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


class SelfHostedTarget(_HttpTarget):
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
            "still listed after three deletes; run forget again"
        )

    def delete_conversation_memories(self, user_id: str, conversation_id: str, batch_keys: list[str]) -> int:
        return self.delete_user_memories(user_id, conversation_id)

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
        holder = metadata
        for part in path:
            holder = holder.get(part) if isinstance(holder, dict) else None
        if not isinstance(holder, dict):
            return False
        got = holder.get(last, holder.get(f"etl_{last}"))
        if got is None or str(got) != str(want):
            return False
    return True


def make_target(cfg: TargetConfig, api_key: str | None, pool_size: int = 8):
    cls = {"cloud": CloudTarget, "self-hosted": SelfHostedTarget}[cfg.kind]
    return cls(cfg, api_key, pool_size)
