"""Every error the project raises on purpose, in one shallow tree; callers catch the level they
care about. Each names what is wrong (source, file, row, config key) and what to do.

    MemosEtlError                 a run or command stops with this message
    +-- ConfigError               a config or mapping key, at start
    +-- SourceError               a source cannot be read as configured
    |   +-- SchemaDrift           a mapped column disappeared or changed type
    |   +-- TableReadError        a table's version cannot be read: the run stops, its cursor stays
    |   +-- SourceUnavailable     the source's store cannot be reached now: a later try may work
    +-- QualityThresholdError     too many rows failed validation
    +-- TargetError               what the MemOS target answered (or did not)
    |   +-- TransientError        try again later (maybe in doubt)
    |   +-- TerminalBatchError    this request refused for good
    |   +-- FatalTargetError      the whole run refused (auth, quota)
    |   +-- TargetIdentityError   a source delivered elsewhere: maybe the same MemOS by another URL
    |   +-- CannotTell            the target cannot list what a conversation holds
    +-- LedgerError               the ledger database failed
    +-- OperationError            replay, rollback, reset or erase refused

    InputFormatError (ValueError) a file or record is not what its reader expects; readers turn
    +-- NotJson, NotJsonl,        it into a quarantine row or a SourceError, so a user never
        WrongFormat, RowTooLong,  meets it as such
        NestError

The HTTP edge (core/client/) and the ledger's guard (core/ledger/db.py) translate library
errors into these, once, by exception type; nothing above them inspects messages.
"""

from __future__ import annotations


class MemosEtlError(Exception):
    """Base class for every error this project raises on purpose."""


class ConfigError(MemosEtlError):
    """A config or mapping file is invalid; raised at start, before anything is read or sent."""

    def __init__(self, path: str, key: str, problem: str):
        self.path, self.key, self.problem = path, key, problem
        super().__init__(f"{path}: {key}: {problem}")


class SourceError(MemosEtlError):
    """A source cannot be read as configured (missing file, missing column, unreadable object)."""

    def __init__(self, source: str, location: str, problem: str):
        self.source, self.location, self.problem = source, location, problem
        super().__init__(f"source {source!r}, {location}: {problem}")


class SchemaDrift(SourceError):
    """A mapped column disappeared or changed type: the source stops before anything is sent."""


class TableReadError(SourceError):
    """A version of a table cannot be read (Delta: vacuumed files, an expired log; Iceberg: an
    expired snapshot, a rollback; either: a table created again): the run stops and the cursor
    stays, so no change is passed over."""


class SourceUnavailable(SourceError):
    """The source's store did not answer or said to come back later (connection refused or
    dropped, a timeout, a 5xx or throttling answer): nothing about the source is wrong, so an
    orchestrator retries it, while any other SourceError (a missing table, a wrong format, bad
    credentials) fails at once. The run stops and its cursor stays."""


class QualityThresholdError(MemosEtlError):
    """Too many rows failed validation; the run stops before sending anything."""

    def __init__(self, source: str, failed: int, read: int, max_share: float, top_reasons: list[tuple[str, int]]):
        self.failed, self.read, self.max_share = failed, read, max_share
        reasons = "; ".join(f"{r} ({n})" for r, n in top_reasons[:5])
        share = failed / read if read else 0.0
        super().__init__(
            f"source {source!r}: {failed} of {read} rows failed validation ({share:.1%}), more than "
            f"load.max_failed_share={max_share:.1%}. Nothing was sent. Top reasons: {reasons}. "
            "Fix the mapping or the data (see `memos-etl quarantine`), or raise the threshold."
        )


class TargetError(MemosEtlError):
    """The MemOS target answered with a refusal or an error, or did not answer."""


class FatalTargetError(TargetError):
    """The target refused the run as a whole (auth, quota): stop now; the ledger stays consistent."""


class TargetIdentityError(TargetError):
    """A source delivered to other target names and never to this one: maybe the same MemOS
    under another URL. Stop before sending, so a URL change cannot duplicate a corpus."""

    def __init__(self, source: str, target: str, others: dict[str, int]):
        self.source, self.target, self.others = source, target, others
        named = ", ".join(f"{t!r} ({n} messages)" for t, n in sorted(others.items(), key=lambda kv: -kv[1]))
        first = max(others, key=lambda name: others[name])
        super().__init__(
            f"source {source!r} has messages delivered to {named} and none to {target!r}. Nothing was sent. "
            f"If this is the same MemOS reached through another URL, set target.name: {first} in the config "
            f"(or MEMOS_ETL__TARGET__NAME={first}); if it is a different MemOS that should get everything, "
            "run again with --new-target."
        )


class TransientError(TargetError):
    """Try again later.

    `in_doubt`: the request may have been applied (no answer, or a server error that may
    have come after the write). `throttled`: the target refused it as too fast.
    """

    def __init__(
        self,
        message: str,
        in_doubt: bool = False,
        retry_after: float | None = None,
        throttled: bool = False,
        answered: bool = True,
    ):
        super().__init__(message)
        self.in_doubt, self.retry_after, self.throttled = in_doubt, retry_after, throttled
        self.answered = answered  # False: no complete answer came (the server may still be working)


class TerminalBatchError(TargetError):
    """The target refused this request for good; `detail` holds its answer."""

    def __init__(self, message: str, detail: str):
        super().__init__(message)
        self.detail = detail


class CannotTell(TargetError):
    """The target has no way to list what a conversation holds."""


class LedgerError(MemosEtlError):
    """The ledger database failed: the run stops, with what it did so far reported."""

    def __init__(self, url: str, what: str, cause: BaseException):
        self.url, self.what = url, what
        detail = str(getattr(cause, "orig", None) or cause).strip().splitlines()
        super().__init__(
            f"ledger {url}: {what} failed: {detail[0] if detail else type(cause).__name__}. "
            "Nothing is lost: what was sent is recorded as sent or delivered, the rest is sent by "
            "the next run once the ledger is back."
        )


class OperationError(MemosEtlError):
    """An operation on delivered data (replay, rollback, reset, erase) refused: the message says why."""


class InputFormatError(ValueError):
    """A file or record is not what its reader expects; the reader turns it into a quarantine
    row (one record) or a SourceError (the whole unit)."""


class NotJson(InputFormatError):
    """The document is not JSON (a JSON source); the message says where."""


class NotJsonl(InputFormatError):
    """No line of the first block is a JSON object: the file is not JSONL."""


class WrongFormat(InputFormatError):
    """The bytes are another format than the name says (a gzip file named .jsonl, a binary file)."""


class RowTooLong(InputFormatError):
    """A CSV row longer than source.max_record_bytes."""


class NestError(InputFormatError):
    """The record does not have the shape the mapping's `nest` describes."""


def first_line(exc: BaseException, limit: int | None = None) -> str:
    """The first line of a library's error message (its type name when it has none), for a
    one-line report; cut to `limit` characters when given."""
    line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return line if limit is None else line[:limit]
