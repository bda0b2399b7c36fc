"""The `memos-etl` command line, as a user runs it."""

from __future__ import annotations

import re

from typer.testing import CliRunner

from memos_etl.cli import app
from tests.conftest import SAMPLE_MAPPING
from tests.helpers import stats

runner = CliRunner()


def test_sync_status_quarantine_and_search(prefect_server, dev_server, tmp_path):
    args = ["--target-url", dev_server.url, "--work-dir", str(tmp_path)]
    res = runner.invoke(app, ["sync", str(SAMPLE_MAPPING), *args])
    assert res.exit_code == 0, res.output
    assert re.search(r"^delivered +6466$", res.output, re.M) and re.search(r"^quarantined +8$", res.output, re.M)
    assert re.search(r"^read = outcomes +yes$", res.output, re.M)
    res = runner.invoke(app, ["status", "--work-dir", str(tmp_path)])
    assert res.exit_code == 0 and re.search(r"delivered +6466 messages", res.output), res.output
    assert re.search(r"files +2 done", res.output) and re.search(r"quarantined 8 rows", res.output), res.output
    res = runner.invoke(app, ["quarantine", "list", "--work-dir", str(tmp_path)])
    assert "8 quarantined rows" in res.output and "narrator" in res.output
    res = runner.invoke(app, ["search", "ana-00", "train weekdays", "--target-url", dev_server.url])
    assert res.exit_code == 0 and "7am" in res.output
    before = stats(dev_server.url)["add_requests"]
    res = runner.invoke(app, ["sync", str(SAMPLE_MAPPING), *args, "--json"])
    assert res.exit_code == 0 and '"requests": 0' in res.output
    assert stats(dev_server.url)["add_requests"] == before


def test_bad_mapping_is_a_clear_error_not_a_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    data = (SAMPLE_MAPPING.parent / "../../data/sample").resolve()
    bad.write_text(SAMPLE_MAPPING.read_text().replace("content: text", "content: txt")
                   .replace("path: ../../data/sample", f"path: {data}"))
    res = runner.invoke(app, ["sync", str(bad), "--work-dir", str(tmp_path), "--target-url", "http://127.0.0.1:9"])
    assert res.exit_code == 1
    assert "fields.content" in res.output and "'txt'" in res.output and "Traceback" not in res.output
