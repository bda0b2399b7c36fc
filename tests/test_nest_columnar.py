"""Nested sources at full speed: the columnar explode gives the walk's rows (same columns and
values, so the same mapped messages, keys and hashes) on every preset sample and on generated
shapes; records are streamed in blocks and items; a bad line or record is still quarantined
with its number while the rest loads; the per-row user speaker of dialogue tables."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from core.config import PRESETS, load_mapping, preset_mapping, preset_names
from core.errors import NotJson
from flows.runner import run
from tasks.extract import ROW_COLUMN, Slice, open_source
from tasks.extract.lines import record_batches
from tasks.extract.records import json_items
from tasks.map import map_batch
from tasks.nest import explode_columnar, explode_walk
from tasks.quarantine import read_quarantine
from tasks.stage import with_columns
from tests.helpers import sample_settings, stored_messages

SAMPLES = PRESETS / "samples"


def batches(mapping):
    src = open_source(mapping)
    for unit in src.units(Slice()):
        for offset, rb in src.iter_batches(unit):
            yield unit, offset, rb


def mapped(table: pa.Table, mapping, rel: str) -> pa.Table:
    table = with_columns(table, mapping)
    return map_batch(
        table.combine_chunks().to_batches()[0]
        if table.num_rows
        else pa.RecordBatch.from_pylist([], schema=table.schema),
        mapping,
        rel,
        0,
    )


def assert_same(mapping) -> list[str]:
    """Explode every batch both ways where the columnar path takes it; returns the paths taken."""
    taken = []
    for unit, offset, rb in batches(mapping):
        walk = explode_walk(rb, mapping.nest, offset, ROW_COLUMN)
        col = explode_columnar(rb, mapping.nest, offset, ROW_COLUMN)
        taken.append("walk" if col is None else "columnar")
        if col is None:
            continue
        assert col.bad == walk.bad == [] and col.skipped == walk.skipped
        a, b = col.table, walk.table
        if "__record__" in rb.schema.names:  # JSON text: the very same columns and values
            assert set(a.column_names) <= set(b.column_names)
            for name in b.column_names:
                if name in a.column_names:
                    assert a.column(name).to_pylist() == b.column(name).to_pylist(), name
                else:  # an object null in a record: the walk has an all-null column for it
                    assert b.column(name).null_count == b.num_rows, name
        ma, mb = mapped(a, mapping, unit.rel), mapped(b, mapping, unit.rel)
        assert ma.num_rows == mb.num_rows > 0
        assert ma.equals(mb), (ma.slice(0, 3).to_pylist(), mb.slice(0, 3).to_pylist())
    return taken


def sample_of(preset: str) -> Path:
    stem = {"dialogue-sessions-one-speaker": "dialogue-sessions"}.get(preset, preset.removesuffix("-each"))
    return next(p for p in sorted(SAMPLES.iterdir()) if p.stem == stem)


NESTED = [
    n for n in preset_names() if "\nnest:" in (PRESETS / f"{n}.yaml").read_text()
]  # the flat ones have no explode


@pytest.mark.parametrize("preset", NESTED)
def test_every_preset_sample_gives_the_same_rows_both_ways(preset):
    taken = assert_same(preset_mapping(preset, sample_of(preset), sample_settings(preset)))
    assert taken
    if preset == "sharegpt":
        assert taken == ["columnar"]


def test_openai_sample_without_parts_takes_the_columnar_path(tmp_path):
    """The bundled OpenAI sample mixes string content and lists of parts: walked. Its
    string-only conversations take the columnar path, with the same rows."""
    lines = [json.loads(x) for x in (SAMPLES / "openai-chat.jsonl").read_text().splitlines() if x.strip()]
    plain = [r for r in lines if all(isinstance(m["content"], str) for m in r["messages"])]
    assert plain and len(plain) < len(lines)
    f = tmp_path / "plain.jsonl"
    f.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in plain) + "\n")
    assert assert_same(preset_mapping("openai-chat", f)) == ["columnar"]


def generated_records(n: int) -> list[dict]:
    out = []
    for i in range(n):
        msgs = [
            {"role": "user" if t % 2 == 0 else "assistant", "content": f'message {i}.{t} é ✓ "q"'} for t in range(i % 7)
        ]
        if i % 3 == 0 and msgs:
            msgs[0]["ts"] = f"2024-03-{1 + i % 28:02d}T08:00:{i % 60:02d}Z"  # ISO text stays text
        if i % 5 == 0 and msgs:
            msgs[-1]["content"] = "   "  # empty after trimming: skipped with skip_empty
        if i % 11 == 0 and msgs:
            msgs[0]["meta"] = {"lang": "en", "score": 0.5}
        rec = {"id": f"c{i}", "user": f"u{i % 4}", "n": i, "flag": i % 2 == 0, "meta": {"src": "gen", "v": 2}}
        if i % 4 == 1:
            del rec["flag"]  # a key some records lack
        if i % 13 == 0:
            rec["note"] = None
        rec["messages"] = msgs
        out.append(rec)
    return out


@pytest.mark.parametrize("skip_empty", [False, True])
def test_generated_shapes_give_the_same_rows_both_ways(tmp_path, skip_empty):
    f = tmp_path / "gen.jsonl"
    f.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in generated_records(3000)) + "\n\n  \n")
    m = preset_mapping(
        "openai-chat",
        f,
        {"nest": {"skip_empty": skip_empty}, "fields": {"chat_time": ["msg.ts"]}, "source": {"batch_rows": 700}},
    )
    taken = assert_same(m)
    assert taken and set(taken) == {"columnar"}


def test_a_list_struct_column_of_a_parquet_table_explodes_columnar(tmp_path):
    rows = [
        {
            "conversation_id": f"c{i}",
            "user_id": f"u{i % 3}",
            "started_at": "2024-03-01T08:00:00Z",
            "messages": [
                {"role": "user", "content": f"hi {i}", "ts": None},
                {"role": "assistant", "content": f"hello {i}", "ts": "2024-03-01T08:01:00Z"},
            ],
        }
        for i in range(50)
    ]
    f = tmp_path / "conversations.parquet"
    pq.write_table(pa.Table.from_pylist(rows), f)
    m = preset_mapping("table-json-column", f)
    assert assert_same(m) == ["columnar"]


def test_jsonl_blocks_are_whole_lines_whatever_the_block_size():
    lines = [json.dumps({"i": i, "pad": "x" * (i * 37 % 300)}) for i in range(500)]
    lines[100] = json.dumps({"i": 100, "pad": "y" * 5000})  # longer than a block
    data = ("\n".join(lines[:200]) + "\n\n \n" + "\n".join(lines[200:])).encode()  # no final newline
    bad: list = []
    batches = list(record_batches(io.BytesIO(data), bad, 1 << 20, False, block_bytes=1024))
    got = [t for _, rb in batches for t in rb.column(0).to_pylist()]
    assert got == lines and not bad
    assert [off for off, _ in batches] == [sum(b.num_rows for _, b in batches[:i]) for i in range(len(batches))]


def test_json_arrays_are_read_item_by_item():
    doc = json.dumps([{"id": i, "x": [1, 2.5, None, "é"]} for i in range(5000)]).encode()
    got = [json.loads(t) for _, rb in json_items(io.BytesIO(doc), items=300) for t in rb.column(0).to_pylist()]
    assert got == json.loads(doc)
    one = [rb.column(0).to_pylist() for _, rb in json_items(io.BytesIO(b' \n{"id": 1, "big": 1234567890123456789}'))]
    assert [json.loads(t) for t in one[0]] == [{"id": 1, "big": 1234567890123456789}]
    # beyond 64 bits: read as written (its text is the document's), never a wrong value
    (big,) = [
        t for _, rb in json_items(io.BytesIO(b'[{"id": 123456789012345678901234}]')) for t in rb.column(0).to_pylist()
    ]
    assert json.loads(big) == {"id": 123456789012345678901234}
    with pytest.raises(NotJson):
        list(json_items(io.BytesIO(doc[: len(doc) // 2])))


def test_bad_lines_and_records_are_quarantined_with_their_numbers(tmp_path, dev_server, run_config):
    """A line that is not JSON and a record whose messages are not a list, inside blocks that
    otherwise take the columnar path: those two records are quarantined with their record
    numbers, every other message is delivered, and read = delivered + quarantined."""
    recs = [
        json.dumps(
            {
                "id": f"c{i}",
                "user": "ann",
                "messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}],
            }
        )
        for i in range(400)
    ]
    recs[123] = '{"id": "c123", "user": "ann", "messages": [{"role": "user", "content": "cut off'
    recs[321] = json.dumps({"id": "c321", "user": "ann", "messages": {"role": "user", "content": "not a list"}})
    f = tmp_path / "chats.jsonl"
    f.write_text("\n".join(recs) + "\n")
    report = run(preset_mapping("openai-chat", f), run_config)
    c = report.counts
    assert (c.delivered, c.quarantined) == (796, 2), report.to_dict()
    q = read_quarantine(run_config.state.work_dir)
    assert sorted(q["source_row"].to_pylist()) == [123, 321]
    reasons = dict(zip(q["source_row"].to_pylist(), q["reasons"].to_pylist()))
    assert "not JSON" in reasons[123][0] and "not a list" in reasons[321][0]
    stored = stored_messages(dev_server.url)
    assert len(stored) == 398 and ("ann", "c123") not in stored


def test_per_row_user_speaker(tmp_path, dev_server, run_config):
    """Ann is the user of her dialogue with Bo and the other speaker of Cy's dialogue with her."""
    f = tmp_path / "dialogues.csv"
    f.write_text(
        "dialogue,user_speaker,speaker,turn,text\n"
        "d1,Ann,Ann,1,hi Bo\n"
        "d1,Ann,Bo,2,hi Ann\n"
        "d2,Cy,Cy,1,hello Ann\n"
        "d2,Cy,Ann,2,hello Cy\n"
    )
    spec = {
        "source": {"name": "dlg", "type": "files", "format": "csv", "path": str(f)},
        "fields": {"user_id": "user_speaker", "conversation_id": "dialogue", "content": "text", "seq": "turn"},
        "roles": {"speaker_column": "speaker", "user_speaker_column": "user_speaker"},
    }
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(spec))
    m = load_mapping(tmp_path / "m.yaml")
    report = run(m, run_config)
    assert report.counts.delivered == 4
    got = {k: [(r, c) for r, c, _ in v] for k, v in stored_messages(dev_server.url).items()}
    assert got == {
        ("Ann", "d1"): [("user", "hi Bo"), ("assistant", "hi Ann")],
        ("Cy", "d2"): [("user", "hello Ann"), ("assistant", "hello Cy")],
    }


