"""Documents into a MemOS knowledge base through the CLI and the dev-server: each supported file
uploaded once with identical bytes, a re-sync with 0 uploads, a changed, a deleted and a new
file in one run, an upload stored but not answered settled without a duplicate, the skipped
and empty files with their reasons."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import requests
import yaml
from typer.testing import CliRunner

from memos_etl.cli import app
from tests.helpers import set_faults

runner = CliRunner()
UPLOAD = "/add/knowledgebase-file"


def config(tmp_path: Path, server: str, folder: Path, extra: dict | None = None) -> Path:
    body = {
        "source": {"name": "handbook", "type": "files", "format": "documents", "path": str(folder)},
        "documents": {"knowledgebase": "handbook", "parse_wait_s": 5},
        "on_delete": "delete",
        **(extra or {}),
    }
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(body))
    cfg = tmp_path / "memos-etl.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "sources": {"handbook": str(tmp_path / "m.yaml")},
                "target": {"base_url": server, "backoff_base_s": 0.01, "backoff_cap_s": 0.05, "timeout_s": 1},
                "state": {"work_dir": str(tmp_path / "state"), "ledger_url": f"sqlite:///{tmp_path / 'ledger.db'}"},
            }
        )
    )
    return cfg


def sync(cfg: Path, code: int = 0) -> dict:
    res = runner.invoke(app, ["sync", "handbook", "-c", str(cfg), "--no-prefect", "--json"])
    assert res.exit_code == code, res.output
    return json.loads(res.stdout[res.stdout.index("{") :])


def files_held(url: str) -> dict[str, list[dict]]:
    """name -> the live files of that name in the dev-server's knowledge bases."""
    out: dict[str, list[dict]] = {}
    for kb in requests.get(url + "/_dev/knowledgebases", timeout=10).json():
        for f in kb["files"]:
            if not f["deleted"]:
                out.setdefault(f["name"], []).append(f)
    return out


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def folder(root: Path) -> dict[str, bytes]:
    files = {
        "policy.md": b"# Leave\n\nTwenty vacation days a year.\n",
        "faq.txt": b"How do I book a room? Use the calendar.\n",
        "sub/travel.md": b"# Travel\n\nBook trains two weeks ahead.\n",
        "rates.json": b'{"per_diem": 42}\n',
        "empty.txt": b"",
        "photo.png": b"\x89PNG\r\n\x1a\n" + b"\x00" * 16,
    }
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


def test_a_folder_uploaded_once_then_changed_deleted_and_new(tmp_path, dev_server):
    docs = tmp_path / "docs"
    files = folder(docs)
    cfg = config(tmp_path, dev_server.url, docs)
    first = sync(cfg)
    c = first["counts"]
    sent = ["policy.md", "faq.txt", "sub/travel.md", "rates.json"]
    assert c["delivered"] == 4 and c["quarantined"] == 1 and c["read"] == 5 and c["accounted"], c
    assert c["skipped"] == {"empty file": 1}, c
    held = files_held(dev_server.url)
    assert sorted(held) == sorted(sent), held
    for name, rel in zip(sent, ["policy.md", "faq.txt", "sub/travel.md", "rates.json"], strict=True):
        (f,) = held[name]
        assert f["sha256"] == sha(files[rel]) and f["status"] == "completed", f
    from tasks.quarantine import read_quarantine

    (row,) = read_quarantine(str(tmp_path / "state")).to_pylist()
    assert row["source_file"] == "photo.png" and "unsupported type .png" in row["reasons"][0], row

    again = sync(cfg)["counts"]
    assert again["requests"] == 0 and again["delivered"] == 0 and again["units_skipped"] == 6, again

    # one nightly run: a file changed, one deleted, one new
    (docs / "policy.md").write_bytes(b"# Leave\n\nTwenty-five vacation days a year.\n")
    (docs / "faq.txt").unlink()
    (docs / "new.md").write_bytes(b"# New\n\nA new page.\n")
    night = sync(cfg)["counts"]
    assert night["delivered"] == 2 and night["gone_from_source"] == 1 and night["requests"] == 1, night
    held = files_held(dev_server.url)
    assert sorted(held) == sorted(["policy.md", "sub/travel.md", "rates.json", "new.md"]), held
    assert [f["sha256"] for f in held["policy.md"]] == [sha((docs / "policy.md").read_bytes())]
    assert sync(cfg)["counts"]["requests"] == 0


