"""The dev-server's FastAPI app, and the two ways to run it: in a background thread on loopback
(tests, the demo) or in the foreground (`memos-etl dev-server`)."""

from __future__ import annotations

import socket
import threading
import time

import uvicorn
from fastapi import FastAPI

from memos_etl.devserver import cloud, control, knowledge, product
from memos_etl.devserver.faults import Faults
from memos_etl.devserver.state import Server
from memos_etl.devserver.store import Store


def create_app(store: Store | None = None, faults: Faults | None = None) -> FastAPI:
    app = FastAPI(title="memos-etl dev-server", docs_url=None, redoc_url=None)
    app.state.server = Server(store or Store(), faults or Faults())
    app.state.store, app.state.faults = app.state.server.store, app.state.server.faults
    app.state.knowledge = knowledge.Knowledge(app.state.store)
    for router in (cloud.router, knowledge.router, product.router, control.router, knowledge.control):
        app.include_router(router)
    return app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DevServer:
    """Runs the dev-server in a background thread on loopback (tests, demo)."""

    def __init__(self, port: int = 0, db: str = ":memory:", **faults):
        self.port = port or free_port()
        self.faults = Faults()
        self.faults.reset(**faults)
        self.store = Store(db)
        self.app = create_app(self.store, self.faults)
        # injected connection drops are exceptions by design: keep uvicorn from printing them
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=self.port, log_level="critical", access_log=False, timeout_keep_alive=30
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="memos-dev-server", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> DevServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError(f"dev-server did not start on port {self.port}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def serve(host: str, port: int, db: str, **faults) -> None:
    """Run in the foreground (`memos-etl dev-server`)."""
    f = Faults()
    f.reset(**faults)
    uvicorn.run(create_app(Store(db), f), host=host, port=port, log_level="info")