def test_quarantine_names_the_position_column_as_nest_does():
    import tasks.nest
    import tasks.quarantine

    assert tasks.quarantine.POSITION == tasks.nest.POSITION


def test_json_arrays_read_across_reads_and_their_ugly_ends():
    """Items longer than one read, and every way an array can end badly: the items before
    are kept, the break is one row with its reason, nothing raises."""
    big = [{"id": i, "pad": "é" * (300_000 + i)} for i in range(8)]  # ~5 MB: items cross reads
    doc = json.dumps(big).encode()
    bad: list = []
    got = [json.loads(t) for _, rb in json_items(io.BytesIO(doc), bad) for t in rb.column(0).to_pylist()]
    assert got == big and not bad

    def read(data: bytes, **kw) -> tuple[list, list]:
        bad: list = []
        texts = [t for _, rb in json_items(io.BytesIO(data), bad, **kw) for t in rb.column(0).to_pylist()]
        return [json.loads(t) for t in texts], [str(b.reason) for b in bad]

    assert read(b"[]") == ([], []) and read(b"  \n ") == ([], []) and read(b"[ 1 , 2 ]") == ([1, 2], [])
    items, why = read(b'[{"a": 1}, {"a": 2}, {"a": ')  # truncated
    assert items == [{"a": 1}, {"a": 2}] and len(why) == 1 and "stops being JSON" in why[0]
    items, why = read(b'[{"a": 1} {"a": 2}]')  # a comma missing
    assert items == [{"a": 1}] and "expected , or ]" in why[0]
    items, why = read(b'[{"a": 1}, {"a": "\xff"}]')  # not UTF-8
    assert items == [{"a": 1}] and "not UTF-8" in why[0]
    items, why = read(json.dumps([{"a": 1}, {"a": "x" * 5000}, {"a": 3}]).encode(), max_record_bytes=1000)
    assert items == [{"a": 1}, {"a": 3}] and "more than source.max_record_bytes" in why[0]
    items, why = read(b'[{"a": 1}, {"a": "' + b"x" * 3_000_000, max_record_bytes=1_000_000)  # never ends
    assert items == [{"a": 1}] and len(why) == 1


