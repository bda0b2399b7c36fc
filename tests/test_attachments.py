"""Attachments as MemOS content parts (attachments.mode parts): the export's files that are
there sent as parts, over real HTTP into the dev-server, byte for byte; the ones that are not
there, too large or of a type MemOS does not read stay notes in the text, counted by why; the
default (note) loads exactly what it loaded before; what the ledger keeps covers the parts."""

from __future__ import annotations

import base64
import json
import shutil
import zipfile

import numpy as np
import pyarrow as pa
import pytest
import requests

from core.config import load_mapping
from core.errors import ConfigError
from tasks.attachments import PLACEHOLDER, inline, message_with_parts
from tasks.batch import fingerprints, message_hashes
from tasks.map import MAPPED_SCHEMA
from tests.helpers import sample_settings
from tests.test_exports import SAMPLES, expected, held, sync

PHOTO = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 40  # a JPEG's first bytes, then anything: ~10 kB
PDF = b"%PDF-1.4\n" + b"map of the lake\n" * 100


def _messages(url: str) -> list[dict]:
    return requests.get(url + "/_dev/messages", timeout=30).json()


def telegram_with_media(tmp_path):
    """The Telegram sample as exported with media: photo_1 and map.pdf in their folders,
    photo_2.jpg not downloaded (the export names it, the folder lacks it)."""
    root = tmp_path / "export"
    shutil.copytree(SAMPLES / "telegram-export", root)
    (root / "photos").mkdir()
    (root / "photos" / "photo_1@31-03-2024_03-40-00.jpg").write_bytes(PHOTO)
    (root / "files").mkdir()
    (root / "files" / "map.pdf").write_bytes(PDF)
    return root


def test_telegram_export_files_go_as_parts_and_missing_ones_stay_notes(tmp_path, dev_server):
    root = telegram_with_media(tmp_path)
    settings = sample_settings("telegram-export") or {}
    report = sync(tmp_path, dev_server.url, "telegram-export", root, {**settings, "attachments": {"mode": "parts"}})
    c = report["counts"]
    assert c["accounted"] and c["quarantined"] == 0, c
    assert c["attachments"] == {"sent as parts": 2, "noted: not in the export": 1}, c["attachments"]
    # the text is what note mode loads, message for message; the parts come on top
    assert held(dev_server.url) == expected("telegram-export")
    with_parts = [m for m in _messages(dev_server.url) if m.get("parts")]
    assert len(with_parts) == 2
    by_kind = {p["type"]: p for m in with_parts for p in m["parts"]}
    url = by_kind["image_url"]["image_url"]["url"]
    assert url.startswith("data:image/jpeg;base64,") and base64.b64decode(url.split(",", 1)[1]) == PHOTO
    assert by_kind["file"]["file"]["filename"] == "map.pdf"
    assert base64.b64decode(by_kind["file"]["file"]["file_data"]) == PDF
    again = sync(tmp_path, dev_server.url, "telegram-export", root, {**settings, "attachments": {"mode": "parts"}})
    assert again["counts"]["requests"] == 0  # nothing twice


def test_a_link_out_of_the_export_is_never_read(tmp_path, dev_server):
    """An export is a stranger's file: photo_1 is a symbolic link to a file outside the export
    folder, files/ a link to a folder outside it. Nothing of either is sent; each stays a note
    saying why, and the messages load as in note mode."""
    root = telegram_with_media(tmp_path)
    secret = tmp_path / "outside"
    secret.mkdir()
    (secret / "secret.jpg").write_bytes(b"\xff\xd8\xff\xe0 private photo")
    (secret / "map.pdf").write_bytes(b"%PDF-1.4 private")
    photo = root / "photos" / "photo_1@31-03-2024_03-40-00.jpg"
    photo.unlink()
    photo.symlink_to(secret / "secret.jpg")
    shutil.rmtree(root / "files")
    (root / "files").symlink_to(secret)
    settings = sample_settings("telegram-export") or {}
    report = sync(tmp_path, dev_server.url, "telegram-export", root, {**settings, "attachments": {"mode": "parts"}})
    c = report["counts"]
    assert c["accounted"] and c["quarantined"] == 0, c
    outside = "noted: outside the export (its path or a link on it leads out of the source): not read"
    assert c["attachments"] == {outside: 2, "noted: not in the export": 1}, c["attachments"]
    assert not [m for m in _messages(dev_server.url) if m.get("parts")]
    assert "private" not in json.dumps(_messages(dev_server.url))
    assert held(dev_server.url) == expected("telegram-export")


