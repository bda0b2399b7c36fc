"""Airflow DAGs for memos-etl: the same runner as the Prefect flows, one Airflow task per run.

On the flows floor because it is what flows/sync.py is for Prefect: an orchestrator's wrapper
around flows/runner/ (it imports the runner, tasks and core below it, and nothing of Prefect:
`lint-imports` checks that). It is imported in the Airflow environment only (docs/airflow.md).

* `dags(config_path)`: one DAG per source of a run config, each a nightly on a cron data-interval
  timetable (the cron from the run config's `schedules:` or the `schedules` argument) with one
  `MemosSyncOperator` task; a DAG file does `globals().update(dags(...))`.
* `MemosSyncOperator`: one run of a source, for DAGs users write themselves.
* `target_asset(source)`: the task's outlet, `memos-etl://<connection>/<source>`: each completed
  run adds an asset event with the run's counts in its extra (Airflow's counterpart of the
  Prefect event `memos-etl.run.completed`).

What a DAG run loads: a scheduled run (or a manual one without `since`/`until` in its conf) is
the nightly: no bounds, the cursor moves. A backfill run (`airflow backfill create`) loads its
data interval, [data_interval_start, data_interval_end), as the run's Slice: it never moves the
nightly cursor. A manual run with `{"since": ..., "until": ...}` in its conf loads that slice.

One task per run, not a task per file or bucket (dynamic task mapping): the runner already
stages files and loads buckets on threads, and a mapped task instance would pay Airflow's
per-task start (a process, the DAG parsed again, tens of ms to seconds) and lose the run's one
ledger record and report. See docs/airflow.md, "One task per run".
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from collections.abc import Mapping as StrMap
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, Asset, BaseOperator, Connection, CronDataIntervalTimetable
from airflow.sdk.exceptions import AirflowFailException, AirflowNotFoundException

from core import shutdown
from core.client import make_target, resolve_api_key
from core.config import Mapping, RunConfig, load_run_config
from core.errors import (
    CannotTell,
    ConfigError,
    FatalTargetError,
    MemosEtlError,
    OperationError,
    QualityThresholdError,
    SourceError,
    SourceUnavailable,
    TargetIdentityError,
    TerminalBatchError,
)
from core.report import RunReport
from flows import runner
from tasks.cursor import parse_bound
from tasks.extract import Slice

log = logging.getLogger("memos_etl")

#: the Airflow connection that holds the target: host (the base URL) and password (the API key)
DEFAULT_CONN_ID = "memos_default"
NIGHTLY = "15 2 * * *"  # UTC, as deployments/prefect.yaml's sample nightly
#: the scheme of the assets a sync updates: memos-etl://<target>/<source> (see target_asset)
ASSET_SCHEME = "memos-etl"

#: errors a retry cannot fix: the task fails at once (AirflowFailException); any other error
#: (TransientError, LedgerError, SourceUnavailable: an outage of the source's store) is retried
#: by Airflow, which the ledger makes safe: a retry sends only what the failed try did not
#: deliver. SourceUnavailable is a SourceError: `fails_for_good` is the test, not this tuple
FATAL: tuple[type[BaseException], ...] = (
    ConfigError,
    SourceError,
    QualityThresholdError,
    FatalTargetError,
    TargetIdentityError,
    TerminalBatchError,
    CannotTell,
    OperationError,
)


def fails_for_good(exc: BaseException) -> bool:
    """Whether a retry cannot help: an error of FATAL, but not a source that cannot be reached now."""
    return isinstance(exc, FATAL) and not isinstance(exc, SourceUnavailable)


@contextmanager
def failing_for_good() -> Iterator[None]:
    """An error of the block that a retry cannot help (fails_for_good) fails the task at once;
    any other is raised as it is, for Airflow to retry."""
    try:
        yield
    except Exception as exc:
        if fails_for_good(exc):
            raise AirflowFailException(f"{type(exc).__name__}: {exc}") from exc
        raise


class RunNotComplete(MemosEtlError):
    """The run ended with messages pending or in doubt, or was drained: retried by Airflow, and
    the retry sends only what is left."""


class MemosSyncOperator(BaseOperator):
    """One memos-etl run of `source` (a name of the run config's `sources:`, or a mapping file
    path) into the target of the connection `conn_id`. Returns the run report (XCom
    `return_value`) and logs it; a failed run's report is in XCom `report`.

    `config_path`: the run config (default $MEMOS_ETL_CONFIG, else the defaults); `work_dir`
    overrides its state.work_dir. `conn_id=None` takes the target from the config alone.
    `source_conn_id`: an Airflow connection for the source itself: an `aws` connection for an
    S3 source (keys, region, endpoint_url), a SQL connection (`postgres`, `sqlite`, or any with
    a SQLAlchemy URL as its host) for a SQL source (see `apply_source_connection`)."""

    template_fields = ("source", "config_path", "work_dir", "source_conn_id")
    ui_color = "#d6ecf3"

    def __init__(
        self,
        *,
        source: str,
        config_path: str | None = None,
        conn_id: str | None = DEFAULT_CONN_ID,
        work_dir: str | None = None,
        source_conn_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.source, self.config_path, self.conn_id, self.work_dir = source, config_path, conn_id, work_dir
        self.source_conn_id = source_conn_id

    def execute(self, context: Any) -> dict:
        with failing_for_good():  # a config, mapping or source that cannot work as given: failed, not retried
            cfg, api_key = self.run_config()
            mapping = cfg.mapping(self.source)
            aws_env: dict[str, str | None] = {}
            if self.source_conn_id:
                aws_env = apply_source_connection(mapping, connection(self.source_conn_id, "source"))
        with environment(aws_env):  # the source connection's AWS keys, for this run only
            return self._run(context, cfg, mapping, api_key)

    def _run(self, context: Any, cfg: RunConfig, mapping: Mapping, api_key: str) -> dict:
        with failing_for_good():  # a source that cannot be reached now is retried (SourceUnavailable)
            runner.preflight(mapping)
        part, why = run_slice(context)
        self.log.info("memos-etl %s of %s into %s: %s", self.source, mapping.source.name, cfg.target.ledger_name, why)
        target = make_target(cfg.target, api_key=api_key, pool_size=cfg.load.concurrency + 2)
        try:
            with failing_for_good():
                try:
                    report = runner.run(mapping, cfg, part=part, target=target)
                except Exception as exc:
                    self._publish(context, getattr(exc, "report", None))
                    raise
        finally:
            target.close()
        out = self._publish(context, report)
        if report.status != "completed":
            raise RunNotComplete(
                f"run {report.run_id} of {mapping.source.name} ended {report.status}: "
                f"{report.counts.pending} messages pending, {report.counts.in_doubt} in doubt; a retry sends them"
            )
        for outlet in self.outlets:  # the asset event Airflow records when the task succeeds
            if isinstance(outlet, Asset) and outlet.uri.startswith(ASSET_SCHEME + "://"):
                context["outlet_events"][outlet].extra.update(asset_extra(report))
        return out

    def run_config(self) -> tuple[RunConfig, str]:
        """The run config, with the connection's target (base URL) and the work dir; the API
        key: the connection's password, else the config's (its environment variable or Prefect
        block), "" for none. A block that cannot be read is a ConfigError here, at the start,
        not a retried failure later."""
        cfg = load_run_config(self.config_path)
        api_key: str | None = None
        if self.work_dir:
            cfg.state.work_dir = str(self.work_dir)
        if self.conn_id:
            conn = connection(self.conn_id)
            url = base_url(conn)
            if url:
                cfg.target.base_url = url
            api_key = conn.password or None
            extra = conn.extra_dejson
            if extra.get("kind"):
                cfg.target.kind = extra["kind"]
            if extra.get("target_name"):
                cfg.target.name = extra["target_name"]
        if api_key is None:
            try:
                api_key = resolve_api_key(cfg.target)
            except ValueError as exc:  # a Prefect block named where Prefect is not installed, or unreadable
                raise ConfigError(str(self.config_path or "config"), "target.api_key_block", str(exc)) from None
        return cfg, api_key or ""  # "": resolved, there is none (make_target looks again for None)

    def on_kill(self) -> None:
        # Airflow stops the task: drain like SIGTERM does for the CLI (requests in flight finish
        # and are recorded, the rest is pending for the retry)
        shutdown.requested.set()

    def _publish(self, context: Any, report: RunReport | None) -> dict:
        if report is None:
            return {}
        self.log.info("memos-etl run report:\n%s", report.text())
        out = json.loads(json.dumps(report.to_dict(), default=str))  # JSON-able for XCom
        if report.status != "completed":
            context["ti"].xcom_push(key="report", value=out)
        return out


def target_asset(source_name: str, conn_id: str | None = DEFAULT_CONN_ID) -> Asset:
    """The Airflow asset a sync of `source_name` updates: `memos-etl://<target>/<source name>`,
    the target being the connection id (`config` when the target comes from the run config
    alone). The Prefect events name the source and the target the same way (flows/events.py:
    resource `memos-etl.source.<name>`, related `memos-etl.target.<name>`); here the target is
    the connection because outlets are fixed when the DAG file is parsed, before the connection
    is read. Each successful run adds one event, its extra `asset_extra(report)`."""
    target = conn_id or "config"
    return Asset(
        uri=f"{ASSET_SCHEME}://{target}/{source_name}",
        name=f"{ASSET_SCHEME}.{target}.{source_name}",
        group=ASSET_SCHEME,
    )


def asset_extra(report: RunReport) -> dict[str, Any]:
    """An asset event's extra: the run, the target's ledger name, the slice, and the report's
    counts (numbers only, never message content), as a Prefect `memos-etl.run.completed` event
    carries them."""
    counts = report.to_dict()["counts"]
    return {
        "run_id": report.run_id,
        "source": report.source,
        "target": report.target,
        "status": report.status,
        "slice": _plain_slice(report.slice),
        "duration_s": round(report.duration_s, 3),
        "counts": {k: v for k, v in counts.items() if isinstance(v, int) and not isinstance(v, bool)},
    }


def _plain_slice(spec: dict | None) -> dict | None:
    """A Slice's spec with its bounds as their text ({"t": "datetime", "v": "2024-03-01..."} ->
    "2024-03-01..."): what an asset event's reader filters on."""
    if spec is None:
        return None
    out = json.loads(json.dumps(spec, default=str))
    for k in ("since", "until"):
        if isinstance(out.get(k), dict) and "v" in out[k]:
            out[k] = out[k]["v"]
    return out