def test_a_record_deeper_than_python_recurses_is_one_bad_record_of_the_walk(tmp_path):
    """The readers stop JSON past 200 levels, but a nested record can come from elsewhere (a
    table's JSON column, a Redis value): one whose message content is 700 levels deep cost the
    run a RecursionError in the walk's text of parts. Now it is one bad record with its reason,
    and the records around it are walked."""
    import json as _json

    import yaml as _yaml

    from core.config import load_mapping
    from tasks.extract.records import RECORD_COLUMN
    from tasks.nest.walk import explode_walk

    m = tmp_path / "oa.yaml"
    m.write_text(_yaml.safe_dump({"preset": "openai-chat", "source": {"path": str(tmp_path)}}))
    nest = load_mapping(m).nest
    deep = "[" * 700 + '"deep"' + "]" * 700

    def rec(rid: str, content: str) -> str:
        head = _json.dumps({"id": rid, "user": "u"})[:-1]
        return head + ', "messages": [{"role": "user", "content": ' + content + "}]}"

    texts = [rec("a", _json.dumps("hi")), rec("deep", deep), rec("b", _json.dumps("bye"))]
    out = explode_walk(pa.RecordBatch.from_pydict({RECORD_COLUMN: texts}), nest, 0, "__row__")
    assert [(w, why) for w, why, _ in out.bad] == [(1, "nest: nested deeper than Python can walk")]
    assert out.table.num_rows == 2