def test_an_upload_stored_but_not_answered_is_settled_without_a_duplicate(tmp_path, dev_server):
    docs = tmp_path / "docs"
    folder(docs)
    cfg = config(tmp_path, dev_server.url, docs)
    set_faults(dev_server.url, script=[{"route": UPLOAD, "hang": 3, "store": True}])
    first = sync(cfg, code=2)
    assert first["counts"]["in_doubt"] == 4 and first["status"] == "incomplete", first["counts"]
    assert sorted(files_held(dev_server.url)) == ["faq.txt", "policy.md", "rates.json", "sub/travel.md"]
    second = sync(cfg)
    c = second["counts"]
    assert c["reconciled_landed"] == 4 and c["requests"] == 0 and second["status"] == "completed", c
    held = files_held(dev_server.url)
    assert all(len(v) == 1 for v in held.values()), held
    assert sync(cfg)["counts"]["requests"] == 0


def test_a_zip_of_documents(tmp_path, dev_server):
    docs = tmp_path / "docs"
    files = folder(docs)
    archive = shutil.make_archive(str(tmp_path / "handbook"), "zip", docs)
    cfg = config(tmp_path, dev_server.url, Path(archive))
    c = sync(cfg)["counts"]
    assert c["delivered"] == 4, c
    assert files_held(dev_server.url)["sub/travel.md"][0]["sha256"] == sha(files["sub/travel.md"])


def test_real_documents_each_uploaded_once_with_the_bytes_expected(tmp_path, dev_server):
    """A PDF (fpdf2) and a DOCX (python-docx), Markdown, text, JSON, HTML with a script, a
    subfolder, an empty file, a PNG and a cp1252 text file: expectations from
    tests/documents_fixtures.py, computed apart from the runner."""
    from tests.documents_fixtures import make_folder

    docs = tmp_path / "docs"
    want = make_folder(docs)
    c = sync(config(tmp_path, dev_server.url, docs))["counts"]
    uploads = {rel: w for rel, w in want.items() if w["outcome"] == "upload"}
    skips = {rel: w for rel, w in want.items() if w["outcome"] == "skip"}
    assert c["delivered"] == len(uploads) and c["quarantined"] == len(skips), c
    assert c["skipped"] == {"empty file": sum(w["outcome"] == "empty" for w in want.values())}, c
    held = files_held(dev_server.url)
    expected = {str(Path(rel).parent / w["name"]).removeprefix("./"): w for rel, w in uploads.items()}
    assert sorted(held) == sorted(expected), held
    for name, w in expected.items():
        (f,) = held[name]
        assert (f["sha256"], f["size"]) == (w["sha256"], w["size"]), name
        body = requests.get(f"{dev_server.url}/_dev/knowledgebase-file/{f['id']}", timeout=10).content
        assert sha(body) == w["sha256"], name
    from tasks.quarantine import read_quarantine

    reasons = {r["source_file"]: r["reasons"][0] for r in read_quarantine(str(tmp_path / "state")).to_pylist()}
    assert sorted(reasons) == sorted(skips), reasons
    for rel, w in skips.items():
        assert w["reason_contains"] in reasons[rel], (rel, reasons[rel])


