"""AI apps' own stores read by the SQL source: each app's rows decoded into message columns
before mapping (`source.sql.app`, set by the app's preset): langchain.py, langgraph.py, vercel.py."""

from __future__ import annotations

from typing import Protocol

import pyarrow as pa

from core.config import Mapping
from tasks.quarantine import BadRow


class AppRows(Protocol):
    def columns(self, names: list[str]) -> list[str]:
        """The columns a decoded batch has, from the query's own."""
        ...

    def query(self, dialect: str, table: str | None) -> str | None:
        """The SELECT the app's rows are read with (None: the mapping's table or query)."""
        ...

    def decode(self, rb: pa.RecordBatch, offset: int, bad: list[BadRow]) -> pa.RecordBatch:
        """A page of rows decoded; a row that does not decode is appended to `bad`."""
        ...


def app_rows(mapping: Mapping) -> AppRows | None:
    sql = mapping.source.sql
    app = sql.app if sql else None
    separator = str(mapping.constants.get("user_separator") or "")
    if app == "langchain":
        from tasks.extract.apps.langchain import LangChainRows

        return LangChainRows(separator)
    if app == "langgraph":
        from tasks.extract.apps.langgraph import LangGraphRows

        return LangGraphRows(separator)
    if app == "vercel":
        from tasks.extract.apps.vercel import VercelRows

        return VercelRows(mapping.nest.media.file) if mapping.nest else VercelRows()
    return None
