"""Files as they really arrive, through the CLI into the dev-server: one bad record costs that
record (quarantined with file, line or row, and reason), every good row of the same file is
delivered exactly once, empty files are empty, and compressed, zipped and non-UTF-8 files are
read as downloaded. Expected messages come from tests/helpers.py (plain Python over the rows)."""

from __future__ import annotations

import bz2
import codecs
import gzip
import json
import lzma
import os
import re
import subprocess
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from memos_etl.cli import app
from tasks.quarantine import read_quarantine
from tests.helpers import chat_rows, expected_from_rows, sample_mapping_at, stats, stored_messages

runner = CliRunner()


def sync(mapping: Path, dev_server, work: Path, *extra: str, env: dict | None = None):
    res = runner.invoke(
        app,
        ["sync", str(mapping), "--no-prefect", "--target-url", dev_server.url, "--work-dir", str(work), *extra],
        env=env,
    )
    assert "Traceback" not in res.output, res.output
    return res


def number(output: str, name: str) -> int:
    m = re.search(rf"^{re.escape(name)} +(\d+)$", output, re.M)
    assert m, f"no {name!r} line in:\n{output}"
    return int(m.group(1))


def lines(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def quarantined(work: Path) -> list[dict]:
    return sorted(read_quarantine(str(work)).to_pylist(), key=lambda r: (r["source_file"], r["source_row"]))


def assert_delivered_once(dev_server, good_rows: list[dict]) -> None:
    want, bad = expected_from_rows(good_rows)
    assert bad == 0
    got = stored_messages(dev_server.url)
    if got != want:
        _debug_diff(got, want)
    assert got == want


def test_bad_jsonl_lines_cost_one_line_each(tmp_path, dev_server):
    """Each line the issue tried, among good lines; a 200 MB line among them is streamed past."""
    data = tmp_path / "data"
    data.mkdir()
    good = chat_rows(2, 25, prefix="g")  # 50 messages in a clean file
    (data / "a_good.jsonl").write_bytes(lines(good))
    rows = chat_rows(4, 5, prefix="b")  # 20 good lines around the bad ones
    deep = (
        b'{"message_id": "deep", "user": "u0", "conversation_id": "b0", "text": '
        + b"[" * 100_000
        + b"]" * 100_000
        + b"}"
    )
    wrong_types = json.dumps({**rows[0], "message_id": "typed", "user": {"id": 1}, "turn": "7"}).encode()
    body = [json.dumps(r).encode() for r in rows]
    bad_lines = {
        3: b'{"message_id": "trunc", "user": "u0", "te',
        8: b'{"message_id": "bytes", "text": "caf\xe9"}',
        12: b"\x00" * 40,
        15: deep,
        18: wrong_types,
        21: b"[1, 2, 3]",
    }
    for at in sorted(bad_lines):
        body.insert(at, bad_lines[at])
    (data / "b_bad.jsonl").write_bytes(b"\n".join(body) + b"\n")
    with open(data / "c_huge.jsonl", "wb") as fh:  # a 200 MB line between good ones
        fh.write(lines(chat_rows(1, 4, prefix="h")))
        fh.write(b'{"message_id": "huge", "user": "u0", "conversation_id": "h0", "text": "')
        block = b"x" * (8 << 20)
        for _ in range(25):
            fh.write(block)
        fh.write(b'"}\n')
        fh.write(lines(chat_rows(1, 4, start_turn=5, prefix="h")))
    mapping = sample_mapping_at(tmp_path, data)
    res = sync(mapping, dev_server, tmp_path / "work")
    assert res.exit_code == 0, res.output
    huge_rows = chat_rows(1, 4, prefix="h") + chat_rows(1, 4, start_turn=5, prefix="h")
    assert_delivered_once(dev_server, good + rows + huge_rows)
    assert number(res.output, "quarantined") == 7 and re.search(r"^read = outcomes +yes$", res.output, re.M)
    for kind in (
        "not JSON",
        "not valid UTF-8",
        "NUL bytes",
        "nested too deep",
        "a field of another type",
        "not a JSON object",
        "too long",
    ):  # the report groups by kind, the rows hold the detail
        assert re.search(rf"^ +1  unreadable record \({kind}\)$", res.output, re.M), (kind, res.output)
    q = quarantined(tmp_path / "work")
    got = {(r["source_file"], r["source_row"]): r["reasons"][0] for r in q}
    assert set(got) == {
        ("b_bad.jsonl", 3),
        ("b_bad.jsonl", 8),
        ("b_bad.jsonl", 12),
        ("b_bad.jsonl", 15),
        ("b_bad.jsonl", 18),
        ("b_bad.jsonl", 21),
        ("c_huge.jsonl", 4),
    }
    assert got[("b_bad.jsonl", 3)].startswith("line 4: not JSON")
    assert got[("b_bad.jsonl", 8)].startswith("line 9: not valid UTF-8 (byte 0xe9")
    assert got[("b_bad.jsonl", 12)] == "line 13: holds NUL bytes: not a JSON line"
    assert got[("b_bad.jsonl", 15)] == "line 16: nested deeper than 1,024 levels: not read"
    assert got[("b_bad.jsonl", 18)] == "line 19: field 'user' is an object where the other rows have a string"
    assert got[("b_bad.jsonl", 21)] == "line 22: an array, not a JSON object"
    assert (
        got[("c_huge.jsonl", 4)].startswith("line 5: 209,715,2")
        and "source.max_record_bytes" in got[("c_huge.jsonl", 4)]
    )
    assert all(r["stage"] == "extract" for r in q)
    assert len(json.loads(q[-1]["record"])["raw"]) <= 4096  # the huge line is not kept

    args = ["--target-url", dev_server.url, "--work-dir", str(tmp_path / "work")]
    res = runner.invoke(app, ["quarantine", "redrive", str(mapping), *args])
    assert res.exit_code == 0 and "7 rows quarantined at stage 'extract' are not re-driven" in res.output, res.output
    res = runner.invoke(app, ["reconcile", str(mapping), *args])  # keys of the bad lines unknown: not judged
    assert res.exit_code == 0 and "2 units were read only in part" in res.output, res.output

    # the file is fixed: the next run reads it again and sends only the line that was bad
    (data / "b_bad.jsonl").write_bytes(
        b"\n".join(
            [json.dumps(r).encode() for r in rows]
            + [json.dumps({**rows[0], "message_id": "typed", "turn": 7}).encode()]
        )
        + b"\n"
    )
    (data / "c_huge.jsonl").unlink()
    before = stats(dev_server.url)["messages"]
    res = sync(mapping, dev_server, tmp_path / "work")
    assert res.exit_code == 0, res.output
    assert stats(dev_server.url)["messages"] == before + 1  # the fixed line, once
    res = sync(mapping, dev_server, tmp_path / "work")
    assert stats(dev_server.url)["messages"] == before + 1


def test_bad_csv_rows_cost_one_row_each_and_a_header_alone_is_empty(tmp_path, dev_server):
    data = tmp_path / "data"
    data.mkdir()
    cols = ["message_id", "user", "conversation_id", "turn", "speaker", "text", "sent_at"]
    rows = chat_rows(3, 12, prefix="k")  # 36: three bad rows stay under load.max_failed_share
    rows[4]["text"] = "a message\nover two lines, with a comma"

    def row(r):
        return ",".join('"' + str(r[c]).replace('"', '""') + '"' for c in cols).encode()

    body = [",".join(cols).encode()] + [row(r) for r in rows]
    body.insert(3, b'"extra","u0","k0","2","user","eight","fields","here"')  # 8 fields
    body.insert(9, row({**rows[0], "message_id": "latin"}).replace(b"conversation", b"convers\xe9tion"))
    # a quote left open: the next two rows end up inside its text, up to the next quote
    body.insert(14, b'open,u0,k9,1,user,"it never closes,2024-03-01T01:00:00+00:00')
    body.insert(15, b"o2,u0,k9,2,assistant,swallowed,2024-03-01T02:00:00+00:00")
    body.insert(16, b"o3,u0,k9,3,user,swallowed too,2024-03-01T03:00:00+00:00")
    body.insert(17, b'o4,u0,k9,4,assistant,"and" closed,2024-03-01T04:00:00+00:00')
    (data / "chats.csv").write_bytes(b"\n".join(body) + b"\n")
    (data / "header_only.csv").write_text(",".join(cols) + "\n")
    (data / "zero.csv").write_bytes(b"")
    mapping = sample_mapping_at(
        tmp_path, data, source={"name": "csv-chats", "format": "csv", "path": str(data)}, content_append=[]
    )
    body_map = yaml.safe_load(mapping.read_text())
    body_map["fields"].pop("info")
    mapping.write_text(yaml.safe_dump(body_map))
    res = sync(mapping, dev_server, tmp_path / "work")
    assert res.exit_code == 0, res.output
    assert_delivered_once(dev_server, rows)
    q = quarantined(tmp_path / "work")
    assert [(r["source_file"], r["source_row"], r["reasons"][0]) for r in q] == [
        ("chats.csv", 2, "row 3: 8 fields where the header has 7"),
        (
            "chats.csv",
            8,
            "row 9: column 'text' is not valid UTF-8 (byte 0xe9); set source.encoding for another "
            "encoding, or source.encoding_errors: replace",
        ),
        (
            "chats.csv",
            13,
            "row 14: column 'text' holds 2 line(s) that look like rows of their own: a quote left "
            "open swallowed them; close it and the rows load",
        ),
    ]
    assert number(res.output, "read") == len(rows) + 3


def test_empty_files_are_empty(tmp_path, dev_server):
    """Zero bytes, a BOM alone, a CSV header alone, a JSON []: no rows, no quarantine, no error;
    a run whose files are all empty completes with nothing sent."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "a_zero.jsonl").write_bytes(b"")
    (data / "b_bom.jsonl").write_bytes(codecs.BOM_UTF8)
    (data / "c_blank.jsonl").write_bytes(b"\n  \n\r\n")
    mapping = sample_mapping_at(tmp_path, data)
    res = sync(mapping, dev_server, tmp_path / "work")
    assert res.exit_code == 0, res.output
    assert number(res.output, "read") == 0 and number(res.output, "quarantined") == 0
    assert not quarantined(tmp_path / "work") and stats(dev_server.url)["add_requests"] == 0
    # an empty file first, then one with rows: the mapping is checked against the one with rows
    (data / "d_rows.jsonl").write_bytes(lines(chat_rows(1, 3, prefix="e")))
    res = sync(mapping, dev_server, tmp_path / "work")
    assert res.exit_code == 0 and number(res.output, "delivered") == 3, res.output
    # a ChatGPT export that is an empty array
    export = tmp_path / "export"
    export.mkdir()
    (export / "conversations.json").write_text("[]")
    m = tmp_path / "chatgpt.yaml"
    m.write_text(yaml.safe_dump({"preset": "chatgpt-export", "source": {"path": str(export)}}))
    res = sync(m, dev_server, tmp_path / "w2")
    assert res.exit_code == 0 and number(res.output, "read") == 0, res.output


def test_encodings_are_read_as_written(tmp_path, dev_server):
    rows = chat_rows(2, 3, prefix="n")
    for r in rows:
        r["text"] += " café à l'œuvre"  # œ is in cp1252, not in latin-1
    data = tmp_path / "data"
    data.mkdir()
    (data / "utf16.jsonl").write_bytes(codecs.BOM_UTF16_LE + lines(rows[:2]).decode().encode("utf-16-le"))
    (data / "bom8.jsonl").write_bytes(codecs.BOM_UTF8 + lines(rows[2:4]))
    mapping = sample_mapping_at(tmp_path, data)
    res = sync(mapping, dev_server, tmp_path / "work")
    assert res.exit_code == 0 and number(res.output, "delivered") == 4, res.output
    cp = tmp_path / "cp"
    cp.mkdir()
    (cp / "old.jsonl").write_bytes("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows[4:]).encode("cp1252"))
    m2 = sample_mapping_at(tmp_path, cp, name="cp.yaml")
    body = yaml.safe_load(m2.read_text())
    body["source"].update(encoding="cp1252", name="old-chats")
    m2.write_text(yaml.safe_dump(body))
    res = sync(m2, dev_server, tmp_path / "work")
    assert res.exit_code == 0 and number(res.output, "delivered") == 2, res.output
    assert_delivered_once(dev_server, rows)
    # CSV from an older system: Latin-1, gzipped, inside a zip
    more = chat_rows(2, 2, prefix="l")
    for r in more:
        r["text"] += " déjà vu"
    cols = ["message_id", "user", "conversation_id", "turn", "speaker", "text", "sent_at"]
    text = ",".join(cols) + "\n" + "".join(",".join(f'"{r[c]}"' for c in cols) + "\n" for r in more)
    lat = tmp_path / "latin"
    lat.mkdir()
    with zipfile.ZipFile(lat / "export.zip", "w") as z:
        z.writestr("2024/chats.csv.gz", gzip.compress(text.encode("latin-1")))
    m3 = sample_mapping_at(
        tmp_path,
        lat,
        name="lat.yaml",
        content_append=[],
        source={"name": "latin", "format": "csv", "path": str(lat), "encoding": "latin-1"},
    )
    body = yaml.safe_load(m3.read_text())
    body["fields"].pop("info")
    m3.write_text(yaml.safe_dump(body))
    res = sync(m3, dev_server, tmp_path / "work")
    assert res.exit_code == 0 and number(res.output, "delivered") == 4, res.output
    assert_delivered_once(dev_server, rows + more)


def test_compressed_and_zipped_files_are_read_as_downloaded(tmp_path, dev_server):
    rows = chat_rows(6, 4, prefix="z")
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.jsonl.gz").write_bytes(gzip.compress(lines(rows[0:4])))
    (data / "b.jsonl.bz2").write_bytes(bz2.compress(lines(rows[4:8])))
    (data / "c.jsonl.xz").write_bytes(lzma.compress(lines(rows[8:12])))
    raw = data / "d.jsonl"
    raw.write_bytes(lines(rows[12:16]))
    subprocess.run(["zstd", "-q", "--rm", str(raw)], check=True)
    with zipfile.ZipFile(data / "e.zip", "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("logs/one.jsonl", lines(rows[16:20]))
        z.writestr("logs/two.jsonl", lines(rows[20:22]) + b'{"broken\n' + lines(rows[22:24]))
        z.writestr("README.txt", "not a member")
    mapping = sample_mapping_at(tmp_path, data)
    res = sync(mapping, dev_server, tmp_path / "work")
    assert res.exit_code == 0, res.output
    assert_delivered_once(dev_server, rows)
    q = quarantined(tmp_path / "work")
    assert [(r["source_file"], r["source_row"]) for r in q] == [("e.zip!logs/two.jsonl", 2)]
    assert q[0]["reasons"][0].startswith("line 3: not JSON")
    # the archive made again with one member changed (its broken line taken out): only that
    # member is read again
    with zipfile.ZipFile(data / "e.zip", "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("logs/one.jsonl", lines(rows[16:20]))
        z.writestr("logs/two.jsonl", lines(rows[20:24]))
    before = stats(dev_server.url)["messages"]
    res = sync(mapping, dev_server, tmp_path / "work", "--json")
    assert res.exit_code == 0, res.output
    report = json.loads(res.output[res.output.index("{") :])
    # the broken line was no message of its own: the member's four are delivered already
    assert report["counts"]["read"] == 4 and report["counts"]["already_delivered"] == 4
    assert stats(dev_server.url)["messages"] == before


def test_chatgpt_export_zip_is_read_as_downloaded(tmp_path, dev_server):
    sample = Path(__file__).resolve().parent.parent / "schemas" / "presets" / "samples"
    conv = next(sample.glob("chatgpt*"))
    conv = conv / "conversations.json" if conv.is_dir() else conv
    export = tmp_path / "export"
    export.mkdir()
    with zipfile.ZipFile(export / "chatgpt-export.zip", "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("conversations.json", conv.read_bytes())
        z.writestr("user.json", '{"id": "user-1"}')
        z.writestr("chat.html", "<html></html>")
    m = tmp_path / "chatgpt.yaml"
    m.write_text(yaml.safe_dump({"preset": "chatgpt-export", "source": {"path": str(export / "chatgpt-export.zip")}}))
    res = sync(m, dev_server, tmp_path / "work")
    plain = tmp_path / "plain.yaml"
    plain.write_text(yaml.safe_dump({"preset": "chatgpt-export", "source": {"path": str(conv), "name": "plain"}}))
    res2 = runner.invoke(app, ["plan", str(plain), "--work-dir", str(tmp_path / "w2"), "--target-url", dev_server.url])
    assert res.exit_code == 0 and res2.exit_code == 0, res.output + res2.output
    assert number(res.output, "delivered") == number(res2.output, "read") == 6
    assert "1 read, 0 unchanged" in res.output  # conversations.json only: user.json and chat.html are not members


def test_the_wrong_file_behind_the_right_name_is_one_quarantine_row(tmp_path, dev_server):
    data = tmp_path / "data"
    data.mkdir()
    rows = chat_rows(1, 4, prefix="w")
    (data / "a_good.jsonl").write_bytes(lines(rows))
    (data / "b_gzipped.jsonl").write_bytes(gzip.compress(lines(chat_rows(1, 2, prefix="x"))))
    (data / "c_binary.jsonl").write_bytes(bytes(range(256)) * 64)
    (data / "d_csv.jsonl").write_text("a,b,c\n" + "1,2,3\n" * 30)
    os.symlink("e_loop.jsonl", data / "e_loop.jsonl")
    os.symlink("nowhere.jsonl", data / "f_dangling.jsonl")
    with zipfile.ZipFile(data / "g_empty.zip", "w") as z:
        z.writestr("notes.txt", "nothing to read")
    (data / "h_fake.zip").write_bytes(b"PK\x03\x04 this is not an archive")
    res = sync(sample_mapping_at(tmp_path, data), dev_server, tmp_path / "work")
    assert res.exit_code == 0, res.output
    assert_delivered_once(dev_server, rows)
    q = {r["source_file"]: r["reasons"][0] for r in quarantined(tmp_path / "work")}
    assert set(q) == {
        "b_gzipped.jsonl",
        "c_binary.jsonl",
        "d_csv.jsonl",
        "e_loop.jsonl",
        "f_dangling.jsonl",
        "g_empty.zip",
        "h_fake.zip",
    }
    assert "this is a gzip file, not jsonl text" in q["b_gzipped.jsonl"]
    assert "binary content" in q["c_binary.jsonl"]
    assert "no line of the first 31 is a JSON object" in q["d_csv.jsonl"]
    assert "Too many levels of symbolic links" in q["e_loop.jsonl"]
    assert "No such file" in q["f_dangling.jsonl"]
    assert "no member of the archive matches" in q["g_empty.zip"] and "notes.txt" in q["g_empty.zip"]
    assert "not a readable .zip archive" in q["h_fake.zip"]


def test_a_corrupt_parquet_row_group_costs_that_group(tmp_path, dev_server):
    rows = chat_rows(3, 40, prefix="p")  # 12 row groups: one bad is 8%, under load.max_failed_share
    data = tmp_path / "data"
    data.mkdir()
    f = data / "chats.parquet"
    pq.write_table(pa.Table.from_pylist(rows), f, row_group_size=10, compression="snappy")
    meta = pq.ParquetFile(f).metadata
    col = meta.row_group(1).column(meta.schema.names.index("text"))
    raw = bytearray(f.read_bytes())
    start = col.data_page_offset  # the text column's pages of row group 1, overwritten
    raw[start : start + col.total_compressed_size] = b"\xff" * col.total_compressed_size
    f.write_bytes(bytes(raw))
    mapping = sample_mapping_at(tmp_path, data, source={"name": "pq", "format": "parquet", "path": str(data)})
    res = sync(mapping, dev_server, tmp_path / "work")
    assert res.exit_code == 0, res.output
    assert_delivered_once(dev_server, rows[:10] + rows[20:])
    q = quarantined(tmp_path / "work")
    assert [(r["source_file"], r["source_row"]) for r in q] == [("chats.parquet", 10)]
    assert q[0]["reasons"][0].startswith("row group 1: cannot read its 10 rows")
    assert number(res.output, "read") == 120 and number(res.output, "quarantined") == 10


@pytest.fixture
def s3_bucket(s3_endpoint):
    import uuid

    import boto3

    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    name = f"messy-{uuid.uuid4().hex[:8]}"
    client.create_bucket(Bucket=name)
    return client, name


def test_s3_gzipped_jsonl_with_a_bad_line(tmp_path, dev_server, s3_endpoint, s3_bucket):
    client, name = s3_bucket
    rows = chat_rows(2, 5, prefix="s")
    body = lines(rows[:5]) + b'{"not": json}\n' + lines(rows[5:])
    client.put_object(Bucket=name, Key="raw/day.jsonl.gz", Body=gzip.compress(body))
    with zipfile.ZipFile(tmp_path / "x.zip", "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("more.jsonl", lines(chat_rows(1, 3, prefix="t")))
    client.put_object(Bucket=name, Key="raw/more.zip", Body=(tmp_path / "x.zip").read_bytes())
    mapping = sample_mapping_at(
        tmp_path,
        tmp_path,
        source={
            "name": "s3-messy",
            "type": "s3",
            "format": "jsonl",
            "s3": {"bucket": name, "prefix": "raw/", "endpoint_url": s3_endpoint},
        },
    )
    res = sync(mapping, dev_server, tmp_path / "work")
    assert res.exit_code == 0, res.output
    assert_delivered_once(dev_server, rows + chat_rows(1, 3, prefix="t"))
    q = quarantined(tmp_path / "work")
    assert [(r["source_file"], r["source_row"], r["reasons"][0][:18]) for r in q] == [
        ("day.jsonl.gz", 5, "line 6: not JSON (")
    ]


def _debug_diff(a, b):
    for k in sorted(set(a) | set(b)):
        if a.get(k) != b.get(k):
            x, y = a.get(k) or [], b.get(k) or []
            print(k, len(x), len(y), [m for m in x if m not in y][:3], [m for m in y if m not in x][:3])


def test_a_csv_value_that_does_not_convert_late_in_the_file_costs_its_row():
    """`turn` is an integer in the first block and `abc` in a later one: Arrow's stream stops
    there, so the column is read again as text and converted batch by batch."""
    import io

    from tasks.extract.csvfile import csv_batches

    body = "id,turn,text\n" + "".join(f"m{i},{i},hello {i}\n" for i in range(2000))
    body = body.replace("m1500,1500,", "m1500,abc,")
    data = body.encode()
    bad: list = []
    got = list(csv_batches(lambda: io.BytesIO(data), ",", ["id", "text"], bad, False, block_bytes=4096))
    table = pa.Table.from_batches([rb.select(["id", "turn"]) for _, rb in got])
    assert table.num_rows == 1999 and table.schema.field("turn").type == pa.int64()
    assert "m1500" not in table.column("id").to_pylist()
    assert [(b.row, b.where, b.reason) for b in bad] == [
        (1500, "row 1501", "column 'turn' holds 'abc', not int64 like the rows before it")
    ]
    positions = [
        p
        for off, rb in got
        for p in (
            rb.column("__memos_etl_row__").to_pylist()
            if "__memos_etl_row__" in rb.schema.names
            else range(off, off + rb.num_rows)
        )
    ]
    assert positions == [i for i in range(2000) if i != 1500]


def test_nested_records_cost_one_record_each(tmp_path, dev_server):
    """OpenAI-chat JSONL (a record a line) and a ChatGPT export cut off halfway: the record
    that cannot be read is quarantined with its line or number, the others are delivered."""
    samples = Path(__file__).resolve().parent.parent / "schemas" / "presets" / "samples"
    good = samples.joinpath("openai-chat.jsonl").read_bytes().splitlines()
    data = tmp_path / "oa"
    data.mkdir()
    deep = b'{"id": "deep", "user": "u", "messages": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    big = b'{"id": "big", "user": "u", "messages": [{"role": "user", "content": "' + b"y" * (2 << 20) + b'"}]}'
    body = [
        good[0],
        b'{"id": "latin", "user": "u", "messages": [{"role": "user", "content": "caf\xe9"}]}',
        good[1],
        deep,
        b"{not json",
        big,
        good[2],
    ]
    (data / "chats.jsonl").write_bytes(b"\n".join(body) + b"\n")
    m = tmp_path / "oa.yaml"
    m.write_text(yaml.safe_dump({"preset": "openai-chat", "source": {"path": str(data), "max_record_bytes": 1 << 20}}))
    clean = tmp_path / "clean"
    clean.mkdir()
    (clean / "chats.jsonl").write_bytes(b"\n".join(good) + b"\n")
    m_clean = tmp_path / "clean.yaml"
    m_clean.write_text(yaml.safe_dump({"preset": "openai-chat", "source": {"path": str(clean), "name": "clean"}}))
    res = sync(m, dev_server, tmp_path / "work", env={"MEMOS_ETL__LOAD__MAX_FAILED_SHARE": "0.5"})  # 4 of 15
    plan = runner.invoke(
        app, ["plan", str(m_clean), "--work-dir", str(tmp_path / "w2"), "--target-url", dev_server.url]
    )
    assert res.exit_code == 0 and plan.exit_code == 0, res.output + plan.output
    assert number(res.output, "delivered") == number(plan.output, "read") > 0
    q = quarantined(tmp_path / "work")
    assert [(r["source_row"], r["stage"], r["reasons"][0].split(":")[0]) for r in q] == [
        (1, "extract", "line 2"),
        (3, "extract", "line 4"),
        (4, "nest", "nest"),
        (5, "extract", "line 6"),
    ]
    assert "not valid UTF-8" in q[0]["reasons"][0] and "nested deeper" in q[1]["reasons"][0]
    assert "not JSON" in q[2]["reasons"][0] and "more than source.max_record_bytes=1,048,576" in q[3]["reasons"][0]

    export = json.loads(samples.joinpath("chatgpt-export.json").read_text())
    doc = json.dumps(export).encode()
    cut = doc[: len(doc) - len(json.dumps(export[-1])) // 2]  # the last conversation cut off halfway
    (tmp_path / "ex").mkdir()
    (tmp_path / "ex" / "conversations.json").write_bytes(cut)
    first = tmp_path / "first"
    first.mkdir()
    (first / "conversations.json").write_text(json.dumps(export[:-1]))
    m = tmp_path / "ex.yaml"
    m.write_text(yaml.safe_dump({"preset": "chatgpt-export", "source": {"path": str(tmp_path / "ex"), "name": "ex"}}))
    m_first = tmp_path / "first.yaml"
    m_first.write_text(yaml.safe_dump({"preset": "chatgpt-export", "source": {"path": str(first), "name": "first"}}))
    res = sync(m, dev_server, tmp_path / "work3", env={"MEMOS_ETL__LOAD__MAX_FAILED_SHARE": "0.5"})
    plan = runner.invoke(
        app, ["plan", str(m_first), "--work-dir", str(tmp_path / "w4"), "--target-url", dev_server.url]
    )
    assert res.exit_code == 0 and plan.exit_code == 0, res.output + plan.output
    assert number(res.output, "delivered") == number(plan.output, "read") > 0
    q = quarantined(tmp_path / "work3")
    assert [(r["source_row"], r["reasons"][0].split(" (")[0]) for r in q] == [
        (len(export) - 1, f"record {len(export) - 1}: the document stops being JSON here")
    ]


def test_bad_lines_are_found_the_same_in_every_block():
    """Many blocks (16 KiB each), bad lines of every kind at random places: Arrow's errors cut
    them out (or, past RECOVERIES, the line-by-line read does); either way exactly the bad
    lines are BadRows and every good row comes out once with its record number."""
    import io
    import random

    from tasks.extract.lines import ROW_COLUMN, flat_batches

    rnd = random.Random(5)
    kinds = [
        b'{"id": "x", "text": "cut',
        b'{"id": "x", "text": "caf\xe9"}',
        b"\x00\x00",
        b'{"id": {"o": 1}, "n": 1, "text": "t"}',
        b'{"id": "x", "n": "seven", "text": "t"}',
        b"[1]",
        b'{"id": "x", "n": 1.5, "text": "t"}',
        b'{"id": "x", "n": 1}{"id": "y", "n": 2}',
        b'{"id": "x", "text": ' + b"[" * 6000 + b"]" * 6000 + b"}",
    ]
    lines, want_bad = [], set()
    for i in range(3000):
        if i > 100 and rnd.random() < 0.01:
            lines.append(rnd.choice(kinds))
            want_bad.add(i)
        else:
            lines.append(json.dumps({"id": f"m{i}", "n": i, "text": "hello " * (i % 9)}).encode())
    lines[1500:1500] = [b"   ", b""]  # blank lines are not records
    data = b"\n".join(lines) + b"\n"
    for dense in (False, True):
        if dense:  # more bad lines in one block than are cut out one by one
            data = b"\n".join(lines[:200] + [kinds[0]] * 100 + lines[200:]) + b"\n"
            want = {i if i < 200 else i + 100 for i in want_bad} | set(range(200, 300))
        else:
            want = want_bad
        bad: list = []
        got = {}
        for off, rb in flat_batches(io.BytesIO(data), bad, 1 << 20, False, block_bytes=16 << 10):
            rows = rb.column(ROW_COLUMN).to_pylist() if ROW_COLUMN in rb.schema.names else range(off, off + rb.num_rows)
            for r, v in zip(rows, rb.column("id").to_pylist()):
                assert r not in got
                got[r] = v
        assert {b.row for b in bad} == want
        assert set(got) == set(range(len(got) + len(want))) - want
        assert all(got[r] == f"m{r if not dense or r < 200 else r - 100}" for r in got)


def test_a_csv_row_longer_than_a_block_is_read_and_one_past_the_limit_is_a_clear_error():
    import io

    from core.errors import RowTooLong
    from tasks.extract.csvfile import csv_batches

    body = b"id,text\n1,hello\n2," + b"x" * (3 << 20) + b"\n3,after\n"
    got = list(
        csv_batches(
            lambda: io.BytesIO(body), ",", ["id", "text"], [], False, block_bytes=1 << 20, max_record_bytes=2 << 20
        )
    )
    assert [len(t) for _, rb in got for t in rb.column("text").to_pylist()] == [5, 3 << 20, 5]
    with pytest.raises(RowTooLong, match="longer than source.max_record_bytes=1,048,576"):
        list(
            csv_batches(
                lambda: io.BytesIO(body), ",", ["id", "text"], [], False, block_bytes=1 << 19, max_record_bytes=1 << 20
            )
        )


def test_bad_records_count_towards_the_quality_threshold(tmp_path, dev_server):
    """A day where half the lines are bad stops before sending anything, like any other failed
    share over load.max_failed_share (exit 1: an error, as README's exit codes say); the bad
    lines are in the quarantine."""
    data = tmp_path / "data"
    data.mkdir()
    rows = chat_rows(2, 5, prefix="t")
    (data / "day.jsonl").write_bytes(b"".join(json.dumps(r).encode() + b"\n{\n" for r in rows))
    res = sync(sample_mapping_at(tmp_path, data), dev_server, tmp_path / "work")
    assert res.exit_code == 1, res.output
    assert "10 of 20 rows failed validation" in res.output and stats(dev_server.url)["add_requests"] == 0
    assert len(quarantined(tmp_path / "work")) == 10


def test_a_record_nested_100000_deep_costs_one_quarantined_record_in_bounded_memory(tmp_path):
    """200 KB of brackets made the streaming JSON parser build tens of GB (the run was killed
    for memory). The depth guard cuts the subtree out as the bytes arrive: that record is
    quarantined, the others load. Run in a child limited to 2 GB of address space."""
    import subprocess
    import sys
    import textwrap

    doc = tmp_path / "conversations.json"
    good = {"id": "c1", "user": "u", "conversations": [{"from": "human", "value": "hi"}]}
    deep = '{"id": "c2", "user": "u", "conversations": ' + "[" * 100_000 + "]" * 100_000 + "}"
    doc.write_text("[" + json.dumps(good) + ", " + deep + ", " + json.dumps({**good, "id": "c3"}) + "]")
    child = textwrap.dedent(
        f"""
        import json, resource
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
        from tasks.extract.records import json_items
        bad, ids = [], []
        with open({str(doc)!r}, "rb") as fh:
            for _, batch in json_items(fh, bad):
                ids += [json.loads(t)["id"] for t in batch.column(0).to_pylist()]
        print(json.dumps({{"ids": ids, "bad": [(b.row, str(b.reason)) for b in bad]}}))
        """
    )
    repo = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=120, cwd=repo)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout)
    assert got["ids"] == ["c1", "c3"] and got["bad"] == [[1, "nested deeper than 200 levels: not read"]]


@pytest.mark.parametrize("size", [1, 3, 64, 1 << 20])
def test_the_depth_guard_passes_every_shallow_document_byte_for_byte(size):
    """Quotes after even and odd runs of backslashes, brackets inside strings, chunk edges
    anywhere: a document within the limit comes out unchanged; one beyond it has exactly
    the deep subtree replaced."""
    import io
    import random

    from tasks.extract.depth import DepthGuard

    def through(doc: bytes, limit: int) -> bytes:
        guard, out = DepthGuard(io.BytesIO(doc), limit=limit), b""
        while chunk := guard.read(size):
            out += chunk
        return out

    rnd = random.Random(size)

    def gen(d: int):
        r = rnd.random()
        if d > 4 or r < 0.3:
            return rnd.choice(['a\\"]', "x[", 1, None, "\\\\", "{", '"'])
        if r < 0.6:
            return [gen(d + 1) for _ in range(rnd.randint(0, 3))]
        return {f'k{i}\\"[': gen(d + 1) for i in range(rnd.randint(0, 3))}

    for _ in range(200):
        doc = json.dumps(gen(0)).encode()
        assert through(doc, 6) == doc
    deep = b'{"k": "\\\\\\"[[[[[[[[[[", "d": [[[[[[[[[["s[[[[["]]]]]]]]]], "e": 2}'
    assert json.loads(through(deep, 5)) == {"k": '\\"[[[[[[[[[[', "d": [[[["\x00memos-etl: nested too deep"]]]], "e": 2}


def _viewed(table: pa.Table) -> pa.Table:
    """The table as newer writers (deltalake, polars, DuckDB) hand it out: strings as string_view."""
    fields = [pa.field(f.name, pa.string_view()) if pa.types.is_string(f.type) else f for f in table.schema]
    return table.cast(pa.schema(fields))


def test_a_string_view_file_beside_a_string_file_loads(tmp_path, dev_server):
    """string / large_string / string_view are one logical type: a mix across files, and a file
    whose writer changed between nightly runs, loads, and the fingerprints do not move."""
    first, second, third = chat_rows(2, 6, prefix="s"), chat_rows(2, 6, prefix="v"), chat_rows(1, 4, prefix="w")
    data = tmp_path / "data"
    data.mkdir()
    pq.write_table(pa.Table.from_pylist(first), data / "a.parquet")
    pq.write_table(_viewed(pa.Table.from_pylist(second)), data / "b.parquet")
    assert pq.read_schema(data / "b.parquet").field("message_id").type == pa.string_view()
    mapping = sample_mapping_at(tmp_path, data, source={"name": "pq", "format": "parquet", "path": str(data)})
    res = sync(mapping, dev_server, tmp_path / "work")
    assert res.exit_code == 0, res.output
    assert_delivered_once(dev_server, first + second)
    # the nightly run: a's writer now uses views, c arrives with large_string
    a = _viewed(pa.Table.from_pylist(first))
    pq.write_table(a, data / "a.parquet")
    os.utime(data / "a.parquet", ns=(10**18, 10**18))  # a changed file: re-read, nothing resent
    large = pa.Table.from_pylist(third)
    large = large.cast(
        pa.schema([pa.field(f.name, pa.large_string()) if pa.types.is_string(f.type) else f for f in large.schema])
    )
    pq.write_table(large, data / "c.parquet")
    again = sync(mapping, dev_server, tmp_path / "work")
    assert again.exit_code == 0, again.output
    assert "changed type" not in again.output
    assert number(again.output, "delivered") == len(third)
    assert_delivered_once(dev_server, first + second + third)


def test_a_jsonl_record_nested_995_deep_costs_its_line_not_the_run(tmp_path, dev_server):
    """Under orjson's 1,024 levels a line parses, and Arrow reads it; the explode then recursed
    once a level (the record's Arrow type, a message's parts as text) and the run stopped with a
    RecursionError. A nested record deeper than 200 levels is one quarantined line, as a JSON
    document's record is; one at 200 levels loads."""
    samples = Path(__file__).resolve().parent.parent / "schemas" / "presets" / "samples"
    good = samples.joinpath("openai-chat.jsonl").read_bytes().splitlines()

    def nested(rid: str, levels: int) -> bytes:  # the record, its messages, a message: 3 levels above
        content = b"[" * (levels - 3) + b'"deep"' + b"]" * (levels - 3)
        return (
            b'{"id": "' + rid.encode() + b'", "user": "u", "messages": [{"role": "user", "content": ' + content + b"}]}"
        )

    data = tmp_path / "oa"
    data.mkdir()
    body = [good[0], nested("deep", 998), good[1], nested("d201", 201), nested("d200", 200), good[2]]
    (data / "chats.jsonl").write_bytes(b"\n".join(body) + b"\n")
    m = tmp_path / "oa.yaml"
    m.write_text(yaml.safe_dump({"preset": "openai-chat", "source": {"path": str(data)}}))
    clean = tmp_path / "clean"
    clean.mkdir()
    (clean / "chats.jsonl").write_bytes(b"\n".join([*good[:3], nested("d200", 200)]) + b"\n")
    m_clean = tmp_path / "clean.yaml"
    m_clean.write_text(yaml.safe_dump({"preset": "openai-chat", "source": {"path": str(clean), "name": "clean"}}))
    res = sync(m, dev_server, tmp_path / "work", env={"MEMOS_ETL__LOAD__MAX_FAILED_SHARE": "0.5"})
    plan = runner.invoke(
        app, ["plan", str(m_clean), "--work-dir", str(tmp_path / "w2"), "--target-url", dev_server.url]
    )
    assert res.exit_code == 0 and plan.exit_code == 0, res.output + plan.output
    assert number(res.output, "delivered") == number(plan.output, "read") > 0
    q = quarantined(tmp_path / "work")
    assert [(r["source_row"], r["stage"], r["reasons"][0]) for r in q] == [
        (1, "extract", "line 2: nested deeper than 200 levels: not read"),
        (3, "extract", "line 4: nested deeper than 200 levels: not read"),
    ]