def connection(conn_id: str, role: str = "target") -> Any:
    """The Airflow connection, or AirflowFailException saying how to create it. `role`: what
    memos-etl reads from it, the MemOS target or the source."""
    try:
        return Connection.get(conn_id)
    except AirflowNotFoundException:
        if role == "source":
            how = (
                "memos-etl reads the source from it (an aws connection for an S3 source, "
                f"a SQL connection for a SQL source). Create it, e.g. `airflow connections add {conn_id} "
                "--conn-type postgres --conn-host <host> --conn-schema <database> --conn-login <user> "
                "--conn-password <password>`"
            )
        else:
            how = (
                "memos-etl reads the MemOS target from it (host: the base URL, password: the API key). "
                f"Create it, e.g. `airflow connections add {conn_id} --conn-type http "
                "--conn-host https://<host>/api/openmem/v1 --conn-password <key>`"
            )
        raise AirflowFailException(
            f"Airflow connection {conn_id!r} is not defined: {how}, or set AIRFLOW_CONN_{conn_id.upper()} "
            "(docs/airflow.md)"
        ) from None


#: SQLAlchemy drivers for Airflow's SQL connection types, those whose drivers the project
#: installs (any other database: a SQLAlchemy URL as the connection's host)
SQL_DRIVERS = {"postgres": "postgresql+psycopg", "postgresql": "postgresql+psycopg", "sqlite": "sqlite"}


