"""Validate: run the expectation suite over a whole mapped batch; split good rows from bad.

Great Expectations (1.x) checks the canonical columns; `result_format=COMPLETE` gives the
index of each failing row, so exactly those rows are quarantined, each with every reason it
failed. GX is imported once per process (it costs seconds) and only by code that validates.
"""

from __future__ import annotations

import logging
import shutil
import threading
import warnings
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import Any, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.budget import estimate_tokens, request_overhead_tokens
from core.config import LoadConfig, Mapping
from core.imports import import_in_background
from schemas.message import ALLOWED_ROLES, MAX_ID_CHARS

_gx_lock = threading.Lock()


def preload() -> threading.Thread:
    """Import Great Expectations on a background thread (seconds of CPU) while the caller
    lists the source, starts Prefect's API server and reads the first files; the first
    Validator then finds it imported, or waits on the import lock for the rest."""
    return import_in_background("gx-import", "great_expectations", "great_expectations.expectations")


_VALIDATED = ["source_key", "user_id", "conversation_id", "role", "content", "chat_time", "agent_id", "app_id"]


@dataclass(frozen=True)
class Check:
    """One expectation and the reason a row failing it gets in quarantine."""

    kind: str  # not_null | in_set | length | not_blank | between
    column: str
    reason: str
    max_len: int | None = None
    min_len: int = 1
    values: tuple = ALLOWED_ROLES  # in_set
    low: object = None  # between
    high: object = None


#: "empty or only whitespace": Python's \s spelled out as its 29 characters, anchored with \Z,
#: so pandas hands the match to Arrow's RE2 (with \s or $ it falls back to Python, row by row)
BLANK = (
    "^["
    + "".join(
        chr(c)
        for c in (
            *range(0x09, 0x0E),
            *range(0x1C, 0x21),
            0x85,
            0xA0,
            0x1680,
            *range(0x2000, 0x200B),
            0x2028,
            0x2029,
            0x202F,
            0x205F,
            0x3000,
        )
    )
    + "]*\\Z"
)

#: Raw column copied into the validation frame for `checks.allowed_speakers`.
SPEAKER = "__speaker__"


def build_checks(mapping: Mapping) -> list[Check]:
    """The suite for a mapping: derived from the canonical schema and what the mapping fills."""
    checks = [Check("not_null", c, f"{c} is missing") for c in ("source_key", "user_id", "conversation_id", "content")]
    checks.append(Check("not_null", "role", "role is missing (no role value and no speaker rule matched)"))
    if mapping.fields.chat_time is not None:
        checks.append(
            Check(
                "not_null", "chat_time", f"chat_time is missing or matches none of time.formats {mapping.time.formats}"
            )
        )
    checks.append(Check("in_set", "role", f"role not one of {', '.join(ALLOWED_ROLES)}"))
    for c in ("user_id", "conversation_id", "agent_id", "app_id"):
        if c in ("user_id", "conversation_id") or getattr(mapping.fields, c):
            checks.append(Check("length", c, f"{c} longer than {MAX_ID_CHARS} characters or empty", MAX_ID_CHARS))
    checks.append(Check("not_blank", "content", "content is empty or only whitespace"))
    extra = mapping.checks
    if extra.allowed_speakers is not None:
        checks.append(
            Check("in_set", SPEAKER, "speaker not in checks.allowed_speakers", values=tuple(extra.allowed_speakers))
        )
    if extra.max_content_chars:
        checks.append(
            Check(
                "length",
                "content",
                f"content longer than checks.max_content_chars={extra.max_content_chars}",
                extra.max_content_chars,
                min_len=0,
            )
        )
    if extra.chat_time_min or extra.chat_time_max:
        checks.append(
            Check(
                "between",
                "chat_time",
                f"chat_time outside [{extra.chat_time_min}, {extra.chat_time_max}] (checks.chat_time_min/max)",
                low=_utc(extra.chat_time_min),
                high=_utc(extra.chat_time_max),
            )
        )
    return checks


def _utc(value):

    import pandas as pd

    if value is None:
        return None
    return pd.Timestamp(value if value.tzinfo else value.replace(tzinfo=UTC)).tz_convert("UTC")


def speaker_column(mapping: Mapping) -> str | None:
    if mapping.roles.speaker_column:
        return mapping.roles.speaker_column
    tpl = mapping.template("role")
    return tpl.names[0] if tpl is not None and tpl.is_column else None


