"""The `librechat` preset on a `mongoexport` of LibreChat's `messages` collection written here by
hand in LibreChat's documented schema (packages/data-schemas/src/schema/message.ts): JSON lines of
Extended JSON, a conversation's lines spread over the file. Synced through the CLI into the
dev-server; each message compared with what the lines say, worked out by hand below."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest
from typer.testing import CliRunner

from memos_etl.cli import app
from tasks.extract.blocks import RECORD_COLUMN
from tasks.extract.grouped import grouped_batches
from tasks.extract.records import parsed_batch, parsed_records
from tests.test_exports import held, sync

ROOT = "00000000-0000-0000-0000-000000000000"


def doc(mid, conv, parent, user, mine, when, text="", content=None, **more) -> str:
    d = {
        "_id": {"$oid": f"66a1b2c3d4e5f6a7b8c9{abs(hash(mid)) % 10000:04d}"},
        "messageId": mid,
        "conversationId": conv,
        "parentMessageId": parent,
        "user": user,
        "isCreatedByUser": mine,
        "sender": "User" if mine else "GPT-4o",
        "text": text,
        "createdAt": when if isinstance(when, dict) else {"$date": when},
        "updatedAt": when if isinstance(when, dict) else {"$date": when},
        "error": False,
        "unfinished": False,
        **more,
    }
    if content is not None:
        d["content"] = content
    return json.dumps(d)


def ms(epoch_ms: int) -> dict:
    return {"$date": {"$numberLong": str(epoch_ms)}}


# c1 (ana): a regenerated answer: a1 and a2 are both children of u1; the newest leaf (a3) lies
# under a2, so the thread shown is u1, a2, u2, a3 and a1 is not loaded.
# c2 (ben): an agent turn whose content holds think and tool_call parts, then a turn with
# Extended JSON numberLong dates and the older `text` field alone.
# c3 (cy): x2 names a parent that is not in the export: the conversation is one quarantined row.
LINES = [
    doc("c1-u1", "c1", ROOT, "ana", True, "2024-05-01T10:00:00.000Z", "What is a leap year?"),
    doc(
        "c2-u1",
        "c2",
        ROOT,
        "ben",
        True,
        "2024-05-02T09:00:00.000Z",
        "",
        [{"type": "text", "text": "Weather in Paris?"}],
    ),
    doc("c1-a1", "c1", "c1-u1", "ana", False, "2024-05-01T10:00:05.000Z", "A year with 366 days."),
    "{this line is not JSON",
    doc(
        "c2-a1",
        "c2",
        "c2-u1",
        "ben",
        False,
        "2024-05-02T09:00:04.000Z",
        "",
        [
            {"type": "think", "think": "The user wants the weather; call the tool."},
            {"type": "tool_call", "tool_call": {"id": "call_1", "name": "weather", "args": '{"city": "Paris"}'}},
            {"type": "text", "text": "It is 18 °C and sunny in Paris."},
        ],
    ),
    doc("c1-a2", "c1", "c1-u1", "ana", False, "2024-05-01T10:01:00.000Z", "Every fourth year: 366 days."),
    doc("c3-x1", "c3", ROOT, "cy", True, "2024-05-03T08:00:00.000Z", "Hello?"),
    doc("c1-u2", "c1", "c1-a2", "ana", True, "2024-05-01T10:02:00.000Z", "Why?"),
    doc("c2-u2", "c2", "c2-a1", "ben", True, ms(1714640460000), "And tomorrow?"),  # 2024-05-02T09:01:00Z
    doc("c3-x2", "c3", "c3-gone", "cy", False, "2024-05-03T08:00:03.000Z", "An answer to nothing."),
    doc("c1-a3", "c1", "c1-u2", "ana", False, "2024-05-01T10:02:05.000Z", "Earth's orbit takes about 365.25 days."),
    doc("c2-a2", "c2", "c2-u2", "ben", False, ms(1714640465500), "Rain is expected."),  # ...09:01:05.500Z
]

WANT = {
    ("ana", "c1"): [
        ("user", "What is a leap year?", "2024-05-01T10:00:00Z"),
        ("assistant", "Every fourth year: 366 days.", "2024-05-01T10:01:00Z"),
        ("user", "Why?", "2024-05-01T10:02:00Z"),
        ("assistant", "Earth's orbit takes about 365.25 days.", "2024-05-01T10:02:05Z"),
    ],
    ("ben", "c2"): [
        ("user", "Weather in Paris?", "2024-05-02T09:00:00Z"),
        ("assistant", "It is 18 °C and sunny in Paris.", "2024-05-02T09:00:04Z"),
        ("user", "And tomorrow?", "2024-05-02T09:01:00Z"),
        ("assistant", "Rain is expected.", "2024-05-02T09:01:05Z"),  # chat_time is sent to the second
    ],
}

GROWN = [
    doc("c1-u3", "c1", "c1-a3", "ana", True, "2024-05-04T12:00:00.000Z", "Thanks!"),
    doc("c4-u1", "c4", ROOT, "ana", True, "2024-05-04T12:10:00.000Z", "", [{"type": "text", "text": "A new chat."}]),
    doc("c1-a4", "c1", "c1-u3", "ana", False, "2024-05-04T12:00:02.000Z", "You are welcome."),
    doc("c4-a1", "c4", "c4-u1", "ana", False, "2024-05-04T12:10:01.000Z", "Sure."),
]

LOAD = {"max_failed_share": 0.5}


def test_a_mongoexport_loads_the_shown_thread_once_and_then_only_what_grew(tmp_path, dev_server):
    export = tmp_path / "messages.jsonl"
    export.write_text("\n".join(LINES) + "\n")
    report = sync(tmp_path, dev_server.url, "librechat", export, load=LOAD)
    c = report["counts"]
    assert c["accounted"] and c["quarantined"] == 2, c  # the line that is not JSON, conversation c3
    assert held(dev_server.url) == WANT

    reasons = CliRunner().invoke(app, ["quarantine", "list", "-c", str(tmp_path / "memos-etl.yaml")])
    assert "not JSON" in reasons.output and "c3-gone" in reasons.output, reasons.output

    again = sync(tmp_path, dev_server.url, "librechat", export, load=LOAD)
    assert again["counts"]["requests"] == 0 and held(dev_server.url) == WANT

    with export.open("a") as fh:
        fh.write("\n".join(GROWN) + "\n")
    grown = sync(tmp_path, dev_server.url, "librechat", export, load=LOAD)
    assert grown["counts"]["delivered"] == 4, grown["counts"]
    want = {
        **WANT,
        ("ana", "c1"): WANT[("ana", "c1")]
        + [
            ("user", "Thanks!", "2024-05-04T12:00:00Z"),
            ("assistant", "You are welcome.", "2024-05-04T12:00:02Z"),
        ],
        ("ana", "c4"): [
            ("user", "A new chat.", "2024-05-04T12:10:00Z"),
            ("assistant", "Sure.", "2024-05-04T12:10:01Z"),
        ],
    }
    assert held(dev_server.url) == want


def test_a_sorted_export_loads_the_same_a_conversation_at_a_time(tmp_path, dev_server):
    export = tmp_path / "sorted.jsonl"
    good = [line for line in LINES if line.startswith('{"')]
    good.sort(key=lambda line: json.loads(line)["conversationId"])  # mongoexport --sort
    export.write_text("\n".join(good) + "\n")
    report = sync(tmp_path, dev_server.url, "librechat", export, load=LOAD)
    assert report["counts"]["accounted"] and report["counts"]["quarantined"] == 1
    assert held(dev_server.url) == WANT


def test_detect_names_librechat(tmp_path):
    export = tmp_path / "messages.json"  # mongoexport's default name; .jsonl alike
    export.write_text("\n".join(LINES[:3]) + "\n")
    res = CliRunner().invoke(app, ["detect", str(export)])
    assert res.exit_code == 0, res.output
    assert [line.split(":", 1)[0] for line in res.stdout.splitlines() if not line.startswith(" ")] == ["librechat"]


def test_each_record_is_parsed_once_and_its_text_reads_back_to_the_same_record(tmp_path):
    """The walk takes the records the reader made (tasks/extract/records.py parsed_batch), and the
    batch's text, what a sliced batch is read from, must say the same: a NaN or an infinity from
    `$numberDouble` (orjson writes those as null) and an integer past 64 bits (orjson refuses it)
    are written by Python's json."""
    inf = doc("c5-u1", "c5", ROOT, "dee", True, "2024-05-05T10:00:00.000Z", "odd", score={"$numberDouble": "-inf"})
    big = doc("c6-u1", "c6", ROOT, "dee", True, "2024-05-06T10:00:00.000Z", "big", n={"$numberLong": "1" * 24})
    export = tmp_path / "messages.jsonl"
    for lines in (LINES, [line for line in LINES if line.startswith('{"')]):  # read line by line; by blocks
        export.write_text("\n".join([*lines, inf, big]) + "\n")
        seen = []
        for _, rb in grouped_batches(lambda: export.open("rb"), "conversationId", [], 1 << 20, False):
            records = parsed_records(rb)
            assert records is not None  # the walk parses nothing again
            assert [json.loads(t) for t in rb.column(RECORD_COLUMN).to_pylist()] == records
            seen += records
        first = {r["conversationId"]: r["lines"][0] for r in seen}
        assert first["c5"]["score"] == float("-inf") and first["c6"]["n"] == int("1" * 24)
        assert first["c1"]["createdAt"] == "2024-05-01T10:00:00.000Z"


