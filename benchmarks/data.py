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
WORDS = np.array(
    "the a train book run coffee weekday morning plan trip meet call note idea week lunch "
    "music garden city rain sunny project budget family dinner walk read write".split()
)


def generate(out: Path, messages: int, files: int = 10, users: int = 5000, seed: int = 7, turns: int = TURNS) -> Path:
    """`messages` rows over `files` Parquet files under out/data, in conversations of `turns`
    messages; returns the mapping file."""
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
        conv = i // turns
        turn = i % turns + 1
        conv_s = pa.array(conv).cast(pa.string())
        table = pa.table(
            {
                "message_id": pc.binary_join_element_wise("m", pa.array(i).cast(pa.string()), ""),
                "user": pc.binary_join_element_wise("u", pa.array(conv % users).cast(pa.string()), ""),
                "conversation_id": pc.binary_join_element_wise("c", conv_s, ""),
                "session": pa.array(np.ones(len(i), dtype=np.int64)),
                "turn": pa.array(turn),
                "speaker": pa.array(np.where(turn % 2 == 1, "user", "assistant")),
                "text": pa.array(phrases[i % len(phrases)]),
                "sent_at": pa.array(
                    np.datetime64("2024-01-01T00:00:00", "s") + (conv * 3600 + turn * 30).astype("timedelta64[s]")
                ).cast(pa.timestamp("us", tz="UTC")),
                "image_caption": pa.nulls(len(i), pa.string()),
            }
        )
        pq.write_table(table, data / f"part-{f:03d}.parquet", row_group_size=65_536)
    mapping = {
        "source": {"name": "bench", "type": "files", "format": "parquet", "path": str(data)},
        "fields": {
            "user_id": "user",
            "conversation_id": "conversation_id",
            "role": "speaker",
            "content": "text",
            "chat_time": "sent_at",
            "seq": "turn",
            "source_key": "message_id",
            "info": '{{"session": {session}}}',
        },
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
        text = pc.if_else(hit, pc.binary_join_element_wise(table.column("text"), " (edited)", ""), table.column("text"))
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
        msg = pc.binary_join_element_wise(
            '{"role": "', pa.array(role), '", "content": ', _json_text(pa.array(phrases[i % len(phrases)])), "}", ""
        )
        msg = msg.combine_chunks() if isinstance(msg, pa.ChunkedArray) else msg
        per_conv = pa.ListArray.from_arrays(pa.array(np.arange(0, len(i) + 1, TURNS, dtype=np.int32)), msg)
        conv = np.arange(lo, hi, dtype=np.int64)
        line = pc.binary_join_element_wise(
            '{"id": "c',
            pa.array(conv).cast(pa.string()),
            '", "user": "u',
            pa.array(conv % users).cast(pa.string()),
            '", "messages": [',
            pc.binary_join(per_conv, ", "),
            "]}",
            "",
        )
        with open(data / f"part-{f:03d}.jsonl", "w", encoding="utf-8") as fh:
            for chunk in range(0, len(line), 10_000):
                fh.write("\n".join(line.slice(chunk, 10_000).to_pylist()))
                fh.write("\n")
    path = out / "mapping.yaml"
    path.write_text(
        yaml.safe_dump(
            {"preset": "openai-chat", "source": {"name": "bench-openai", "path": str(data)}}, sort_keys=False
        )
    )
    return path


def generate_chatgpt_export(out: Path, min_bytes: int, turns: int = 24, seed: int = 7) -> Path:
    """A ChatGPT-export-shaped `conversations.json` of at least `min_bytes`: one JSON array
    of conversations, each a `mapping` tree (root, a hidden system node, `turns` messages
    with one regenerated-away branch) and its `current_node`; assistant answers ~1 KB, as
    real exports have. Written as a stream; returns the mapping file (`chatgpt-export`)."""
    import json

    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    short = [" ".join(rng.choice(WORDS, 30)) for _ in range(101)]
    long = [" ".join(rng.choice(WORDS, 160)) for _ in range(103)]

    def node(nid, parent, children, role, text, t):
        msg = (
            None
            if role is None
            else {
                "id": nid,
                "author": {"role": role, "name": None, "metadata": {}},
                "create_time": t,
                "content": {"content_type": "text", "parts": [text]},
                "status": "finished_successfully",
                "metadata": {"is_visually_hidden_from_conversation": role == "system"},
            }
        )
        return {"id": nid, "message": msg, "parent": parent, "children": children}

    path = out / "conversations.json"
    written, c = 0, 0
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("[")
        while written < min_bytes:
            t0 = 1_700_000_000.0 + c * 3600
            ids = [f"c{c}-n{i}" for i in range(turns)]
            mapping = {
                "root": node("root", None, [f"c{c}-sys"], None, None, None),
                f"c{c}-sys": node(f"c{c}-sys", "root", [ids[0]], "system", "", None),
            }
            for i, nid in enumerate(ids):
                parent = f"c{c}-sys" if i == 0 else ids[i - 1]
                kids = [ids[i + 1]] if i + 1 < turns else []
                if i == 1:
                    kids = [f"c{c}-alt"] + kids
                role = "user" if i % 2 == 0 else "assistant"
                text = short[(c + i) % len(short)] if role == "user" else long[(c * 7 + i) % len(long)]
                mapping[nid] = node(nid, parent, kids, role, text, t0 + i * 30)
            mapping[f"c{c}-alt"] = node(f"c{c}-alt", ids[1], [], "assistant", "(regenerated away)", t0 + 31)
            conv = {
                "title": f"conversation {c}",
                "create_time": t0,
                "update_time": t0 + turns * 30,
                "mapping": mapping,
                "current_node": ids[-1],
                "id": f"conv-{c}",
                "conversation_id": f"conv-{c}",
            }
            text = ("," if c else "") + json.dumps(conv)
            fh.write(text)
            written += len(text)
            c += 1
        fh.write("]")
    mapping_path = out / "mapping.yaml"
    mapping_path.write_text(
        yaml.safe_dump(
            {"preset": "chatgpt-export", "source": {"name": "bench-chatgpt", "path": str(path)}}, sort_keys=False
        )
    )
    return mapping_path


def generate_personal(out: Path, messages: int, entity_share: float = 0.02, seed: int = 11) -> tuple[Path, Path]:
    """The `generate` dataset with personal data in `entity_share` of the messages (e-mails,
    phone numbers, cards, IBANs, IP addresses, each value different) and everyday digits in
    others (8%: times like 10:30 and years, which a phone number pre-filter must pass on to
    Presidio; 2%: short numbers it need not). Returns (mapping without redaction, with it)."""
    plain = generate(out, messages, seed=seed)
    rng = np.random.default_rng(seed)
    ibans = ["DE89 3704 0044 0532 0130 00", "GB82 WEST 1234 5698 7654 32", "FR14 2004 1010 0505 0001 3M02 606"]
    cards = ["4111 1111 1111 1111", "5500-0000-0000-0004", "3400 000000 00009", "6011 0000 0000 0004"]
    for path in sorted((out / "data").glob("*.parquet")):
        table = pq.read_table(path)
        text = np.array(table.column("text").to_pylist(), dtype=object)
        n = len(text)
        draw = rng.random(n)
        ids = table.column("message_id").to_pylist()
        for i in np.flatnonzero(draw < entity_share):
            k = int(rng.integers(5))
            mid = ids[i][1:]
            value = (
                f"user{mid}@example.com",
                f"+1 415-555-{int(mid) % 10000:04d}",
                cards[int(mid) % len(cards)],
                ibans[int(mid) % len(ibans)],
                f"10.{int(mid) % 250}.{int(mid) // 250 % 250}.7",
            )[k]
            text[i] = f"{text[i]} {value}"
        for i in np.flatnonzero((draw >= entity_share) & (draw < entity_share + 0.04)):
            text[i] = f"{text[i]} at {int(rng.integers(24)):02d}:{int(rng.integers(60)):02d}"
        for i in np.flatnonzero((draw >= entity_share + 0.04) & (draw < entity_share + 0.08)):
            text[i] = f"{text[i]} in {int(rng.integers(1990, 2030))}"
        for i in np.flatnonzero((draw >= entity_share + 0.08) & (draw < entity_share + 0.10)):
            text[i] = f"{text[i]} room {int(rng.integers(100))}"
        table = table.set_column(table.schema.get_field_index("text"), "text", pa.array(text.tolist(), pa.string()))
        pq.write_table(table, path, row_group_size=65_536)
    body = yaml.safe_load(plain.read_text())
    body["redact"] = {}  # the default entities, replace
    redacted = out / "mapping-redact.yaml"
    redacted.write_text(yaml.safe_dump(body, sort_keys=False))
    return plain, redacted
