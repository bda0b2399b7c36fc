"""Errors a user sees. Each names what is wrong (source, file, row, config key) and what to do."""

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


class FatalTargetError(MemosEtlError):
    """The target refused the run as a whole (auth, quota): stop now; the ledger stays consistent."""


class TargetIdentityError(MemosEtlError):
    """A source delivered to other target names and never to this one: maybe the same MemOS
    under another URL. Stop before sending, so a URL change cannot duplicate a corpus."""

    def __init__(self, source: str, target: str, others: dict[str, int]):
        self.source, self.target, self.others = source, target, others
        named = ", ".join(f"{t!r} ({n} messages)" for t, n in sorted(others.items(), key=lambda kv: -kv[1]))
        first = max(others, key=others.get)
        super().__init__(
            f"source {source!r} has messages delivered to {named} and none to {target!r}. Nothing was sent. "
            f"If this is the same MemOS reached through another URL, set target.name: {first} in the config "
            f"(or MEMOS_ETL__TARGET__NAME={first}); if it is a different MemOS that should get everything, "
            "run again with --new-target."
        )


class OperationError(MemosEtlError):
    """An operation on delivered data (replay, rollback, reset, forget) refused: the message says why."""
