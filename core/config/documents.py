"""A documents source's knowledge base (`documents:` in a mapping whose source has
`format: documents`): where its files go in MemOS and how long a run waits for parsing."""

from __future__ import annotations

from pydantic import Field, model_validator

from core.config.files import Strict


class DocumentsConfig(Strict):
    knowledgebase: str | None = None  # its name: created on the first run (the ledger keeps its id)
    knowledgebase_id: str | None = None  # ... or one that exists already
    description: str = ""  # for a knowledge base the run creates
    # how long a run polls MemOS for its uploads' parse status (files still parsing then are
    # `running` in the report; the next run or `verify` asks again)
    parse_wait_s: float = Field(default=120.0, ge=0)
    # what MemOS takes (its published limits); a file over them is skipped with its reason
    max_file_bytes: int = Field(default=100 * 2**20, ge=1)
    max_pages: int = Field(default=500, ge=1)
    # --- the open-source (self-hosted) MemOS server only (docs/documents-self-hosted.md) ---
    # It has no knowledge bases: the knowledge base is a cube (the name, or knowledgebase_id, as
    # the cube id) and the files are added under this user id. Default: the cube id itself, so
    # the documents are nobody's personal memories (erasing a chat user leaves them alone) and a
    # search as that user reads the cube without naming it (the server's default readable cube
    # is the user id).
    user_id: str | None = None
    # The server only reads a file it downloads from an http(s) URL: memos-etl serves each file
    # from a small HTTP server of its own while that file's add runs, at a one-time unguessable
    # path. Where that server listens (port 0: any free port) ...
    serve_host: str = "127.0.0.1"
    serve_port: int = Field(default=0, ge=0, le=65535)
    # ... and the base URL MemOS reaches it by, when that is another address than
    # http://serve_host:port (a container, a proxy, another host): e.g. http://etl.internal:8765
    serve_url: str | None = None

    @model_validator(mode="after")
    def _one_knowledgebase(self):
        if (self.knowledgebase is None) == (self.knowledgebase_id is None):
            raise ValueError("documents needs exactly one of knowledgebase (a name) or knowledgebase_id")
        return self

    @model_validator(mode="after")
    def _serve_url(self):
        if self.serve_url is not None and not self.serve_url.startswith(("http://", "https://")):
            raise ValueError("documents.serve_url must be an http:// or https:// URL (MemOS downloads only those)")
        return self

    @property
    def key(self) -> str:
        """The knowledge base as the ledger names it."""
        return self.knowledgebase or f"id:{self.knowledgebase_id}"
