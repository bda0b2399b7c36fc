"""A file's bytes served to MemOS over HTTP while one add reads it.

The open-source MemOS server reads a file part only by downloading an http(s) URL (its
FileContentParser; base64 is not decoded, local paths are not read). memos-etl serves each
file itself: a threaded HTTP server of the standard library, each file at a one-time path of
256 random bits, answered once and removed after its add is answered (`withdraw`), whether or
not MemOS fetched it. Anything else is 404, with no listing and no log line per request."""

from __future__ import annotations

import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import quote


class FileServer:
    """`with FileServer(host, port, base_url) as fs: url = fs.offer(data, name, media_type)`."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, base_url: str | None = None):
        self._files: dict[str, tuple[bytes, str]] = {}  # path -> (bytes, media type)
        self._lock = threading.Lock()
        self.fetched: list[str] = []  # paths answered with their bytes (tests read it)
        self._httpd = ThreadingHTTPServer((host, port), _handler(self))
        self._httpd.daemon_threads = True
        self.port = int(self._httpd.server_address[1])
        shown = f"[{host}]" if ":" in host else host
        self.base_url = (base_url or f"http://{shown}:{self.port}").rstrip("/")
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(0.05,), name="memos-etl-files", daemon=True
        )
        self._thread.start()

    def offer(self, data: bytes, name: str, media_type: str = "application/octet-stream") -> str:
        """The URL MemOS fetches `data` from: once, until withdrawn. Its last segment is the
        file's name (MemOS reads the type from the URL's extension when the part names none)."""
        path = f"/{secrets.token_urlsafe(32)}/{quote(name.rsplit('/', 1)[-1] or 'file', safe='')}"
        with self._lock:
            self._files[path] = (data, media_type)
        return self.base_url + path

    def withdraw(self, url: str) -> None:
        with self._lock:
            self._files.pop(url[len(self.base_url) :], None)

    def take(self, path: str) -> tuple[bytes, str] | None:
        """A file's bytes, handed out once."""
        with self._lock:
            got = self._files.pop(path, None)
            if got is not None:
                self.fetched.append(path)
            return got

    @property
    def offered(self) -> int:
        with self._lock:
            return len(self._files)

    def close(self) -> None:
        with self._lock:
            self._files.clear()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FileServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _handler(server: FileServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "memos-etl"
        sys_version = ""

        def do_GET(self) -> None:  # noqa: N802  (the standard library's name)
            # the token and the name, whatever prefix a proxy in front (serve_url) kept
            path = self.path.split("?", 1)[0]
            got = server.take("/" + "/".join(path.rsplit("/", 2)[-2:]) if path.count("/") >= 2 else path)
            if got is None:
                self.send_error(404)
                return
            data, media_type = got
            self.send_response(200)
            self.send_header("Content-Type", media_type)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args) -> None:  # the paths are secrets: not logged
            pass

    return Handler