def test_an_export_that_changes_between_the_two_passes_is_unreadable_not_split(tmp_path):
    """The first pass's answer (one conversation's lines together) is kept for the unit's version:
    a run's checks and its staging read the file with one first pass. A file whose lines are no
    longer together when it is read again stops with an error (the unit is quarantined whole and
    read again next run) instead of loading c1 as two conversations."""
    export = tmp_path / "sorted.jsonl"
    good = [line for line in LINES if line.startswith('{"')]
    good.sort(key=lambda line: json.loads(line)["conversationId"])
    export.write_text("\n".join(good) + "\n")
    opened = []

    def open_stream():
        opened.append(1)
        return export.open("rb")

    version = ("test", str(export), "", "v1")
    records = [
        r
        for _, rb in grouped_batches(open_stream, "conversationId", [], 1 << 20, False, version)
        for r in rb.column(RECORD_COLUMN).to_pylist()
    ]
    assert len(opened) == 2 and len(records) == 3  # the first pass, then the records
    with export.open("a") as fh:  # c1 grows at the end: its lines are no longer together
        fh.write(GROWN[0] + "\n")
    with pytest.raises(OSError, match="changed while it was read"):
        for _ in grouped_batches(open_stream, "conversationId", [], 1 << 20, False, version):
            pass
    assert len(opened) == 3  # no first pass again under the same version