def test_whatsapp_zip_with_media_sends_its_photo(tmp_path, dev_server):
    settings = sample_settings("whatsapp-txt") or {}
    report = sync(
        tmp_path,
        dev_server.url,
        "whatsapp-txt",
        SAMPLES / "whatsapp-txt",
        {**settings, "attachments": {"mode": "parts"}},
    )
    c = report["counts"]
    assert c["accounted"] and c["attachments"] == {"sent as parts": 1}, c
    with zipfile.ZipFile(SAMPLES / "whatsapp-txt" / "WhatsApp Chat - Family.zip") as z:
        photo = z.read("00000012-PHOTO-2024-03-29-14-02-11.jpg")
    (part,) = [p for m in _messages(dev_server.url) for p in m.get("parts", [])]
    assert base64.b64decode(part["image_url"]["url"].split(",", 1)[1]) == photo
    assert held(dev_server.url) == expected("whatsapp-txt")


def test_discord_attachment_urls_go_as_they_are(tmp_path, dev_server):
    settings = sample_settings("discord-export") or {}
    report = sync(
        tmp_path,
        dev_server.url,
        "discord-export",
        SAMPLES / "discord-export",
        {**settings, "attachments": {"mode": "parts"}},
    )
    assert report["counts"]["attachments"] == {"sent as parts": 1}
    (part,) = [p for m in _messages(dev_server.url) for p in m.get("parts", [])]
    assert part == {"type": "image_url", "image_url": {"url": "https://cdn.discordapp.com/a/wall.jpg"}}
    assert held(dev_server.url) == expected("discord-export")


def test_skip_mode_leaves_notes_out(tmp_path, dev_server):
    settings = sample_settings("discord-export") or {}
    sync(
        tmp_path,
        dev_server.url,
        "discord-export",
        SAMPLES / "discord-export",
        {**settings, "attachments": {"mode": "skip"}},
    )
    texts = [m["content"] for m in _messages(dev_server.url)]
    assert not any("[file: wall.jpg]" in t for t in texts) and not any(
        m.get("parts") for m in _messages(dev_server.url)
    )


def test_the_budgets_split_requests_and_a_file_over_them_stays_a_note(tmp_path, dev_server):
    root = telegram_with_media(tmp_path)
    (root / "photos" / "photo_1@31-03-2024_03-40-00.jpg").write_bytes(PHOTO * 30)  # ~300 kB
    extra = {**(sample_settings("telegram-export") or {}), "attachments": {"mode": "parts"}}
    for d in "abc":
        (tmp_path / d).mkdir()
    whole = sync(tmp_path / "a", dev_server.url, "telegram-export", root, extra)["counts"]
    requests.post(dev_server.url + "/_dev/reset", timeout=10)
    one_each = sync(
        tmp_path / "b", dev_server.url, "telegram-export", root, extra, load={"max_attachments_per_request": 1}
    )["counts"]
    assert one_each["requests"] == whole["requests"] + 1  # the photo and the pdf, one request each
    assert [len(m["parts"]) for m in _messages(dev_server.url) if m.get("parts")] == [1, 1]
    requests.post(dev_server.url + "/_dev/reset", timeout=10)
    small = sync(
        tmp_path / "c",
        dev_server.url,
        "telegram-export",
        root,
        extra,
        load={"max_attachment_bytes_per_request": 200_000},
    )["counts"]
    assert small["accounted"] and small["attachments"] == {
        "sent as parts": 1,
        "noted: not in the export": 1,
        "noted: larger than load.max_attachment_bytes_per_request": 1,
    }
    assert held(dev_server.url) == expected("telegram-export")  # its note is there either way


def test_parts_and_redaction_do_not_mix(tmp_path):
    m = tmp_path / "m.yaml"
    m.write_text(
        "preset: telegram-export\nconstants: {self: user1}\nsource: {name: t, path: x}\n"
        "attachments: {mode: parts}\nredact: {entities: [EMAIL_ADDRESS]}\n"
    )
    with pytest.raises(ConfigError, match="unredacted"):
        load_mapping(m)


def test_a_message_with_parts_compares_by_its_text():
    """The in-doubt check compares the target's copy by (role, text): parts do not make a
    landed request look missing (which would send it twice)."""
    att = json.dumps([{"kind": "image", "name": "a.jpg", "ref": "a.jpg", "send": "file", "at": "a.jpg", "bytes": 3}])
    ours = json.loads(message_with_parts("user", "look", "2024-01-01T00:00:00Z", att))
    assert ours["content"][0] == {"type": "text", "text": "look"} and ours["content"][1]["type"] == "image_url"
    assert message_hashes([ours])[0] == message_hashes([{"role": "user", "content": "look"}])[0]


