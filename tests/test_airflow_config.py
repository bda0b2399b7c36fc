"""What the Airflow path relies on that the default environment can check without Airflow: a
source that cannot be reached now is a SourceUnavailable (Airflow retries it) while a source that
is wrong stays a plain SourceError (the task fails at once), and the run config's `schedules:`
names sources that exist (tests/test_airflow.py runs the operator itself on real Airflow)."""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from core.config import load_run_config
from core.errors import ConfigError, SourceError, SourceUnavailable
from flows.runner import preflight
from tests.helpers import SAMPLE_MAPPING


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed when the block ends: a connection is refused


def _mapping(tmp_path: Path, source: dict):
    body = yaml.safe_load(SAMPLE_MAPPING.read_text())
    path = tmp_path / "mapping.yaml"
    path.write_text(yaml.safe_dump({**body, "source": {"name": "some-chats", **source}}))
    return load_run_config(None, environ={}).mapping(path)


def _sql(tmp_path: Path, url: str):
    sql = {"url": url, "table": "chat_messages", "cursor_column": "updated_at", "key_column": "id"}
    return _mapping(tmp_path, {"type": "sql", "sql": sql})


def test_a_sql_server_that_is_down_is_unavailable_and_a_wrong_source_is_not(tmp_path, pg_cluster):
    url = sa.engine.make_url(pg_cluster.url)
    pg_cluster.stop()  # the server restarting at 02:15
    with pytest.raises(SourceUnavailable, match="cannot connect"):
        preflight(_sql(tmp_path, url.render_as_string(hide_password=False)))
    pg_cluster.start()
    with pytest.raises(SourceUnavailable, match="Connection refused"):
        preflight(_sql(tmp_path, url.set(port=_closed_port()).render_as_string(hide_password=False)))
    # the server answers and refuses the settings, or the table is not there: wrong, not down
    for wrong, said in ((url.set(username="nobody"), 'role "nobody" does not exist'), (url, "chat_messages")):
        with pytest.raises(SourceError, match=said) as caught:
            preflight(_sql(tmp_path, wrong.render_as_string(hide_password=False)))
        assert not isinstance(caught.value, SourceUnavailable)
    with pytest.raises(SourceError) as caught:  # SQLite: a file that cannot be opened is the settings
        preflight(_sql(tmp_path, f"sqlite:///{tmp_path / 'no' / 'such' / 'dir.db'}"))
    assert not isinstance(caught.value, SourceUnavailable)


class SlowDown(BaseHTTPRequestHandler):
    """An S3 endpoint that answers every request 503 SlowDown, as S3 does when throttling."""

    def do_GET(self):
        body = b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
        self.send_response(503)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_an_s3_endpoint_that_is_down_or_throttling_is_unavailable_and_a_missing_bucket_is_not(
    tmp_path, s3_endpoint, monkeypatch
):
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # botocore's own retries aside: one answer each

    def s3(endpoint: str, bucket: str = "chats"):
        return _mapping(
            tmp_path,
            {"type": "s3", "format": "jsonl", "s3": {"bucket": bucket, "prefix": "raw/", "endpoint_url": endpoint}},
        )

    with pytest.raises(SourceUnavailable, match="cannot reach the S3 endpoint"):
        preflight(s3(f"http://127.0.0.1:{_closed_port()}"))
    server = ThreadingHTTPServer(("127.0.0.1", 0), SlowDown)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(SourceUnavailable, match="SlowDown"):
            preflight(s3(f"http://127.0.0.1:{server.server_address[1]}"))
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(SourceError, match="the bucket does not exist") as caught:
        preflight(s3(s3_endpoint, bucket="no-such-bucket"))
    assert not isinstance(caught.value, SourceUnavailable)


def test_a_schedule_must_name_a_configured_source(tmp_path):
    """`schedules:` is keyed by a config key of `sources:` or a source's name (a file's or an
    inline mapping's); any other key is a ConfigError naming it and the sources there are."""
    inline = {**yaml.safe_load(SAMPLE_MAPPING.read_text()), "source": {"name": "inline-chats", "type": "files"}}
    sources = {"sample": str(SAMPLE_MAPPING), "inline": inline}
    good = tmp_path / "good.yaml"
    crons = {"sample": "0 4 * * *", "sample-chats": "@daily", "inline-chats": None}
    good.write_text(yaml.safe_dump({"sources": sources, "schedules": crons}))
    assert load_run_config(good, environ={}).schedules == crons
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"sources": sources, "schedules": {"smaple": "0 4 * * *"}}))
    with pytest.raises(ConfigError, match=r"schedules\.smaple: names no source") as caught:
        load_run_config(bad, environ={})
    assert all(f"'{name}'" in str(caught.value) for name in ("sample", "sample-chats", "inline", "inline-chats"))
    lone = tmp_path / "lone.yaml"
    lone.write_text(yaml.safe_dump({"schedules": {"sample": "0 4 * * *"}}))
    with pytest.raises(ConfigError, match=r"schedules\.sample: .*\(known: none configured\)"):
        load_run_config(lone, environ={})


def _preset(tmp_path: Path, preset: str, source: dict):
    path = tmp_path / f"{preset}.yaml"
    path.write_text(yaml.safe_dump({"preset": preset, "source": {"name": "sessions", **source}}))
    return load_run_config(None, environ={}).mapping(path)


def test_a_redis_or_dynamodb_that_is_down_is_unavailable_and_a_missing_table_is_not(tmp_path, s3_endpoint, monkeypatch):
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with pytest.raises(SourceUnavailable, match="Connection refused|Error 111"):
        preflight(_preset(tmp_path, "langchain-redis", {"redis": {"url": f"redis://127.0.0.1:{_closed_port()}/0"}}))
    down = {"table": "SessionTable", "region": "us-east-1", "endpoint_url": f"http://127.0.0.1:{_closed_port()}"}
    with pytest.raises(SourceUnavailable, match="cannot read the table"):
        preflight(_preset(tmp_path, "langchain-dynamodb", {"dynamodb": down}))
    missing = {"table": "NoSuchTable", "region": "us-east-1", "endpoint_url": s3_endpoint}
    with pytest.raises(SourceError, match="ResourceNotFoundException") as caught:
        preflight(_preset(tmp_path, "langchain-dynamodb", {"dynamodb": missing}))
    assert not isinstance(caught.value, SourceUnavailable)