def test_a_line_that_is_one_extended_json_value_is_a_line_without_a_conversation(tmp_path):
    """`{"$oid": ...}` alone on a line is a value, not a document: one bad line, the rest read."""
    export = tmp_path / "messages.jsonl"
    export.write_text("\n".join([LINES[0], '{"$oid": "66a1b2c3d4e5f6a7b8c9d0e1"}', LINES[2]]) + "\n")
    bad: list = []
    records = [
        json.loads(t)
        for _, rb in grouped_batches(lambda: export.open("rb"), "conversationId", bad, 1 << 20, False)
        for t in rb.column(RECORD_COLUMN).to_pylist()
    ]
    assert [(b.where, b.kind) for b in bad] == [("line 2", "no key")]
    assert [[d["messageId"] for d in r["lines"]] for r in records] == [["c1-u1", "c1-a1"]]


def test_a_batch_freed_unwalked_does_not_lend_its_records_to_the_next_batch():
    """The records kept beside a batch are found by that batch object, not by where its text
    lies: a batch the reader made and freed unwalked (a strict check raising, a check walking
    a slice) leaves its memory to the next batch built on the thread, whose rows are others.
    Matched by address, `parsed_records` gave such a batch the freed one's records (181 of 300
    tries here, Arrow on the system allocator)."""
    stale = 0
    for i in range(300):
        texts = [json.dumps({"conversationId": f"gone-{i:04d}-{j}", "text": "x" * 5000}) for j in range(3)]
        rb = parsed_batch(texts, [json.loads(t) for t in texts])
        del rb  # the same row count and text size: its buffers are where the freed one's were
        other = pa.record_batch({RECORD_COLUMN: pa.array([t.replace("gone", "here") for t in texts])})
        stale += parsed_records(other) is not None
    assert stale == 0
    texts = [json.dumps({"conversationId": "kept"})]
    rb = parsed_batch(texts, [{"conversationId": "kept"}])
    assert parsed_records(rb.slice(0, 1)) is None  # another batch object: parsed again
    assert parsed_records(rb) == [{"conversationId": "kept"}]  # the very batch: its records, once
    assert parsed_records(rb) is None