#: the environment variables of the AWS chain's keys: a connection that gives keys sets the
#: first two and the token, or unsets the token (both spellings), so a worker's own temporary
#: credentials never mix with them
AWS_KEY_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")


def apply_source_connection(mapping: Mapping, conn: Any) -> dict[str, str | None]:
    """Put an Airflow connection's settings into the mapping's source section, in place; return
    the run's AWS environment (for `environment`): an S3 source reads its keys from the AWS
    chain, so the run sees the connection's keys there and nothing else.

    * S3 (`aws` connection): login/password, or extra aws_access_key_id/aws_secret_access_key,
      are the keys, with extra aws_session_token as the token or else no token (a worker's
      AWS_SESSION_TOKEN would not belong to these keys); extra region_name and endpoint_url
      (also `endpoint_url` under extra `service_config.s3`) override the mapping's. A
      connection without keys (e.g. only role_arn or profile_name, which memos-etl does not
      use) leaves the worker's AWS chain as it is, with a warning.
    * SQL: the connection's URL becomes source.sql.url (over url_env): its host when that is a
      URL already, else built from its type's driver (SQL_DRIVERS), login, password, host,
      port and schema (the database); see `sql_url` for its extras."""
    source = mapping.source
    extra = conn.extra_dejson or {}
    if source.type == "s3" and source.s3 is not None:
        s3_extra = (extra.get("service_config") or {}).get("s3") or {}
        endpoint = s3_extra.get("endpoint_url") or extra.get("endpoint_url")
        if endpoint:
            source.s3.endpoint_url = str(endpoint)
        if extra.get("region_name"):
            source.s3.region = str(extra["region_name"])
        key_id = conn.login or extra.get("aws_access_key_id")
        secret = conn.password or extra.get("aws_secret_access_key")
        if key_id and secret:
            token = extra.get("aws_session_token")
            values = (key_id, secret, token, token)
            return {var: str(v) if v else None for var, v in zip(AWS_KEY_VARS, values, strict=True)}
        unused = [k for k in ("role_arn", "profile_name", "assume_role_method") if extra.get(k)]
        log.warning(
            "source connection %r gives no AWS keys (login/password or extra aws_access_key_id/"
            "aws_secret_access_key)%s: %s reads S3 with the worker's own AWS credentials (its "
            "environment, AWS_PROFILE, instance role)",
            conn.conn_id,
            f"; memos-etl does not use its {', '.join(unused)}" if unused else "",
            source.name,
        )
        return {}
    if source.type == "sql" and source.sql is not None:
        source.sql.url = sql_url(conn)
        return {}
    raise AirflowFailException(
        f"source_conn_id {conn.conn_id!r}: a source connection applies to an s3 or sql source; "
        f"{source.name} is a {source.type} source (its settings stay in its mapping)"
    )