def test_documents_on_s3(tmp_path, dev_server, s3_endpoint):
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    bucket = f"docs-{tmp_path.name.lower().replace('_', '-')[-40:]}"
    s3.create_bucket(Bucket=bucket)
    docs = tmp_path / "docs"
    files = folder(docs)
    for rel, data in files.items():
        s3.put_object(Bucket=bucket, Key=f"handbook/{rel}", Body=data)
    cfg = config(tmp_path, dev_server.url, docs)
    body = yaml.safe_load((tmp_path / "m.yaml").read_text())
    body["source"] = {
        "name": "handbook",
        "type": "s3",
        "format": "documents",
        "s3": {"bucket": bucket, "prefix": "handbook/", "endpoint_url": s3_endpoint},
    }
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(body))
    c = sync(cfg)["counts"]
    assert c["delivered"] == 4 and c["quarantined"] == 1, c
    held = files_held(dev_server.url)
    assert held["sub/travel.md"][0]["sha256"] == sha(files["sub/travel.md"])
    s3.put_object(Bucket=bucket, Key="handbook/policy.md", Body=b"# Leave\n\nThirty days.\n")
    s3.delete_object(Bucket=bucket, Key="handbook/rates.json")
    night = sync(cfg)["counts"]
    assert night["delivered"] == 1 and night["gone_from_source"] == 1 and night["units_skipped"] == 4, night
    held = files_held(dev_server.url)
    assert sorted(held) == ["faq.txt", "policy.md", "sub/travel.md"], held
    assert [f["sha256"] for f in held["policy.md"]] == [sha(b"# Leave\n\nThirty days.\n")]