def deep(mid: str, conv: str, parent: str, levels: int) -> str:
    """A message line with a field nested `levels` deep below the document (its own level)."""
    return doc(mid, conv, parent, "ben", False, "2024-05-02T09:02:00.000Z", "deep")[:-1] + (
        ', "x": ' + "[" * levels + "]" * levels + "}"
    )


def test_a_line_nested_995_deep_is_one_quarantined_line_and_the_rest_loads(tmp_path, dev_server):
    """Under orjson's 1,024 levels, so it parses; making its Extended JSON plain recursed once a
    level and stopped the unit with a RecursionError. It is one bad line now, nested deeper
    than 200 levels as the JSON documents' records are (tasks/extract/depth.py)."""
    export = tmp_path / "messages.jsonl"
    export.write_text("\n".join([*LINES, deep("c2-a3", "c2", "c2-a2", 995)]) + "\n")
    report = sync(tmp_path, dev_server.url, "librechat", export, load=LOAD)
    c = report["counts"]
    assert c["accounted"] and c["quarantined"] == 3, c  # the line that is not JSON, conversation c3, the deep line
    assert held(dev_server.url) == WANT
    reasons = CliRunner().invoke(app, ["quarantine", "list", "-c", str(tmp_path / "memos-etl.yaml")])
    assert "nested deeper than 200 levels" in reasons.output, reasons.output


@pytest.mark.parametrize("levels", [199, 200, 995])
def test_a_sorted_export_with_a_line_too_deep_is_read_a_conversation_at_a_time(tmp_path, levels):
    """In a sorted export the second pass checks it met the first pass's conversations, and the
    first pass reads only keys: a conversation whose only line is too deep (c5) is still one it
    met, not a file changed between the passes. 199 levels below the document are 200 in all."""
    good = sorted(
        (line for line in LINES if line.startswith('{"')), key=lambda line: json.loads(line)["conversationId"]
    )
    at = max(i for i, line in enumerate(good) if '"c2"' in line) + 1  # the deep c2 line among c2's
    lines = [*good[:at], deep("c2-a3", "c2", "c2-a2", levels), *good[at:], deep("c5-a1", "c5", ROOT, levels)]
    export = tmp_path / "sorted.jsonl"
    export.write_text("\n".join(lines) + "\n")
    bad: list = []
    got = {}
    for _, rb in grouped_batches(lambda: export.open("rb"), "conversationId", bad, 1 << 20, False, version="v1"):
        for t in rb.column(RECORD_COLUMN).to_pylist():
            r = json.loads(t)
            got[r["conversationId"]] = [d["messageId"] for d in r["lines"]]
    if levels < 200:
        assert not bad and got["c2"][-1] == "c2-a3" and got["c5"] == ["c5-a1"]
    else:
        assert [(b.where, str(b.reason)) for b in bad] == [
            (f"line {at + 1}", "nested deeper than 200 levels: not read"),
            (f"line {len(lines)}", "nested deeper than 200 levels: not read"),
        ]
        assert "c2-a3" not in got["c2"] and "c5" not in got and set(got) == {"c1", "c2", "c3"}


def test_an_integer_past_64_bits_keeps_its_value(tmp_path):
    """orjson reads 18446744073709551616 (2**64) and -9223372036854775809 as floats without a
    word; a line that may hold such an integer is read by Python's json, which keeps it, in a
    block read in one orjson loop and in one read line by line (its not-JSON line) alike."""
    wide = doc("c7-u1", "c7", ROOT, "dee", True, "2024-05-07T10:00:00.000Z", "wide")[:-1] + (
        ', "tokenCount": 18446744073709551616, "n": [-9223372036854775809, 12345678901234567890123]}'
    )
    export = tmp_path / "messages.jsonl"
    for lines in (LINES, [line for line in LINES if line.startswith('{"')]):
        export.write_text("\n".join([*lines, wide]) + "\n")
        seen = {}
        for _, rb in grouped_batches(lambda: export.open("rb"), "conversationId", [], 1 << 20, False):
            records = parsed_records(rb)
            assert records is not None and [json.loads(t) for t in rb.column(RECORD_COLUMN).to_pylist()] == records
            seen.update({r["conversationId"]: r["lines"][0] for r in records})
        got = seen["c7"]
        assert type(got["tokenCount"]) is int and got["tokenCount"] == 2**64
        assert got["n"] == [-(2**63) - 1, 12345678901234567890123] and all(type(v) is int for v in got["n"])
