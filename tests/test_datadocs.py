"""Data Docs open where nothing public is reachable: the site a run builds names no external
script, stylesheet or image, and a real headless Chromium with no network at all (its own
network namespace) renders its validation tables, which the shipped JavaScript fills. With the
shipped assets removed the same page renders no table rows: the check can fail."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from core.config import load_mapping
from flows.runner import run
from tasks.datadocs import external_assets
from tests.helpers import without_network

ROOT = Path(__file__).resolve().parent.parent


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("MEMOS_ETL_REQUIRE_BROWSER"):
            pytest.fail("MEMOS_ETL_REQUIRE_BROWSER is set but chromium is not installed (.ci/run installs it)")
        pytest.skip("no chromium on this machine (apt-get install chromium; .ci/run does)")
    return path


def render(page: Path, profile: Path) -> str:
    """The page's DOM after its scripts ran, in headless Chromium without any network."""
    cmd = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=10000",
        "--dump-dom",
        page.as_uri(),
    ]
    offline = without_network(cmd)
    if offline is not None:
        cmd = offline
    else:  # no namespaces here: every host resolves to nothing and every connection goes nowhere
        cmd[1:1] = ["--proxy-server=127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout


def test_data_docs_render_offline_with_their_validation_tables(tmp_path, run_config):
    run_config.state.data_docs = True
    report = run(load_mapping(ROOT / "schemas" / "mappings" / "sample.yaml"), run_config)
    assert report.data_docs, report.notes
    site = Path(report.data_docs).parent
    assert not [n for n in report.notes if "CDN" in n], report.notes
    assert external_assets(site) == set()
    assert (site / "static" / "vendor").is_dir()
    page = next((site / "validations").rglob("*.html"))
    dom = render(page, tmp_path / "profile")
    rows = dom.count("data-index=")
    assert rows > 0 and "values must never be null" in dom
    shutil.rmtree(site / "static" / "vendor")  # as the pages were, with nothing to load
    assert render(page, tmp_path / "profile2").count("data-index=") == 0
