"""What the dev-server's routes share (store, faults, rate windows, failed extraction tasks), its
answer envelope, and the one preamble a route runs before its own work."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from fastapi.responses import JSONResponse

from memos_etl.devserver.faults import Faults, Window
from memos_etl.devserver.store import Store


def envelope(code: int, message: str, data=None, status: int = 200, headers: dict | None = None) -> JSONResponse:
    """MemOS's answer shape: `{code, message, data}`, with an HTTP status of its own."""
    return JSONResponse({"code": code, "message": message, "data": data}, status_code=status, headers=headers)


@dataclass
class Server:
    store: Store
    faults: Faults
    window: Window = field(default_factory=Window)
    failed_tasks: set[str] = field(default_factory=set)

    async def gate(self, request: Request, *, latency: bool = False, slow: bool = False) -> JSONResponse | None:
        """The preamble: the network's latency where the route has it, a slow answer by chance
        (adds), then the API key. An answer means the route stops there."""
        if latency and self.faults.latency_ms:
            await asyncio.sleep(self.faults.latency_ms / 1000.0)
        if slow and self.faults.chance(self.faults.slow_rate):
            await asyncio.sleep(self.faults.slow_ms / 1000.0)
        key = self.faults.api_key
        if key and request.headers.get("authorization") != f"Token {key}":
            return envelope(40100, "invalid or missing API key", status=401)
        return None


async def server(request: Request) -> Server:
    """The route's view of the shared state (a FastAPI dependency; async, so it runs on the
    event loop: a plain function would be sent to a worker thread on every request, and that
    hop's jitter moves when requests reach the rate windows)."""
    return request.app.state.server


Dev = Annotated[Server, Depends(server)]  # a route's `srv: Dev` parameter
