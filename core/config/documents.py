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

    @model_validator(mode="after")
    def _one_knowledgebase(self):
        if (self.knowledgebase is None) == (self.knowledgebase_id is None):
            raise ValueError("documents needs exactly one of knowledgebase (a name) or knowledgebase_id")
        return self

    @property
    def key(self) -> str:
        """The knowledge base as the ledger names it."""
        return self.knowledgebase or f"id:{self.knowledgebase_id}"