#: a postgres connection's extras that are libpq connection parameters: carried as the URL's
#: query, which psycopg hands to libpq (TLS files and mode, server options, connect timeout)
PG_PARAMS = ("sslmode", "sslrootcert", "sslcert", "sslkey", "sslcrl", "options", "connect_timeout", "application_name")


def sql_url(conn: Any) -> str:
    """A SQLAlchemy URL from an Airflow connection: its host if that is a URL, else built from
    its parts; a postgres connection's PG_PARAMS extras become query parameters."""
    from sqlalchemy.engine import URL

    host = (conn.host or "").strip()
    if "://" in host:
        return host
    kind = (conn.conn_type or "").lower()
    driver = SQL_DRIVERS.get(kind)
    if driver is None:
        raise AirflowFailException(
            f"connection {conn.conn_id!r} of type {kind or 'none'}: memos-etl makes SQL URLs for "
            f"{', '.join(sorted(SQL_DRIVERS))} connections, or takes a SQLAlchemy URL as the host"
        )
    extra = conn.extra_dejson or {}
    if driver == "sqlite":
        path = host or (conn.schema or "").strip()
        if not path:
            raise AirflowFailException(
                f"connection {conn.conn_id!r} of type sqlite names no database file: give its path as "
                "the connection's host (or a SQLAlchemy URL, sqlite:////path/to/file.db)"
            )
        return f"sqlite:///{path}"
    query = {k: str(extra[k]) for k in PG_PARAMS if extra.get(k) not in (None, "")}
    url = URL.create(
        driver,
        username=conn.login or None,
        password=conn.password or None,
        host=host or None,
        port=conn.port or None,
        database=conn.schema or None,
        query=query,
    )
    return url.render_as_string(hide_password=False)


@contextmanager
def environment(values: StrMap[str, str | None]) -> Iterator[None]:
    """`values` in os.environ for the block (None: the variable unset), then as before (a task
    is a process of its own under an executor; `airflow dags test` runs tasks one after another
    in its own)."""
    before = {k: os.environ.get(k) for k in values}
    for k, v in values.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def base_url(conn: Any) -> str | None:
    """A connection's base URL: its host when that is a URL (`https://host/path`), else
    schema://host:port (schema default https); None without a host."""
    host = (conn.host or "").strip()
    if not host:
        return None
    if "://" in host:
        return host.rstrip("/")
    port = f":{conn.port}" if conn.port else ""
    return f"{conn.schema or 'https'}://{host}{port}"


