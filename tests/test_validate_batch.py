"""Validation reasons and request batching."""

from __future__ import annotations

import pyarrow as pa
import pytest

from core.budget import estimate_tokens
from core.config import LoadConfig, Mapping
from tasks.batch import cut_points, drop_duplicates, make_batches, sort_conversations
from tasks.map import map_batch
from tasks.validate import Validator, split

MAPPING = Mapping.model_validate(
    {
        "source": {"name": "t", "format": "jsonl", "path": "x"},
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
)


def table(rows):
    return map_batch(pa.RecordBatch.from_pylist(rows), MAPPING, "f.jsonl", 0)


def row(i, **kw):
    base = {
        "user": "u1",
        "conv": "c1",
        "role": "user",
        "text": f"message {i}",
        "ts": "2024-01-01T00:00:00Z",
        "n": i,
        "id": str(i),
    }
    return {**base, **kw}


@pytest.fixture(scope="module")
def validator():
    return Validator(MAPPING, LoadConfig(max_tokens_per_request=1000))


def test_each_bad_row_gets_every_reason_and_good_rows_pass(validator):
    t = table(
        [
            row(0),
            row(1, text=""),
            row(2, role="narrator", text="   "),
            row(3, conv=None),
            row(4, ts="not a time"),
            row(5, user="x" * 101),
            row(6, text="é" * 2000),
            row(7),
        ]
    )
    reasons = validator.reasons(t)
    assert set(reasons) == {1, 2, 3, 4, 5, 6}
    assert any("empty" in r for r in reasons[1])
    assert len(reasons[2]) == 2 and any("narrator" in r for r in reasons[2])
    assert reasons[3] == ["conversation_id is missing"]
    assert "time.formats" in reasons[4][0]
    assert "longer than 100" in reasons[5][0]
    assert "too large" in reasons[6][0]
    good, bad = split(t, reasons)
    assert good.column("source_key").to_pylist() == ["t:0", "t:7"] and bad.tolist() == [1, 2, 3, 4, 5, 6]


def test_batches_keep_conversation_order_and_respect_the_budget():
    rows = [row(i, conv=f"c{i % 3}", text="w" * (50 + 37 * i)) for i in range(60)][::-1]
    t = sort_conversations(table(rows))
    load = LoadConfig(max_messages_per_request=7, max_tokens_per_request=1000)
    batches = make_batches(t, load, "target", {"run_id": "r"}, ["tag"])
    seen = {}
    for b in batches:
        assert len(b.messages) <= 7 and b.n_tokens <= 1000
        assert len({(b.user_id, b.conversation_id)}) == 1
        seen.setdefault(b.conversation_id, []).extend(k for k in range(*b.rows))
    for conv, idx in seen.items():
        ns = t.column("seq").take(pa.array(idx)).to_pylist()
        assert ns == sorted(ns) and all(n % 3 == int(conv[1:]) for n in ns)
    assert sum(len(b.messages) for b in batches) == 60
    assert batches[0].info["first_key"] and batches[0].tags == ["tag"]
    assert batches[0].messages[0]["chat_time"] == "2024-01-01T00:00:00Z"


def test_batch_keys_are_deterministic_and_depend_on_target():
    t = sort_conversations(table([row(i) for i in range(5)]))
    load = LoadConfig()
    a = make_batches(t, load, "target-a", {}, [])
    b = make_batches(t, load, "target-a", {}, [])
    c = make_batches(t, load, "target-b", {}, [])
    assert [x.batch_key for x in a] == [x.batch_key for x in b] != [x.batch_key for x in c]


def test_one_message_that_fills_the_budget_gets_its_own_request():
    big = "x" * 2400  # ~800 tokens against a 1000 budget (200 of it per-request overhead)
    t = sort_conversations(table([row(0, text="a"), row(1, text=big), row(2, text="b")]))
    cuts = cut_points(t, LoadConfig(max_tokens_per_request=1000))
    assert cuts == [(0, 1), (1, 2), (2, 3)]


def test_duplicates_are_dropped_after_the_first():
    t = sort_conversations(table([row(1), row(2), row(1), row(3), row(2)]))
    kept, dups = drop_duplicates(t)
    assert kept.column("source_key").to_pylist() == ["t:1", "t:2", "t:3"] and dups.num_rows == 2


def test_token_estimate_is_conservative_for_ascii_and_cjk():
    est = estimate_tokens(pa.array(["hello world, four chars a token", "你好世界"]))
    assert est[0] >= 31 / 4 and est[1] >= 4


def test_committed_sample_suite_matches_the_mapping():
    """schemas/expectations/ holds the suite each bundled mapping validates with; regenerate it
    with `memos-etl expectations MAPPING --out FILE` when a mapping's checks change."""
    import json
    from pathlib import Path

    from core.config import load_mapping

    root = Path(__file__).resolve().parent.parent
    committed = json.loads((root / "schemas" / "expectations" / "sample-chats.json").read_text())
    built = Validator(load_mapping(root / "schemas" / "mappings" / "sample.yaml"), LoadConfig()).suite_json()
    assert json.loads(json.dumps(built, default=str)) == committed


TRICKY = [
    "plain",
    'quote " and \\ backslash',
    "new\nline\r\n\ttab",
    "bell\x07 nul\x00 esc\x1b[0m",
    "bs\x08 ff\x0c del\x7f",
    "é 中文 🎉",
    "\u2028 line separator",
    "",
    '"\\"\\n',
    "\x1f\x0b",
]


def test_column_wise_message_json_and_hashes_equal_the_per_message_definitions():
    """make_batches builds message JSON and hashes over whole columns; they must be byte for
    byte what json.dumps(sort_keys) and message_hash give, or batch keys and in-doubt checks
    of earlier runs would no longer match."""
    import json

    import numpy as np

    from tasks.batch import column_hashes, iso_seconds, message_hash, message_json

    roles = pa.array(["user", "assistant", None, "user", "tool", "user", "assistant", "user", "user", "user"])
    content = pa.array(TRICKY)
    times = pa.array([0, None, 1_700_000_000_123_456, -1, 0, 1, 2, 3, 4, 5], pa.timestamp("us", tz="UTC"))
    text = iso_seconds(times).to_pylist()
    want = []
    for r, c, t in zip(roles.to_pylist(), TRICKY, text):
        m = {"role": r, "content": c} if t is None else {"role": r, "content": c, "chat_time": t}
        want.append(json.dumps(m, ensure_ascii=False, sort_keys=True))
    assert message_json(roles, content, pa.array(text)).to_pylist() == want
    import pyarrow.compute as pc

    assert (
        text
        == pc.strftime(times.cast(pa.timestamp("s", tz="UTC"), safe=False), format="%Y-%m-%dT%H:%M:%SZ").to_pylist()
    )
    assert text[2] == "2023-11-14T22:13:20Z"
    ours = column_hashes(roles, content)
    assert ours.tolist() == [message_hash(r, c) for r, c in zip(roles.to_pylist(), TRICKY)]
    assert ours.dtype == np.int64


def test_cut_points_pack_greedily_within_each_conversation():
    """The bisecting packer cuts exactly where a row-by-row greedy packer would."""
    import random

    random.seed(7)
    rows = []
    for c in range(30):
        for i in range(random.randint(1, 40)):
            rows.append(row(len(rows), conv=f"c{c:02d}", n=i, text="x" * random.choice([1, 50, 300, 2000])))
    t = sort_conversations(table(rows))
    load = LoadConfig(max_tokens_per_request=1000, max_messages_per_request=7)
    tokens = estimate_tokens(t.column("content").combine_chunks(), load).tolist()
    conv = t.column("conversation_id").to_pylist()
    budget = load.max_tokens_per_request - 200
    want, start, used = [], 0, 0
    for i, tk in enumerate(tokens):
        if i > start and (conv[i] != conv[i - 1] or used + tk > budget or i - start >= 7):
            want.append((start, i))
            start, used = i, 0
        used += tk
    want.append((start, len(tokens)))
    assert cut_points(t, load) == want


def test_conversation_slices_cut_whole_conversations_into_the_requests_of_the_whole_table():
    """Sending a bucket a slice of conversations at a time (tasks/load/send.py send_all) sends
    the requests of cutting it whole: each slice is whole conversations, within its bounds
    but for a conversation longer than them."""
    import random

    from tasks.batch import conversation_slices

    random.seed(11)
    rows = []
    for c in range(40):
        for i in range(random.choice([1, 2, 4, 4, 9, 30])):
            rows.append(row(len(rows), user=f"u{c % 3}", conv=f"c{c:02d}", n=i, text="y" * random.choice([5, 400])))
    t = sort_conversations(table(rows))
    load = LoadConfig(max_tokens_per_request=1000, max_messages_per_request=7)
    whole = [(b.batch_key, b.messages_json) for b in make_batches(t, load, "tg", {}, [])]
    for max_rows, max_convs in ((1, 1), (10, 3), (16, 100), (10_000, 5), (10_000, 10_000)):
        slices = conversation_slices(t, max_rows, max_convs)
        assert slices[0][0] == 0 and slices[-1][1] == t.num_rows
        assert all(a[1] == b[0] for a, b in zip(slices, slices[1:]))
        got = []
        for start, stop in slices:
            part = t.slice(start, stop - start)
            pairs = set(zip(part.column("user_id").to_pylist(), part.column("conversation_id").to_pylist()))
            assert len(pairs) <= max_convs and (stop - start <= max_rows or len(pairs) == 1)
            got += [(b.batch_key, b.messages_json) for b in make_batches(part, load, "tg", {}, [])]
        assert got == whole
    assert conversation_slices(t.slice(0, 0), 10, 10) == []
