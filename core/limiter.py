"""Client-side rate limiting shared by every sender of a run.

MemOS enforces requests per second and tokens per minute over sliding windows. We keep the
same two windows on our side (a log of recent sends), so a run that respects them is never
refused, however many conversations are in flight. Limits are scaled by `headroom` because
the server counts a request when it arrives, a little after we counted it when it left.

Adaptive: each throttling answer (HTTP 429, codes 40300/40309) multiplies the allowed rate
by `decrease` (down to `floor`); every success afterwards wins back `increase` of it, so a
shared key that other clients also use settles below the limit instead of oscillating.
With no request limit configured, the first throttling answer sets one: the rate actually
sent over the last second, decreased; successes then raise it again (additive increase).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from core.errors import ConfigError

log = logging.getLogger("memos_etl")

if TYPE_CHECKING:
    from core.ledger.ratelimits import Bucket


class RateLimiter:
    def __init__(
        self,
        requests_per_second: float = 0.0,
        tokens_per_minute: float = 0.0,
        *,
        headroom: float = 0.97,
        token_window_s: float = 60.0,
        decrease: float = 0.7,
        increase: float = 0.02,
        floor: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] | None = None,
    ):
        self.rps = requests_per_second
        self.tpm = tokens_per_minute
        self.headroom, self.decrease, self.increase, self.floor = headroom, decrease, increase, floor
        self.window = token_window_s  # MemOS counts tokens per minute; benchmarks compress time
        self.factor = 1.0
        self._clock = clock
        self._cond = threading.Condition()
        self._sleep = sleep
        self._sends: deque[float] = deque()
        self._tokens: deque[tuple[float, int]] = deque()
        self._token_sum = 0
        self.waited_s = 0.0
        self.throttled = 0
        self.learned = False  # the request limit was learned from throttling, not configured
        self._recent: deque[float] = deque()  # sends of the last second, even when not limiting

    @property
    def enabled(self) -> bool:
        return bool(self.rps or self.tpm or self.learned)

    def acquire(self, tokens: int, stop: threading.Event | None = None) -> float:
        """Block until a request of `tokens` fits both windows; returns the seconds waited."""
        if not self.enabled:
            with self._cond:
                now = self._clock()
                self._recent.append(now)
                while self._recent and now - self._recent[0] >= 1.0:
                    self._recent.popleft()
            return 0.0
        waited = 0.0
        with self._cond:
            while True:
                delay = self._delay(tokens)
                if delay <= 1e-6:  # float noise of (now - then) must not spin the loop
                    now = self._clock()
                    self._sends.append(now)
                    self._tokens.append((now, tokens))
                    self._token_sum += tokens
                    self.waited_s += waited
                    return waited
                if stop is not None and stop.is_set():
                    self.waited_s += waited
                    return waited
                if self._sleep is not None:  # tests drive a fake clock
                    self._sleep(delay)
                else:
                    self._cond.wait(delay)
                waited += delay

    def _delay(self, tokens: int) -> float:
        now = self._clock()
        while self._sends and now - self._sends[0] >= 1.0:
            self._sends.popleft()
        while self._tokens and now - self._tokens[0][0] >= self.window:
            self._token_sum -= self._tokens.popleft()[1]
        delay = 0.0
        scale = self.headroom * self.factor
        if self.rps:
            rate = self.rps * scale
            allowed = max(1, int(rate))
            if len(self._sends) >= allowed:
                delay = max(delay, 1.0 - (now - self._sends[len(self._sends) - allowed]))
            if self._sends:
                # even spacing, not bursts at the start of each second: bursts arrive bunched
                # and the server, counting arrivals, would see more than the limit
                delay = max(delay, 1.0 / rate - (now - self._sends[-1]))
        if self.tpm:
            budget = self.tpm * scale
            if self._tokens and self._token_sum + tokens > budget:
                # wait until enough of the oldest sends have left the one-minute window
                excess = self._token_sum + tokens - budget
                freed = 0
                for t, n in self._tokens:
                    freed += n
                    if freed >= excess:
                        delay = max(delay, self.window - (now - t))
                        break
        return delay

    def on_throttled(self) -> None:
        with self._cond:
            self.throttled += 1
            if not self.rps:
                now = self._clock()
                recent = sum(1 for t in self._recent if now - t < 1.0) or 1
                self.rps, self.learned = max(1.0, recent * self.decrease), True
                self._sends = deque(t for t in self._recent if now - t < 1.0)
            elif self.learned:
                self.rps = max(1.0, self.rps * self.decrease)
            else:
                self.factor = max(self.floor, self.factor * self.decrease)

    def on_success(self) -> None:
        if self.learned:
            with self._cond:
                self.rps += self.increase * 10  # additive increase: +0.2 requests/s per success
                self._cond.notify_all()
        elif self.factor < 1.0:
            with self._cond:
                self.factor = min(1.0, self.factor + self.increase)
                self._cond.notify_all()


class FleetLimiter:
    """One rate limit for every worker of a fleet: two token buckets, `<name>-requests` and
    `<name>-tokens`, kept where all workers see them (PrefectFleetLimiter, StateStoreFleetLimiter).

    A token bucket admits at most burst + rate x window in any window of that length. MemOS
    counts over sliding windows (1 s for requests, `token_window_s`, a minute, for tokens), so
    the rate is set to (limit x headroom - burst) / window: the fleet stays under, whatever
    the timing. Each acquisition is one call to where the buckets are kept, once per request,
    never per message. The per-process RateLimiter still runs in front of it (AIMD on throttling).
    """

    def __init__(
        self,
        name: str,
        requests_per_second: float,
        tokens_per_minute: float,
        max_tokens_per_request: int,
        headroom: float = 0.97,
        token_window_s: float = 60.0,
    ):
        self.name = name
        self.requests = f"{name}-requests" if requests_per_second else None
        self.tokens = f"{name}-tokens" if tokens_per_minute else None
        self.req_burst = 1
        # burst + rate x 1 s stays under the limit; below 2 requests a second that leaves (almost)
        # nothing, so there the requests are spaced 2/(limit x headroom) s apart: with a burst
        # of one, a 1 s window then holds at most one request (a limit of 1 once gave 0.1/s)
        limit = requests_per_second * headroom
        self.req_rate = max(limit - self.req_burst, limit / 2)
        # a request's tokens are taken at once, so the burst must hold the largest request
        self.tok_burst = int(max(max_tokens_per_request, tokens_per_minute * 0.02))
        self.tok_rate = max(1.0, (tokens_per_minute * headroom - self.tok_burst) / token_window_s)

    def ensure(self) -> None:
        """Create or update the buckets where they are kept (idempotent)."""
        raise NotImplementedError

    def acquire(self, n_tokens: int, stop: threading.Event | None = None) -> float:
        """Block until the fleet may send one request of `n_tokens`, or until `stop` is set (the
        run is stopping: the caller then sends nothing); returns the seconds waited."""
        raise NotImplementedError


class PrefectFleetLimiter(FleetLimiter):
    """The buckets as two Prefect global concurrency limits with slot decay on the Prefect server
    all workers use: `limit` slots of burst, refilled at `slot_decay_per_second`. Each
    acquisition is one or two calls to the Prefect API (a few ms)."""

    def ensure(self) -> None:
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            if self.requests:
                client.upsert_global_concurrency_limit_by_name(self.requests, self.req_burst, self.req_rate)
            if self.tokens:
                client.upsert_global_concurrency_limit_by_name(self.tokens, self.tok_burst, self.tok_rate)

    def acquire(self, n_tokens: int, stop: threading.Event | None = None) -> float:
        from prefect.concurrency.sync import rate_limit

        # Prefect's own wait (polls at the server's Retry-After, one acquisition at a time per
        # process) cannot be interrupted: a stopping run skips the next wait, not the current one
        started = time.monotonic()
        if self.requests:
            rate_limit(self.requests, occupy=1, strict=True)
        if self.tokens and n_tokens > 0 and not (stop is not None and stop.is_set()):
            rate_limit(self.tokens, occupy=min(int(n_tokens), self.tok_burst), strict=True)
        return time.monotonic() - started


class RateStore(Protocol):
    """Where StateStoreFleetLimiter keeps its buckets: the ledger (core/ledger/ratelimits.py)."""

    def open_rate_limit(self, name: str, requests_burst: float, tokens_burst: float) -> None: ...
    def take_rate(self, name: str, requests: Bucket, tokens: Bucket) -> float: ...


class StateStoreFleetLimiter(FleetLimiter):
    """The buckets as one row of the ledger's `rate_limits` table, in the database every worker
    of the fleet already shares (PostgreSQL; or one SQLite file for processes on one machine).

    An acquisition is one SQL statement: it books the request on both buckets at once, for the
    first moment both hold enough by the database's clock, and the limiter sleeps until then
    (core/ledger/ratelimits.py). Booked together, a request waiting for tokens holds no request
    slot meanwhile, and it is sent when both buckets allow it.
    """

    def __init__(self, store: RateStore, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.store = store
        self.takes = 0  # statements run: tests and benchmarks read it

    def ensure(self) -> None:
        self.store.open_rate_limit(self.name, self.req_burst, self.tok_burst)

    def acquire(self, n_tokens: int, stop: threading.Event | None = None) -> float:
        from core.ledger.ratelimits import Bucket

        tokens = min(int(n_tokens), self.tok_burst) if self.tokens and n_tokens > 0 else 0
        started = time.monotonic()
        self.takes += 1
        wait = self.store.take_rate(
            self.name,
            Bucket(1 if self.requests else 0, self.req_burst, self.req_rate),
            Bucket(tokens, self.tok_burst, self.tok_rate),
        )
        if wait > 0:
            # A stopping run stops waiting at once and does not send. Its booking stays: the
            # slot goes unused, which only makes the fleet a little slower, never faster than
            # the limit (bookings queue up, so with many workers this wait can be long).
            if stop is None:
                time.sleep(wait)
            else:
                stop.wait(wait)
        return time.monotonic() - started


def reports_to_prefect() -> bool:
    """Prefect is installed and this process reports to a Prefect API: inside a flow run, or
    an API configured (PREFECT_API_URL, or the active profile, `.env`, `prefect.toml` or
    `pyproject.toml`'s `[tool.prefect]` setting one).

    Asking Prefect means importing it (about 2 s), so it is asked only when the answer could be
    yes: Prefect is already imported (a flow run imports it first), or one of the places Prefect
    reads its API URL from exists (`prefect_api_may_be_set`). A `sync --no-prefect` or Airflow
    run with none of them decides here without importing Prefect."""
    import importlib.util

    if "prefect" not in sys.modules and not prefect_api_may_be_set():
        return False
    if importlib.util.find_spec("prefect") is None:
        return False
    from prefect.context import FlowRunContext
    from prefect.settings import get_current_settings

    return FlowRunContext.get() is not None or bool(get_current_settings().api.url)


def prefect_api_may_be_set() -> bool:
    """Whether any source of Prefect 3's settings could set its API URL (prefect/settings/
    sources.py): the environment (PREFECT_API_*, or PREFECT_PROFILE / PREFECT_PROFILES_PATH
    choosing a profile), `.env`, `prefect.toml` or `pyproject.toml` in the working directory,
    or a profiles file (PREFECT_HOME's, else ~/.prefect's). False only when none can; True
    means "ask Prefect", not "it is set"."""
    import os
    from pathlib import Path

    if any(k.startswith("PREFECT_API") or k in ("PREFECT_PROFILE", "PREFECT_PROFILES_PATH") for k in os.environ):
        return True
    if Path("prefect.toml").exists():
        return True
    try:
        if "PREFECT_" in Path(".env").read_text(errors="replace"):
            return True
    except OSError:
        pass
    if Path("pyproject.toml").exists():
        import tomllib

        try:
            with open("pyproject.toml", "rb") as f:
                if "prefect" in tomllib.load(f).get("tool", {}):
                    return True
        except (OSError, tomllib.TOMLDecodeError):
            return True  # unreadable here: let Prefect say what it makes of it
    home = os.environ.get("PREFECT_HOME")
    try:  # Prefect takes PREFECT_HOME's profiles.toml as written; either spelling counts here
        homes = [Path(home), Path(home).expanduser()] if home else [Path.home() / ".prefect"]
    except RuntimeError:  # no home directory to expand
        return True
    return any((h / "profiles.toml").exists() for h in homes)


def fleet_limiter(load, store: RateStore) -> FleetLimiter | None:
    """The fleet-wide limiter a LoadConfig asks for (load.fleet_limit, load.fleet_limiter),
    its buckets created or updated; `store` is the run's ledger."""
    if not load.fleet_limit or not (load.requests_per_second or load.tokens_per_minute):
        return None
    kind = load.fleet_limiter
    if kind == "auto":
        kind = "prefect" if reports_to_prefect() else "state_store"
    args = (load.fleet_limit, load.requests_per_second, load.tokens_per_minute, load.max_tokens_per_request)
    fleet: FleetLimiter
    if kind == "state_store":
        fleet = StateStoreFleetLimiter(store, *args, token_window_s=load.token_window_s)
    else:
        import importlib.util

        if importlib.util.find_spec("prefect") is None:  # the Airflow environment (docs/airflow.md)
            raise ConfigError(
                "config",
                "load.fleet_limiter",
                "`prefect` keeps the fleet-wide limit in Prefect global concurrency limits and Prefect is "
                "not installed in this environment: use `state_store` (or `auto`), which keeps it in the "
                "ledger every worker shares",
            )
        fleet = PrefectFleetLimiter(*args, token_window_s=load.token_window_s)
    fleet.ensure()
    # every worker of a fleet must keep the buckets in the same place: a Prefect worker and a
    # worker without Prefect's API (auto) would each admit the whole rate
    log.info(
        "load.fleet_limit %r: its buckets are kept in %s (load.fleet_limiter: %s)",
        load.fleet_limit,
        "the state store" if kind == "state_store" else "Prefect global concurrency limits",
        load.fleet_limiter,
    )
    return fleet