def test_a_file_gone_when_sent_leaves_its_note():
    att = json.dumps(
        [{"kind": "file", "name": "a.pdf", "ref": "a.pdf", "send": "file", "at": "gone/a.pdf", "bytes": 3}]
    )
    body = "[" + message_with_parts("user", "see [file: a.pdf]", None, att) + "]"
    assert PLACEHOLDER in body

    def read(at: str) -> bytes:
        raise OSError(f"{at}: no such file")

    text, missing = inline(body, read)
    assert missing == ["gone/a.pdf: gone/a.pdf: no such file"]
    assert json.loads(text) == [{"role": "user", "content": "see [file: a.pdf]"}]


def test_fingerprints_of_messages_without_attachments_are_unchanged():
    """Ledgers written before attachments keep their fingerprints: a null attachments column
    (and no column at all) fingerprints as before; a part changes it."""
    n = 3
    cols = {
        "role": pa.array(["user"] * n),
        "content": pa.array(["a", "b", "c"]),
        "chat_time": pa.array([0, 1, 2], pa.timestamp("us", tz="UTC")),
        "user_id": pa.array(["u"] * n),
        "conversation_id": pa.array(["c"] * n),
    }
    before = fingerprints(pa.table(cols))
    none = fingerprints(pa.table({**cols, "attachments": pa.nulls(n, pa.string())}))
    one = fingerprints(pa.table({**cols, "attachments": pa.array([None, '[{"name": "a.jpg"}]', None])}))
    assert np.array_equal(before, none)
    assert before[0] == one[0] and before[1] != one[1] and before[2] == one[2]
    assert "attachments" in MAPPED_SCHEMA.names


def test_the_dev_server_refuses_parts_the_cloud_would(dev_server):
    def add(content):
        body = {"user_id": "u", "conversation_id": "c", "messages": [{"role": "user", "content": content}]}
        return requests.post(dev_server.url + "/add/message", json=body, timeout=10).json()["code"]

    assert add([{"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": "https://x/a.png"}}]) == 0
    assert add([{"type": "video", "video": {}}]) != 0
    assert add([]) != 0
    assert add([{"type": "image_url", "image_url": {"url": "https://x/a.png"}}] * 21) != 0


def test_a_request_with_parts_whose_answer_was_lost_is_not_sent_twice(tmp_path, dev_server):
    """Stored, then the connection dropped: the in-doubt check finds the messages by their
    text and records the request delivered; every message is held once."""
    root = telegram_with_media(tmp_path)
    extra = {**(sample_settings("telegram-export") or {}), "attachments": {"mode": "parts"}}
    requests.post(dev_server.url + "/_dev/faults", json={"drop_rate": 1.0}, timeout=10).raise_for_status()
    c = sync(tmp_path, dev_server.url, "telegram-export", root, extra)["counts"]  # every answer lost
    assert c["accounted"] and c["reconciled_landed"] == c["requests"] and c["in_doubt"] == 0, c
    assert held(dev_server.url) == expected("telegram-export")
    assert len([m for m in _messages(dev_server.url) if m.get("parts")]) == 2


def test_on_s3_a_key_outside_the_source_prefix_is_never_read(tmp_path, dev_server, s3_endpoint):
    """The Telegram export under exports/tg/ in a bucket: its photo there is sent, a file named
    `../../private/map.pdf` (a key of the same bucket outside the source's prefix) is refused
    with its note and never read."""
    import uuid

    import boto3

    bucket = f"exports-{uuid.uuid4().hex[:8]}"
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    client.create_bucket(Bucket=bucket)
    root = telegram_with_media(tmp_path)
    doc = (root / "result.json").read_text(encoding="utf-8").replace('"files/map.pdf"', '"../../private/map.pdf"')
    (root / "result.json").write_text(doc, encoding="utf-8")
    for f in root.rglob("*"):
        if f.is_file():
            client.put_object(Bucket=bucket, Key=f"exports/tg/{f.relative_to(root).as_posix()}", Body=f.read_bytes())
    client.put_object(Bucket=bucket, Key="private/map.pdf", Body=b"%PDF-1.4 private")
    settings = sample_settings("telegram-export") or {}
    source = {
        "type": "s3",
        "path": None,
        "members": "result.json",
        "s3": {"bucket": bucket, "prefix": "exports/tg/", "endpoint_url": s3_endpoint},
    }
    body = {**settings, "attachments": {"mode": "parts"}, "source": source}
    report = sync(tmp_path, dev_server.url, "telegram-export", root, body)
    c = report["counts"]
    assert c["accounted"] and c["quarantined"] == 0, c
    outside = "noted: outside the export (its path or a link on it leads out of the source): not read"
    assert c["attachments"] == {"sent as parts": 1, outside: 1, "noted: not in the export": 1}, c["attachments"]
    assert "private" not in json.dumps([m.get("parts") for m in _messages(dev_server.url)])