class Validator:
    """Holds one ephemeral GX context and suite for a mapping; validate() is thread-safe."""

    def __init__(self, mapping: Mapping, load: LoadConfig, data_docs: bool = False):
        self.mapping, self.load, self.data_docs = mapping, load, data_docs
        self._checkpoint: Any = None
        self.checks = build_checks(mapping)
        self.max_message_tokens = load.max_tokens_per_request - request_overhead_tokens(load)
        with _gx_lock:
            self._batch_definition, self._suite = self._build_suite()
        self._lock = threading.Lock()  # one GX validation at a time: its context is not thread-safe

    def _build_suite(self):
        with warnings.catch_warnings():  # GX's own deprecated imports are not our users' concern
            warnings.simplefilter("ignore", DeprecationWarning)
            import great_expectations as gx
            import great_expectations.expectations as gxe
            from great_expectations.data_context.types.base import ProgressBarsConfig
            from great_expectations.execution_engine import pandas_execution_engine

        # GX fingerprints every pandas batch it loads (hash_pandas_object over the whole frame,
        # twice per validate call) for a batch marker nothing here reads, unless the frame is
        # over HASH_THRESHOLD bytes: 0 turns it off. That was ~2/3 of a 131k-row validation.
        if hasattr(pandas_execution_engine, "HASH_THRESHOLD"):
            pandas_execution_engine.HASH_THRESHOLD = 0
        for name in ("great_expectations", "great_expectations.data_context.types.base"):
            logging.getLogger(name).setLevel(logging.WARNING)
        ctx = gx.get_context(mode="ephemeral")
        ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
        asset = ctx.data_sources.add_pandas(f"src_{self.mapping.source.name}").add_dataframe_asset("batch")
        suite = gx.ExpectationSuite(name=f"{self.mapping.source.name}.messages")
        for i, chk in enumerate(self.checks):
            meta = {"check": i}
            if chk.kind == "not_null":
                exp: Any = gxe.ExpectColumnValuesToNotBeNull(column=chk.column, meta=meta)
            elif chk.kind == "in_set":
                exp = gxe.ExpectColumnValuesToBeInSet(column=chk.column, value_set=list(chk.values), meta=meta)
            elif chk.kind == "length":
                exp = gxe.ExpectColumnValueLengthsToBeBetween(
                    column=chk.column, min_value=chk.min_len, max_value=chk.max_len, meta=meta
                )
            elif chk.kind == "between":
                exp = gxe.ExpectColumnValuesToBeBetween(
                    column=chk.column, min_value=cast(Any, chk.low), max_value=cast(Any, chk.high), meta=meta
                )
            else:
                exp = gxe.ExpectColumnValuesToNotMatchRegex(column=chk.column, regex=BLANK, meta=meta)
            suite.add_expectation(exp)
        definition = asset.add_batch_definition_whole_dataframe("whole")
        suite = ctx.suites.add(suite)
        if self.data_docs:
            # opt-in: a checkpoint stores every batch's result and renders it into Data Docs
            # (an HTML site in a temp dir, copied out by publish_docs); slower than validate()
            vd = ctx.validation_definitions.add(gx.ValidationDefinition(name="messages", data=definition, suite=suite))
            self._checkpoint = ctx.checkpoints.add(
                gx.Checkpoint(
                    name="memos-etl",
                    validation_definitions=[vd],
                    actions=[gx.checkpoint.UpdateDataDocsAction(name="data-docs")],
                    result_format={"result_format": "COMPLETE", "include_unexpected_rows": False},
                )
            )
            self._context = ctx
        return definition, suite

    def reasons(self, table: pa.Table, raw: pa.RecordBatch | None = None) -> dict[int, list[str]]:
        """Row index -> every reason the row fails; rows absent from the result passed."""
        out: dict[int, list[str]] = defaultdict(list)
        if table.num_rows == 0:
            return out
        frame = table.select(_VALIDATED).to_pandas()
        if self.mapping.checks.allowed_speakers is not None:
            col = speaker_column(self.mapping)
            frame[SPEAKER] = raw.column(col).cast(pa.string()).to_pandas() if raw is not None and col else None
        with self._lock:
            if self._checkpoint is not None:
                run = self._checkpoint.run(batch_parameters={"dataframe": frame})
                result = next(iter(run.run_results.values()))
            else:
                batch = self._batch_definition.get_batch(batch_parameters={"dataframe": frame})
                result = batch.validate(
                    self._suite, result_format={"result_format": "COMPLETE", "include_unexpected_rows": False}
                )
        for res in result.results:
            if res.success:
                continue
            chk = self.checks[res.expectation_config.meta["check"]]
            if res.exception_info and res.exception_info.get("raised_exception"):
                raise RuntimeError(f"expectation {chk} could not run: {res.exception_info}")
            values = res.result.get("unexpected_list") or []
            for j, idx in enumerate(res.result.get("unexpected_index_list") or []):
                shown = _show(values[j]) if j < len(values) and chk.kind in ("in_set", "length", "between") else ""
                out[int(idx)].append(chk.reason + shown)
        # the request budget is in estimated tokens (utf-8 bytes), which no built-in expectation measures
        tokens = estimate_tokens(pc.fill_null(table.column("content"), ""), self.load)
        for idx in np.flatnonzero(tokens > self.max_message_tokens):
            out[int(idx)].append(
                f"content too large for one request (~{int(tokens[idx])} tokens, "
                f"budget load.max_tokens_per_request={self.load.max_tokens_per_request})"
            )
        return out

    def suite_json(self) -> dict:
        """The expectation suite as Great Expectations serialises it (for review and versioning)."""
        suite = self._suite.to_json_dict()
        for exp in suite.get("expectations", []):
            exp.pop("id", None)  # random per process: left out so the file is stable
        suite.pop("id", None)
        return suite

    def publish_docs(self, dest: Path) -> Path | None:
        """Copy the Data Docs site built during this run to `dest`; returns its index page."""
        if self._checkpoint is None:
            return None
        for site in self._context.get_docs_sites_urls():
            src = Path((site["site_url"] or "").removeprefix("file://")).parent
            if src.exists():
                shutil.rmtree(dest, ignore_errors=True)
                shutil.copytree(src, dest)
                return dest / "index.html"
        return None


def _show(value) -> str:
    text = str(value)
    return f" (got {text!r})" if len(text) <= 40 else f" (got {len(text)} characters)"


def split(table: pa.Table, reasons: dict[int, list[str]]) -> tuple[pa.Table, np.ndarray]:
    """(good rows, indices of bad rows) for a batch and its reasons."""
    if not reasons:
        return table, np.empty(0, dtype=np.int64)
    bad = np.fromiter(sorted(reasons), dtype=np.int64)
    keep = np.ones(table.num_rows, dtype=bool)
    keep[bad] = False
    return table.filter(pa.array(keep)), bad
