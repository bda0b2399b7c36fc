"""Mapping: config -> canonical rows, and clear errors for bad configs."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest
import yaml

from core.config import load_mapping
from core.errors import ConfigError
from tasks.chat_time import parse_times
from tasks.extract import Slice, open_source
from tasks.map import map_batch


def write_mapping(tmp_path, body: dict, name="m.yaml"):
    p = tmp_path / name
    p.write_text(yaml.safe_dump(body))
    return p


BASE = {
    "source": {"name": "t", "format": "jsonl", "path": "data.jsonl"},
    "fields": {
        "user_id": "user",
        "conversation_id": "conv",
        "role": "role",
        "content": "text",
        "chat_time": "ts",
        "seq": "n",
        "source_key": "id",
    },
}


def rows_to_batch(rows):
    return pa.RecordBatch.from_pylist(rows)


def test_roles_are_normalised_and_unknown_roles_stay_visible(tmp_path):
    m = load_mapping(write_mapping(tmp_path, BASE))
    rb = rows_to_batch(
        [
            {"user": "u", "conv": "c", "role": r, "text": "x", "ts": "2024-01-01T00:00:00Z", "n": i, "id": str(i)}
            for i, r in enumerate(["Human", "USER", " ai ", "Bot", "Assistant", "system", "narrator"])
        ]
    )
    t = map_batch(rb, m, "data.jsonl", 0)
    assert t.column("role").to_pylist() == ["user", "user", "assistant", "assistant", "assistant", "system", "narrator"]


def test_role_map_in_config_overrides_defaults(tmp_path):
    m = load_mapping(write_mapping(tmp_path, {**BASE, "roles": {"map": {"narrator": "system", "bot": "tool"}}}))
    rb = rows_to_batch(
        [{"user": "u", "conv": "c", "role": r, "text": "x", "ts": None, "n": 1, "id": "1"} for r in ("narrator", "bot")]
    )
    assert map_batch(rb, m, "f", 0).column("role").to_pylist() == ["system", "tool"]


def test_speaker_rules_give_roles_to_a_two_person_dialogue(tmp_path):
    body = {
        **BASE,
        "fields": {**BASE["fields"], "role": None, "user_id": "{dataset}_{speaker}"},
        "constants": {"dataset": "locomo"},
        "roles": {"speaker_column": "speaker", "user_speakers": ["Caroline"]},
    }
    m = load_mapping(write_mapping(tmp_path, body))
    rb = rows_to_batch(
        [
            {"speaker": s, "conv": "c", "text": "hi", "ts": None, "n": i, "id": str(i)}
            for i, s in enumerate(["Caroline", "Melanie"])
        ]
    )
    t = map_batch(rb, m, "f", 0)
    assert t.column("role").to_pylist() == ["user", "assistant"]
    assert t.column("user_id").to_pylist() == ["locomo_Caroline", "locomo_Melanie"]


def test_content_append_adds_caption_only_when_present(tmp_path):
    body = {**BASE, "content_append": [{"column": "cap", "template": " [image: {}]"}]}
    m = load_mapping(write_mapping(tmp_path, body))
    rb = rows_to_batch(
        [
            {"user": "u", "conv": "c", "role": "user", "text": "look", "cap": "a cat", "ts": None, "n": 1, "id": "1"},
            {"user": "u", "conv": "c", "role": "user", "text": "plain", "cap": None, "ts": None, "n": 2, "id": "2"},
            {
                "user": "u",
                "conv": "c",
                "role": "user",
                "text": None,
                "cap": "only image",
                "ts": None,
                "n": 3,
                "id": "3",
            },
        ]
    )
    assert map_batch(rb, m, "f", 0).column("content").to_pylist() == [
        "look [image: a cat]",
        "plain",
        " [image: only image]",
    ]


def test_times_with_offsets_naive_times_and_bad_values():
    t = parse_times(
        pa.array(
            [
                "2023-05-18T13:47:00+02:00",
                "2023-05-18 13:47",
                "2023-05-18T13:47:00.5Z",
                "yesterday",
                "2024-02-30 10:00:00",
                "1:47 pm on 18 May, 2023",
                None,
            ]
        ),
        ["iso", "%I:%M %p on %d %B, %Y"],
        "Europe/Berlin",
    )
    as_text = [None if v is None else v.isoformat() for v in t.to_pylist()]
    assert as_text == [
        "2023-05-18T11:47:00+00:00",
        "2023-05-18T11:47:00+00:00",
        "2023-05-18T13:47:00.500000+00:00",
        None,
        None,
        "2023-05-18T11:47:00+00:00",
        None,
    ]


def test_epoch_times_and_dst_gap():
    t = parse_times(pa.array([1684417620, 1684417620123]), ["epoch_s"], "UTC").to_pylist()
    assert t[0].isoformat() == "2023-05-18T13:47:00+00:00" and t[1] is None  # ms read as s: not year 55k
    gap = parse_times(pa.array(["2023-03-26 02:30:00"]), ["iso"], "Europe/Berlin").to_pylist()[0]
    assert gap.isoformat() == "2023-03-26T01:00:00+00:00"  # wall time in the DST gap -> end of the gap


def test_source_key_is_stable_and_prefixed_with_source(tmp_path):
    m = load_mapping(write_mapping(tmp_path, BASE))
    rb = rows_to_batch([{"user": "u", "conv": "c", "role": "user", "text": "x", "ts": None, "n": 1, "id": 7}])
    a = map_batch(rb, m, "f", 0)
    b = map_batch(rb, m, "g", 100)
    assert a.column("source_key").to_pylist() == ["t:7"]
    assert a.column("key_lo").to_pylist() == b.column("key_lo").to_pylist()
    assert b.column("source_row").to_pylist() == [100]


def test_without_a_key_column_identity_is_the_message_itself(tmp_path):
    body = {**BASE, "fields": {k: v for k, v in BASE["fields"].items() if k != "source_key"}}
    m = load_mapping(write_mapping(tmp_path, body))
    row = {"user": "u", "conv": "c", "role": "user", "text": "x", "ts": "2024-01-01T00:00:00Z", "n": 1}
    t = map_batch(rows_to_batch([row, row, {**row, "n": 2}]), m, "f", 0)
    keys = t.column("source_key").to_pylist()
    assert keys[0] == keys[1] != keys[2]


def test_unknown_column_is_a_clear_error_naming_the_key(tmp_path):
    (tmp_path / "data.jsonl").write_text(
        json.dumps({"user": "u", "conv": "c", "role": "user", "txt": "x", "ts": "2024-01-01", "n": 1, "id": 1}) + "\n"
    )
    m = load_mapping(write_mapping(tmp_path, BASE))
    src = open_source(m)
    f = src.units(Slice())[0]
    with pytest.raises(ConfigError) as err:
        m.check_columns(src.schema(f).names, f.rel)
    assert "fields.content" in str(err.value) and "'text'" in str(err.value) and "txt" in str(err.value)


@pytest.mark.parametrize(
    "patch, key",
    [
        ({"source": {"name": "t", "format": "xml", "path": "x"}}, "source.format"),
        ({"fields": {"user_id": "u"}}, "fields.conversation_id"),
        ({"roles": {"map": {"x": "robot"}}}, "roles.map"),
        ({"time": {"timezone": "Mars/Olympus"}}, "time.timezone"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_bad_config_is_rejected_at_load_with_the_key(tmp_path, patch, key):
    with pytest.raises(ConfigError) as err:
        load_mapping(write_mapping(tmp_path, {**BASE, **patch}))
    assert key in str(err.value)


def test_csv_ids_stay_strings_and_parquet_directories_are_read(tmp_path):
    import pyarrow.parquet as pq

    (tmp_path / "d.csv").write_text("user,conv,role,text,ts,n,id\n007,c1,user,hi,2024-01-01T00:00:00Z,1,01\n")
    m = load_mapping(write_mapping(tmp_path, {**BASE, "source": {"name": "t", "format": "csv", "path": "d.csv"}}))
    src = open_source(m)
    f = src.units(Slice())[0]
    t = map_batch(next(src.iter_batches(f))[1], m, f.rel, 0)
    assert t.column("user_id").to_pylist() == ["007"] and t.column("source_key").to_pylist() == ["t:01"]
    (tmp_path / "lake" / "dt=2024-01-01").mkdir(parents=True)
    pq.write_table(
        pa.table(
            {"user": ["u"], "conv": ["c"], "role": ["user"], "text": ["x"], "ts": ["2024-01-01"], "n": [1], "id": ["a"]}
        ),
        tmp_path / "lake" / "dt=2024-01-01" / "p.parquet",
    )
    m2 = load_mapping(write_mapping(tmp_path, {**BASE, "source": {"name": "t", "format": "parquet", "path": "lake"}}))
    assert [f.rel for f in open_source(m2).units(Slice())] == ["dt=2024-01-01/p.parquet"]
