"""Rate limits a fleet shares through the ledger: token buckets kept in the database.

A row of `rate_limits` is two buckets under one name, requests and tokens, with the levels they
hold at `updated_s` (seconds since the epoch by the database's clock, so the workers' clocks
never matter). A take is one UPDATE of that row, and the database serialises the takes on it
(PostgreSQL by the row lock: a take that waited re-reads the row the other one wrote; SQLite by
its write lock, BEGIN IMMEDIATE). It books the request for the first moment both buckets hold
enough, never earlier than the last booking:

    s = max(now, updated_s)                                 (bookings are kept in order)
    level(s) = min(burst, level + rate x (s - updated_s))   (refill, capped at the burst)
    at = s + max(0, (cost - level(s)) / rate) over both buckets
    level = min(burst, level(s) + rate x (at - s)) - cost,  updated_s = at

and returns `at - now`: the caller sleeps that long and sends. Levels never go below zero, so the
bookings are exactly what a token bucket admits (at most burst + rate x window in any window),
and one statement serves a request however many workers wait: no take ever fails and is retried.
A booking whose worker stops before it sends is lost capacity, never excess.

`now` is read once per statement (PostgreSQL's statement_timestamp(), before the row lock; SQLite's
'now', fixed for a statement): a take that waited for another's lock may read a `now` earlier
than that one's booking, and then books after it (the max above).
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from core.ledger.db import Store, guarded

#: per dialect: the database's clock (seconds since the epoch, one value per statement), and
#: the names of its many-argument minimum and maximum
_SQL = {
    "postgresql": ("extract(epoch from statement_timestamp())::float8", "LEAST", "GREATEST"),
    "sqlite": ("((julianday('now') - 2440587.5) * 86400.0)", "min", "max"),
}


@dataclass(frozen=True)
class Bucket:
    """One bucket's part of a take: `cost` from a level capped at `burst`, refilled at `rate` a
    second (> 0). A cost of 0 never waits (that limit is off)."""

    cost: float
    burst: float
    rate: float


def _take(dialect: str) -> str:
    """The take as one UPDATE ... RETURNING the seconds until the booked moment."""
    now, least, greatest = _SQL[dialect]
    s = f"{greatest}({now}, updated_s)"

    def level(col: str, p: str) -> str:  # a bucket at s
        return f"{least}(:{p}_burst, {col} + :{p}_rate * ({s} - updated_s))"

    req, tok = level("requests", "r"), level("tokens", "k")
    delay = f"{greatest}(0.0, (:r_cost - {req}) / :r_rate, (:k_cost - {tok}) / :k_rate)"
    return (
        "UPDATE rate_limits SET "
        f"requests = {least}(:r_burst, {req} + :r_rate * {delay}) - :r_cost, "
        f"tokens = {least}(:k_burst, {tok} + :k_rate * {delay}) - :k_cost, "
        f"updated_s = {s} + {delay} "
        f"WHERE name = :name RETURNING updated_s - {now}"
    )


class RateLimits(Store):
    @guarded("opening a fleet rate limit")
    def open_rate_limit(self, name: str, requests_burst: float, tokens_burst: float) -> None:
        """The limit's row, made full if it does not exist yet (a limit in use is left as it is)."""
        now = _SQL[self.engine.dialect.name][0]
        with self.engine.begin() as c:
            c.execute(
                sa.text(
                    "INSERT INTO rate_limits (name, requests, tokens, updated_s) "
                    f"VALUES (:name, :r, :t, {now}) ON CONFLICT (name) DO NOTHING"
                ),
                {"name": name, "r": requests_burst, "t": tokens_burst},
            )

    @guarded("taking from a fleet rate limit")
    def take_rate(self, name: str, requests: Bucket, tokens: Bucket) -> float:
        """Book one request on both buckets of `name` (open_rate_limit made them); returns the
        seconds until it may be sent (0.0: now)."""
        dialect = self.engine.dialect.name
        params = {
            "name": name,
            **{f"r_{k}": float(v) for k, v in vars(requests).items()},
            **{f"k_{k}": float(v) for k, v in vars(tokens).items()},
        }
        with self.engine.begin() as c:
            if dialect == "sqlite":  # the write lock first: the other processes on the file wait their turn
                c.exec_driver_sql("BEGIN IMMEDIATE")
            wait: float = c.execute(sa.text(_take(dialect)), params).scalar_one()
        return max(0.0, float(wait))
