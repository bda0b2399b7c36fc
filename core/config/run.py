"""Run settings (the config file, `--config`): the MemOS target, load limits, state (ledger and
work dir), backfill, and the sources by name; environment overrides (MEMOS_ETL__...)."""

from __future__ import annotations

import os
from collections.abc import Mapping as StrMap
from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, field_validator

from core.config.files import Strict, merge, read_yaml, validate_model
from core.config.loading import checked_mapping, with_preset
from core.config.mapping import Mapping
from core.config.people import Person, check_people, with_people
from core.errors import ConfigError


class TargetConfig(Strict):
    kind: Literal["cloud", "self-hosted"] = "cloud"
    base_url: str = "http://127.0.0.1:8765"
    name: str | None = None  # ledger identity of the target; defaults to base_url
    api_key_env: str = "MEMOS_API_KEY"
    api_key_block: str | None = None  # name of a Prefect Secret block holding the key
    timeout_s: float = 30.0
    async_mode: bool = True  # self-hosted: "async" / "sync"
    mode: Literal["fast", "fine"] | None = None  # self-hosted only: extraction mode
    track_extraction: bool = False  # cloud: poll /get/status for this run's task_ids at the end
    extraction_wait_s: float = Field(default=30.0, ge=0)
    max_attempts: int = Field(default=5, ge=1)  # per request, HTTP level (docs/exactly-once.md, "Errors and retries")
    # throttling answers do not use up max_attempts: they are retried for up to this long
    max_throttle_wait_s: float = Field(default=600.0, ge=0)
    backoff_base_s: float = Field(default=0.5, ge=0)
    backoff_cap_s: float = Field(default=30.0, ge=0)
    # after a request got no answer, wait this long before asking the target whether it
    # arrived, so a request the server is still processing has landed by then
    in_doubt_grace_s: float = Field(default=5.0, ge=0)

    # set by --new-target: this source's deliveries recorded under other target names are
    # known, and this target is a different MemOS that should get everything (see ledger_name)
    new_target: bool = False

    @property
    def ledger_name(self) -> str:
        """The target's identity in the ledger: `name`, else the base URL normalised (scheme and
        host lower-cased, default port and trailing slashes dropped), so spellings of one URL
        agree. A different URL to the same server is a different name: pin `name` for that."""
        return self.name or normalise_url(self.base_url)


