"""Generated chat datasets for the benchmarks: Parquet, vectorised, seconds per million rows.

Conversations of 20 turns alternating user/assistant, ~150 characters (~50 tokens) a
message, a message id, a session number and a timestamp: the shape of the bundled sample,
at any size.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

TURNS = 20
WORDS = np.array("the a train book run coffee weekday morning plan trip meet call note idea week lunch "
                 "music garden city rain sunny project budget family dinner walk read write".split())


def generate(out: Path, messages: int, files: int = 10, users: int = 5000, seed: int = 7) -> Path:
    """`messages` rows over `files` Parquet files under out/data; returns the mapping file."""
    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    per_file = -(-messages // files)
    phrases = np.array([" ".join(rng.choice(WORDS, 24)) for _ in range(997)])  # ~150 characters each
    for f in range(files):
        lo, hi = f * per_file, min(messages, (f + 1) * per_file)
        if lo >= hi:
            break
        i = np.arange(lo, hi, dtype=np.int64)
        conv = i // TURNS
        turn = i % TURNS + 1
        conv_s = pa.array(conv).cast(pa.string())
        table = pa.table({
            "message_id": pc.binary_join_element_wise("m", pa.array(i).cast(pa.string()), ""),
            "user": pc.binary_join_element_wise("u", pa.array(conv % users).cast(pa.string()), ""),
            "conversation_id": pc.binary_join_element_wise("c", conv_s, ""),
            "session": pa.array(np.ones(len(i), dtype=np.int64)),
            "turn": pa.array(turn),
            "speaker": pa.array(np.where(turn % 2 == 1, "user", "assistant")),
            "text": pa.array(phrases[i % len(phrases)]),
            "sent_at": pa.array(np.datetime64("2024-01-01T00:00:00", "s") + (conv * 3600 + turn * 30).astype(
                "timedelta64[s]")).cast(pa.timestamp("us", tz="UTC")),
            "image_caption": pa.nulls(len(i), pa.string()),
        })
        pq.write_table(table, data / f"part-{f:03d}.parquet", row_group_size=65_536)
    mapping = {
        "source": {"name": "bench", "type": "files", "format": "parquet", "path": str(data)},
        "fields": {"user_id": "user", "conversation_id": "conversation_id", "role": "speaker", "content": "text",
                   "chat_time": "sent_at", "seq": "turn", "source_key": "message_id",
                   "info": '{{"session": {session}}}'},
        "content_append": [{"column": "image_caption", "template": "\n[image: {}]"}],
    }
    path = out / "mapping.yaml"
    path.write_text(yaml.safe_dump(mapping, sort_keys=False))
    return path


def edit(mapping_path: Path, every: int = 100) -> int:
    """Change the text of every `every`-th message of a generated dataset in place (same message
    ids, new content), as a source edited after delivery; returns how many were changed."""
    data = Path(yaml.safe_load(mapping_path.read_text())["source"]["path"])
    changed = 0
    for f in sorted(data.glob("*.parquet")):
        table = pq.read_table(f)
        ids = pc.cast(pc.utf8_slice_codeunits(table.column("message_id"), 1), pa.int64()).to_numpy()
        hit = pa.array(ids % every == 0)
        text = pc.if_else(hit, pc.binary_join_element_wise(table.column("text"), " (edited)", ""),
                          table.column("text"))
        table = table.set_column(table.schema.get_field_index("text"), "text", text)
        pq.write_table(table, f, row_group_size=65_536)
        changed += int(pc.sum(hit).as_py() or 0)
    return changed


def _json_text(arr: pa.Array) -> pa.Array:
    """Strings as JSON string literals (the generated words need no escaping but quotes)."""
    return pc.binary_join_element_wise('"', arr, '"', "")


def generate_openai_chat(out: Path, messages: int, files: int = 2, users: int = 5000, seed: int = 7) -> Path:
    """The same messages as `generate`, as OpenAI-chat JSONL (one conversation of TURNS
    messages a line, the `openai-chat` preset's shape) in `files` files; returns the mapping."""
    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    phrases = np.array([" ".join(rng.choice(WORDS, 24)) for _ in range(997)])
    convs = -(-messages // TURNS)
    per_file = -(-convs // files)
    for f in range(files):
        lo, hi = f * per_file, min(convs, (f + 1) * per_file)
        if lo >= hi:
            break
        i = np.arange(lo * TURNS, hi * TURNS, dtype=np.int64)
        turn = i % TURNS + 1
        role = np.where(turn % 2 == 1, "user", "assistant")
        msg = pc.binary_join_element_wise('{"role": "', pa.array(role), '", "content": ',
                                          _json_text(pa.array(phrases[i % len(phrases)])), "}", "")
        msg = msg.combine_chunks() if isinstance(msg, pa.ChunkedArray) else msg
        per_conv = pa.ListArray.from_arrays(pa.array(np.arange(0, len(i) + 1, TURNS, dtype=np.int32)), msg)
        conv = np.arange(lo, hi, dtype=np.int64)
        line = pc.binary_join_element_wise(
            '{"id": "c', pa.array(conv).cast(pa.string()), '", "user": "u', pa.array(conv % users).cast(pa.string()),
            '", "messages": [', pc.binary_join(per_conv, ", "), "]}", "")
        with open(data / f"part-{f:03d}.jsonl", "w", encoding="utf-8") as fh:
            for chunk in range(0, len(line), 10_000):
                fh.write("\n".join(line.slice(chunk, 10_000).to_pylist()))
                fh.write("\n")
    path = out / "mapping.yaml"
    path.write_text(yaml.safe_dump({"preset": "openai-chat", "source": {"name": "bench-openai", "path": str(data)}},
                                   sort_keys=False))
    return path