def test_kill_9_mid_upload_then_rerun_ends_exact(tmp_path, dev_server):
    """200 files, 10 uploads at 4 a second, killed three times mid-way: every file held once."""
    import signal
    import subprocess
    import sys
    import time

    docs = tmp_path / "docs"
    files = {f"part{i // 50}/page{i:03d}.md": f"# Page {i}\n\n{'words ' * (i + 1)}\n".encode() for i in range(200)}
    for rel, data in files.items():
        (docs / rel).parent.mkdir(parents=True, exist_ok=True)
        (docs / rel).write_bytes(data)
    cfg = config(tmp_path, dev_server.url, docs)
    run = yaml.safe_load(cfg.read_text())
    run["load"] = {"requests_per_second": 4}
    cfg.write_text(yaml.safe_dump(run))
    cmd = [sys.executable, "-m", "memos_etl.cli", "sync", "handbook", "-c", str(cfg), "--no-prefect"]
    root = Path(__file__).resolve().parent.parent
    for _ in range(3):
        before = sum(len(v) for v in files_held(dev_server.url).values())
        log = open(tmp_path / "run.log", "a")  # noqa: SIM115
        proc = subprocess.Popen(cmd, cwd=root, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if sum(len(v) for v in files_held(dev_server.url).values()) > before:
                break
            time.sleep(0.02)
        time.sleep(0.3)
        assert proc.poll() is None, (tmp_path / "run.log").read_text()[-3000:]
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    final = sync(cfg)
    assert final["status"] == "completed", final
    held = files_held(dev_server.url)
    assert sorted(held) == sorted(files), sorted(set(files) ^ set(held))
    for rel, data in files.items():
        assert [f["sha256"] for f in held[rel]] == [sha(data)], rel
    assert sync(cfg)["counts"]["requests"] == 0


def cli(cfg: Path, *args: str, code: int = 0) -> str:
    res = runner.invoke(app, [*args, "-c", str(cfg)])
    assert res.exit_code == code, res.output
    return res.output


def test_verify_search_and_rollback(tmp_path, dev_server):
    docs = tmp_path / "docs"
    folder(docs)
    cfg = config(tmp_path, dev_server.url, docs)
    run_id = sync(cfg)["run_id"]
    out = json.loads(cli(cfg, "verify", "handbook", "--json"))
    assert out["status"] == "clean" and out["files"] == 4 and out["by_status"] == {"completed": 4}, out

    # found by a search of the knowledge base
    found = cli(cfg, "search", "anyone", "vacation", "--knowledgebase", "handbook")
    assert "Twenty vacation days" in found, found

    # someone deletes one file in MemOS and uploads another twice: verify says so (exit 2)
    held = files_held(dev_server.url)
    requests.post(dev_server.url + "/delete/knowledgebase-file", json={"file_ids": [held["faq.txt"][0]["id"]]})
    kb = out["knowledgebase"]
    again = {"name": "rates.json", "content": "data:application/json;base64,eyJwZXJfZGllbSI6IDQyfQo="}
    requests.post(dev_server.url + UPLOAD, json={"knowledgebase_id": kb, "file": [again]})
    bad = json.loads(cli(cfg, "verify", "handbook", "--json", code=2))
    assert sorted((f["path"], f["finding"]) for f in bad["findings"]) == [
        ("faq.txt", "missing from the knowledge base"),
        ("rates.json", "held 2 times"),
    ], bad

    # rollback of the run: its uploads deleted there; the next sync uploads the folder again
    cli(cfg, "rollback", run_id, "--yes")
    assert sorted(files_held(dev_server.url)) == ["rates.json"]  # the one uploaded by hand stays
    again_sync = sync(cfg)["counts"]
    assert again_sync["delivered"] == 4, again_sync
    assert sorted(files_held(dev_server.url)) == ["faq.txt", "policy.md", "rates.json", "sub/travel.md"]


def test_status_shows_a_documents_source(tmp_path, dev_server):
    docs = tmp_path / "docs"
    folder(docs)
    cfg = config(tmp_path, dev_server.url, docs)
    sync(cfg)
    (docs / "policy.md").write_bytes(b"# Leave\n\nChanged.\n")
    sync(cfg)
    out = cli(cfg, "status")
    assert "documents   4 in the knowledge base (4 parsed, 0 parsing, 0 failed to parse)" in out, out
    assert "1 replaced, 0 deleted" in out and "quarantined 1 files" in out, out


def test_a_file_gone_under_on_delete_report_stays_and_is_reported_each_run(tmp_path, dev_server):
    docs = tmp_path / "docs"
    folder(docs)
    cfg = config(tmp_path, dev_server.url, docs, {"on_delete": "report"})
    sync(cfg)
    (docs / "faq.txt").unlink()
    (docs / "empty.txt").unlink()  # never uploaded: leaves the manifest, nothing to report
    for _ in range(2):
        c = sync(cfg)["counts"]
        assert c["gone_from_source"] == 1 and c["requests"] == 0, c
    assert "faq.txt" in files_held(dev_server.url)  # MemOS keeps it: on_delete report
    (docs / "faq.txt").write_bytes(b"How do I book a room? Use the calendar.\n")  # back, unchanged
    c = sync(cfg)["counts"]
    assert c["gone_from_source"] == 0 and c["requests"] == 0 and c["already_delivered"] == 1, c


def test_erase_a_document_for_good(tmp_path, dev_server):
    docs = tmp_path / "docs"
    folder(docs)
    cfg = config(tmp_path, dev_server.url, docs)
    sync(cfg)
    out = cli(cfg, "erase", "--document", "sub/travel.md", "--source", "handbook", "--yes")
    assert "1 files deleted from the knowledge base" in out, out
    assert "sub/travel.md" not in files_held(dev_server.url)
    (docs / "sub/travel.md").write_bytes(b"# Travel\n\nChanged, still erased.\n")  # changed: read again
    c = sync(cfg)["counts"]
    assert c["erased"] == 1 and c["requests"] == 0 and c["accounted"], c
    assert "sub/travel.md" not in files_held(dev_server.url)
    assert sync(cfg)["counts"]["units_skipped"] == 6  # the erased file is done: not read again
    log = cli(cfg, "status", "--erasures")
    assert "~documents:handbook / sub/travel.md" in log, log