def normalise_url(url: str) -> str:
    """http://Host:80/memos/ -> http://host/memos; the path keeps its case."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return url.strip().rstrip("/")
    if not parts.scheme or not parts.hostname:
        return url.strip().rstrip("/")
    scheme = parts.scheme.lower()
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"  # IPv6 literal
    if port is not None and (scheme, port) not in (("http", 80), ("https", 443)):
        host = f"{host}:{port}"
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@{host}" if userinfo else host
    return urlunsplit((scheme, netloc, parts.path.rstrip("/"), parts.query, ""))


class LoadConfig(Strict):
    max_messages_per_request: int = Field(default=50, ge=1)
    # MemOS documents 8k input tokens per call on one page and 40k on another: default to the safer
    max_tokens_per_request: int = Field(default=8_000, ge=64)
    max_failed_share: float = Field(default=0.10, ge=0, le=1)
    buckets: int = Field(default=16, ge=1, le=4096)  # conversation hash buckets = units of parallel loading
    concurrency: int = Field(default=8, ge=1, le=128)  # conversations (buckets) in flight at once
    # client-side limits shared by all senders of a run; 0 = none. MemOS Cloud publishes
    # 400k tokens/minute per key and recommends at most ~50 requests/second.
    requests_per_second: float = Field(default=40.0, ge=0)
    tokens_per_minute: float = Field(default=400_000, ge=0)
    late_messages: Literal["append", "quarantine"] = "append"
    # token estimate (core/budget.py): UTF-8 bytes per token, framing per message and per
    # request. The defaults over-estimate English on purpose; tune them to a known tokenizer
    bytes_per_token: float = Field(default=3.0, gt=0)
    message_overhead_tokens: int = Field(default=8, ge=0)
    request_overhead_tokens: int = Field(default=200, ge=0)
    # the window tokens_per_minute is counted over; MemOS uses a minute. Benchmarks shorten
    # both sides (dev-server token_window_s) to measure several windows in seconds
    token_window_s: float = Field(default=60.0, gt=0)
    # this many failed requests in a row across the run (no success between, throttling
    # aside) means the target is down: stop the run instead of retrying every conversation
    max_consecutive_failures: int = Field(default=20, ge=1)
    # a run leases the conversations it sends to; another run (or worker) skips them until the
    # lease is released or, if the run died, expires
    lease_ttl_s: float = Field(default=600.0, ge=1)
    # one rate limit for a whole fleet of workers, under this name: two token buckets (requests,
    # tokens) created or updated from requests_per_second/tokens_per_minute at the start of a
    # run, kept where `fleet_limiter` says. None: per process only.
    fleet_limit: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]{1,48}$")
    # where the fleet's buckets are kept: `prefect`, two Prefect global concurrency limits with
    # slot decay (<name>-requests, <name>-tokens); `state_store`, a row of the ledger every
    # worker shares (core/ledger/ratelimits.py; no Prefect needed, e.g. on Airflow); `auto`,
    # Prefect when the run reports to a Prefect API (a flow run, or PREFECT_API_URL), else the ledger
    fleet_limiter: Literal["auto", "prefect", "state_store"] = "auto"
    # a bucket whose staged files are larger than this (a conversation of ~60k messages and
    # more) is ordered from sorted runs on disk of about this size (tasks/order.py) instead of
    # in memory: a loader's memory then does not grow with the largest conversation. Same
    # requests either way. 4 MiB: a loader holds its bucket about four times over while it sorts
    # and cuts it, so eight loaders of 16 MiB buckets held 650 MiB at 100k sessions (427 at 10k);
    # at 2 MiB the 1M-message dry run's buckets all take the slower path (half the rate)
    sort_in_memory_bytes: int = Field(default=4 << 20, ge=1)
    # attachments sent as content parts (a mapping's attachments.mode: parts): at most this
    # many bytes of files (before base64) and this many parts in one request; a file larger
    # than the byte budget stays a note in the text. MemOS publishes 20 files per message and
    # about 100 MB per file; its request size limit is not published
    max_attachment_bytes_per_request: int = Field(default=20 << 20, ge=1)
    max_attachments_per_request: int = Field(default=20, ge=1)


class StateConfig(Strict):
    work_dir: str = ".memos-etl"
    data_docs: bool = False  # build Great Expectations Data Docs (HTML) under work_dir/data-docs/<source>
    ledger_url: str | None = None  # default: sqlite file in work_dir

    def ledger(self) -> str:
        return self.ledger_url or f"sqlite:///{Path(self.work_dir) / 'ledger.db'}"


class BackfillConfig(Strict):
    # a partition run that has not reported for this long is taken as dead and handed to
    # another worker (its conversation leases expire after load.lease_ttl_s)
    part_ttl_s: float = Field(default=120.0, ge=5)
    max_attempts: int = Field(default=3, ge=1)  # runs per partition before the backfill gives up on it
    poll_s: float = Field(default=5.0, gt=0)


class RunConfig(Strict):
    # source name -> mapping file (relative to this config file) or the mapping inline
    sources: dict[str, str | dict] = {}
    target: TargetConfig = TargetConfig()
    load: LoadConfig = LoadConfig()
    state: StateConfig = StateConfig()
    backfill: BackfillConfig = BackfillConfig()
    # one person across apps, shared by every mapping (core/config/people.py); a mapping's
    # own `people` entries replace these of the same key
    people: dict[str, Person] = {}
    # source name -> cron (UTC) of its nightly DAG under Airflow (flows/airflow.py dags(); None:
    # not scheduled). Prefect's schedules are in deployments/prefect.yaml, not here
    schedules: dict[str, str | None] = {}
    path_: Path | None = Field(default=None, exclude=True)

    @field_validator("people")
    @classmethod
    def _one_owner(cls, v: dict[str, Person]) -> dict[str, Person]:
        check_people(v)
        return v

    @field_validator("schedules")
    @classmethod
    def _crons(cls, v: dict[str, str | None]) -> dict[str, str | None]:
        for name, cron in v.items():
            if cron is not None and len(cron.split()) != 5 and not cron.startswith("@"):
                raise ValueError(f"{name}: {cron!r} is not a cron of five fields (or @daily, @hourly, ...)")
        return v

    def check_schedules(self) -> None:
        """Each key of `schedules:` names a source of `sources:`, by its config key or its source
        name (what dags() looks it up by): a misspelt key would leave its source on the default
        cron without a word. A mapping file is read for its source name only when a key is not a
        config key (one that cannot be read names nothing here: its own error comes when it runs)."""
        unknown = [k for k in self.schedules if k not in self.sources]
        if not unknown:
            return
        names = set()
        for key, spec in self.sources.items():
            if isinstance(spec, dict):
                names.add(str((spec.get("source") or {}).get("name") or key))
                continue
            p = Path(spec)
            if not p.is_absolute() and self.path_ is not None:
                p = self.path_.parent / p
            try:
                data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
                names.add(str(data["source"]["name"]))
            except (OSError, yaml.YAMLError, TypeError, KeyError):
                continue
        for key in unknown:
            if key not in names:
                known = ", ".join(f"{k!r}" for k in sorted(set(self.sources) | names)) or "none configured"
                raise ConfigError(
                    str(self.path_ or "config"),
                    f"schedules.{key}",
                    f"names no source of `sources:` by its key or its source name (known: {known})",
                )

    def _load(self, p: Path) -> Mapping:
        """A mapping file, with the shared people under its own."""
        return checked_mapping(validate_model(Mapping, with_preset(with_people(read_yaml(p), self.people), p), p), p)

    def mapping(self, source: str | os.PathLike) -> Mapping:
        """A source by name (from `sources`) or a mapping file path."""
        spec = self.sources.get(str(source))
        if spec is None:
            if Path(source).is_file():
                return self._load(Path(source))
            known = ", ".join(sorted(self.sources)) or "none configured"
            raise ConfigError(
                str(self.path_ or "config"),
                "sources",
                f"{str(source)!r} is neither a mapping file nor a configured source ({known})",
            )
        where = f"{self.path_ or 'config'} sources.{source}"
        if isinstance(spec, str):
            p = Path(spec)
            if not p.is_absolute() and self.path_ is not None:
                p = self.path_.parent / p
            return self._load(p)
        data = with_preset(with_people(spec, self.people), Path(where))
        return checked_mapping(validate_model(Mapping, data, Path(where)), Path(where))


ENV_PREFIX = "MEMOS_ETL__"  # MEMOS_ETL__TARGET__BASE_URL=... overrides target.base_url


def env_overrides(environ: StrMap[str, str] | None = None) -> dict:
    """Nested settings from MEMOS_ETL__SECTION__KEY variables; values are read as YAML scalars."""
    out: dict = {}
    for name, raw in sorted((environ if environ is not None else os.environ).items()):
        if not name.startswith(ENV_PREFIX):
            continue
        keys = [k.lower() for k in name[len(ENV_PREFIX) :].split("__") if k]
        if not keys:
            continue
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        node = out
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(name, ".".join(keys), "conflicts with a shorter variable of the same prefix")
        node[keys[-1]] = value
    return out


def load_run_config(
    path: str | os.PathLike | None = None, overrides: dict | None = None, environ: dict | None = None
) -> RunConfig:
    """The run config: the file (or $MEMOS_ETL_CONFIG), then MEMOS_ETL__* variables, then
    `overrides` (flow parameters). Errors name the file or variable and the key."""
    env = environ if environ is not None else os.environ
    path = path or env.get("MEMOS_ETL_CONFIG") or None
    p = Path(path) if path else None
    data = read_yaml(p) if p else {}
    from_env = env_overrides(env)
    where = str(p) if p else "defaults"
    if from_env:
        where += " + " + ", ".join(sorted(k for k in env if k.startswith(ENV_PREFIX)))
    cfg = validate_model(RunConfig, merge(merge(data, from_env), overrides or {}), Path(where))
    cfg.path_ = p
    cfg.check_schedules()
    return cfg
