"""What the dev-server does wrong, and how often: the fault settings, the rate-limit windows, and
the answer that breaks its connection half-way."""

from __future__ import annotations

import random
import threading
import time
from collections import deque

from fastapi.responses import Response


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
        # | {"store_nothing": true} (answered ok, no memory made) | {"duplicate": true} (every
        # memory twice); an entry with a "route" (e.g. "/add/knowledgebase-file") is taken only
        # by that route, one without by the next write of any route (see `scripted`)
        self.script: deque = deque()
        self.api_key: str | None = None
        self.get_message_fails = False  # a target that cannot say what it holds
        self.deletes_linger = False  # deletes answered with success that delete nothing (MemOS#2331)
        # knowledge bases (knowledge.py): MemOS Cloud's limits, settable so tests can use small ones
        self.max_files_per_upload = 20  # 50103 above it
        self.max_file_bytes = 100 * 2**20  # 50104 above it (100 MB)
        self.max_upload_bytes = 300 * 2**20  # 50105 above it (300 MB, the files of one request)
        # parsing: a file is `running` for parse_polls answers of get/knowledgebase-file and at
        # least parse_seconds after its upload, then `completed`, or `failed` when its name
        # matches one of parse_fail_names (fnmatch globs) or its bytes hold knowledge.PARSE_FAILS
        self.parse_polls = 0
        self.parse_seconds = 0.0
        self.parse_fail_names: list[str] = []
        for k, v in kw.items():
            if k == "script":
                self.script = deque(v)
            elif hasattr(self, k):
                setattr(self, k, v)
            else:
                raise ValueError(f"unknown fault {k!r}")
        self.rng = random.Random(self.seed)

    def scripted(self, route: str) -> dict | None:
        """The next scripted fault for a write to `route`: the first entry naming no route or
        this one, taken off the script; None: no fault scripted for it."""
        for i, fault in enumerate(self.script):
            if fault.get("route") in (None, route):
                del self.script[i]
                return fault
        return None

    def chance(self, share: float) -> bool:
        return bool(share) and self.rng.random() < share


class Window:
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


class DroppedResponse(Response):
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
