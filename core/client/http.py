"""The HTTP edge both MemOS adapters share: one session, one POST, and the one place where
transport failures and MemOS's answer envelopes are translated into core/errors.py's tree.

Callers never look at status codes or envelopes: they catch
`TransientError` (retry later; `in_doubt` says whether the request may have been applied,
`throttled` that the target asked us to slow down), `TerminalBatchError` (this request is
bad; quarantine it and go on) or `FatalTargetError` (stop the run: authentication, quota).
"""

from __future__ import annotations

import email.utils
import json
import time
from dataclasses import dataclass

import requests
from requests.adapters import HTTPAdapter

from core.config import TargetConfig
from core.errors import FatalTargetError, TerminalBatchError, TransientError

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


class HttpTarget:
    """What both adapters share: the session, the request body, the POST and its translation."""

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

    def _post(self, route: str, body: dict | str, writes: bool, final: frozenset[int] = frozenset()):
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
        return self._envelope(route, resp, writes, final)

    def _envelope(self, route: str, resp: requests.Response, writes: bool, final: frozenset[int] = frozenset()):
        """`final`: codes of this route that refuse the request for good, whatever their range
        (a knowledge-base upload's 501xx: too many files, too large, no such knowledge base)."""
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
        if code in final:
            raise TerminalBatchError(where, detail=resp.text[:2000])
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