def run_slice(context: Any) -> tuple[Slice | None, str]:
    """What this DAG run loads, and why: a backfill run its data interval, a manual run the
    since/until of its conf if given, anything else the nightly (no bounds: the cursor moves)."""
    dag_run = context.get("dag_run")
    kind = getattr(dag_run, "run_type", None)
    run_type = str(getattr(kind, "value", kind) or "")  # a DagRunType (a str enum) or its value
    conf = getattr(dag_run, "conf", None) or {}
    if conf.get("since") is not None or conf.get("until") is not None:
        part = Slice(since=parse_bound(_text(conf.get("since"))), until=parse_bound(_text(conf.get("until"))))
        return part, f"the slice of the run's conf [{conf.get('since')}, {conf.get('until')})"
    if run_type == "backfill":
        start, end = context.get("data_interval_start"), context.get("data_interval_end")
        if start is None or end is None or start == end:
            raise AirflowFailException(
                "a backfill run without a data interval: give the DAG a data-interval timetable "
                "(dags() does: CronDataIntervalTimetable)"
            )
        part = Slice(since=parse_bound(_iso(start)), until=parse_bound(_iso(end)))
        return part, f"backfill of the data interval [{_iso(start)}, {_iso(end)}); the nightly cursor stays"
    return None, f"{run_type or 'a'} run: the nightly (everything new; the cursor moves)"


def _iso(when: Any) -> str:
    return datetime.fromisoformat(str(when).replace("Z", "+00:00")).astimezone(UTC).isoformat()


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def schedule_of(
    name: str,
    source_name: str,
    given: StrMap[str, str | None] | None,
    configured: StrMap[str, str | None],
    default: str | None,
) -> str | None:
    """A source's cron: the first of `given` (dags()'s argument), then `configured` (the run
    config's `schedules:`) that names it, by its config key or its source name; else `default`.
    A name mapped to None there is not scheduled."""
    for table in (given or {}, configured):
        for key in (name, source_name):
            if key in table:
                return table[key]
    return default


def dags(
    config_path: str | Path | None = None,
    *,
    sources: list[str] | None = None,
    schedules: StrMap[str, str | None] | None = None,
    default_schedule: str | None = NIGHTLY,
    conn_id: str | None = DEFAULT_CONN_ID,
    source_conn_ids: StrMap[str, str] | None = None,
    work_dir: str | None = None,
    start_date: datetime = datetime(2024, 1, 1, tzinfo=UTC),
    retries: int = 2,
    retry_delay: timedelta = timedelta(minutes=5),
    pool: str | None = None,
    dag_id_prefix: str = "memos-etl-",
) -> dict[str, DAG]:
    """One DAG per source of the run config at `config_path` (all of `sources:`, or those named
    in `sources`, which may also be mapping file paths): dag id `memos-etl-<source name>`, its
    cron from `schedules` (source -> cron in UTC, None: no schedule), else from the run
    config's `schedules:`, else `default_schedule`, on a data-interval timetable so a backfill
    run's interval is a day (or whatever the cron spaces). Each DAG has one task, `sync`
    (MemosSyncOperator), retried `retries` times on transient failures, its outlet the asset
    `target_asset(source name, conn_id)`; `source_conn_ids` (source -> Airflow connection id)
    gives a source's S3 or SQL connection. `pool` puts every run in one Airflow pool (a
    fleet-wide cap on concurrent runs). Reads only the config file: cheap enough for the DAG
    processor."""
    cfg = load_run_config(config_path)
    names = list(sources) if sources is not None else list(cfg.sources)
    out: dict[str, DAG] = {}
    for name in names:
        source_name = cfg.mapping(name).source.name
        cron = schedule_of(name, source_name, schedules, cfg.schedules, default_schedule)
        dag_id = dag_id_prefix + source_name
        with DAG(
            dag_id=dag_id,
            schedule=CronDataIntervalTimetable(cron, timezone="UTC") if cron else None,
            start_date=start_date,
            catchup=False,
            max_active_runs=4,
            tags=["memos-etl"],
            description=f"memos-etl: sync {source_name} into MemOS",
            doc_md=__doc__,
        ) as dag:
            MemosSyncOperator(
                task_id="sync",
                source=str(name),
                config_path=str(config_path) if config_path else None,
                conn_id=conn_id,
                source_conn_id=(source_conn_ids or {}).get(name, (source_conn_ids or {}).get(source_name)),
                work_dir=work_dir,
                retries=retries,
                retry_delay=retry_delay,
                retry_exponential_backoff=True,
                outlets=[target_asset(source_name, conn_id)],
                **({"pool": pool} if pool else {}),
            )
        out[dag_id] = dag
    return out
