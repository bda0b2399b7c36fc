"""Chat-export presets beside flat Parquet of the same messages, side by side in one run: a
generated export (Telegram's result.json, Claude's conversations.json) dry-run through its
preset, and the messages it must give written as one Parquet table dry-run through a flat
mapping. What the export's reading and walking cost over the flat path, and its peak RSS at
two sizes (memory must follow the chat or conversation being read, not the file)."""

from __future__ import annotations

import json
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from benchmarks.pipeline_bench import planned_rate
from scripts.make_export_samples import TELEGRAM_SELF, claude_export, telegram_generated


def _write(base: Path, preset: str, n: int) -> tuple[Path, Path]:
    """(export mapping, flat mapping) for `n` messages of `preset`, written once."""
    d = base / f"export-{preset}-{n}"
    export_map, flat_map = d / "export.yaml", d / "flat.yaml"
    if (d / "done").exists():
        return export_map, flat_map
    d.mkdir(parents=True, exist_ok=True)
    if preset == "whatsapp-txt":
        expected = whatsapp_generated(d / "export", n)
        settings = {"constants": {"self": "Dee"}}
        times = [datetime.fromisoformat(r["chat_time"]).replace(tzinfo=UTC) for r in expected]
        keys = [str(i) for i in range(len(expected))]
        src = d / "export"
    elif preset == "telegram-export":
        doc, expected = telegram_generated(n)
        (d / "export").mkdir(exist_ok=True)
        (d / "export" / "result.json").write_text(json.dumps(doc, ensure_ascii=False))
        settings: dict = {"constants": {"self": TELEGRAM_SELF}}
        times = [datetime.fromtimestamp(r["chat_time"], UTC) for r in expected]
        keys = [r["key"] for r in expected]
        src = d / "export"
    elif preset == "librechat":
        expected = librechat_generated(d / "export" / "messages.jsonl", n)
        settings = {}
        times = [datetime.fromisoformat(r["chat_time"]) for r in expected]
        keys = [r["key"] for r in expected]
        src = d / "export" / "messages.jsonl"
    else:
        convs, users, expected = claude_export(conversations=max(1, n // 10))
        with zipfile.ZipFile(d / "export.zip", "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr("conversations.json", json.dumps(convs, ensure_ascii=False))
            z.writestr("users.json", json.dumps(users))
        settings = {}
        times = [datetime.fromisoformat(r["chat_time"].replace("Z", "+00:00")) for r in expected]
        keys = [str(i) for i in range(len(expected))]
        src = d / "export.zip"
    del_keys = ("chat_time", "key")
    cols = {k: [r[k] for r in expected] for k in expected[0] if k not in del_keys}
    table = pa.table({**cols, "chat_time": pa.array(times, pa.timestamp("s", tz="UTC")), "key": keys})
    (d / "flat").mkdir(exist_ok=True)
    pq.write_table(table, d / "flat" / "messages.parquet", row_group_size=131_072)
    export_map.write_text(
        yaml.safe_dump({"preset": preset, "source": {"name": f"{preset}-bench", "path": str(src)}, **settings})
    )
    flat = {
        "source": {"name": f"{preset}-flat", "format": "parquet", "path": str(d / "flat")},
        "fields": {
            "user_id": "user_id",
            "conversation_id": "conversation_id",
            "role": "role",
            "content": "content",
            "chat_time": "chat_time",
            "source_key": "key",
        },
    }
    flat_map.write_text(yaml.safe_dump(flat))
    (d / "done").write_text("")
    return export_map, flat_map


LIBRECHAT_TURNS = 10  # user and assistant messages a conversation on its shown path: 20


def librechat_generated(out: Path, n: int) -> list[dict]:
    """A mongoexport of LibreChat's messages sorted by conversation (as the docs' command writes
    it), conversations of 2 * LIBRECHAT_TURNS messages on the shown path, each with one
    regenerated answer (an older sibling of its second answer, off the path); the path's
    messages are returned, as the preset must give them (the newest leaf's path)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    expected: list[dict] = []
    t0 = datetime(2024, 5, 1, tzinfo=UTC).timestamp()
    root = "00000000-0000-0000-0000-000000000000"
    with out.open("w") as fh:
        for c in range(max(1, n // (2 * LIBRECHAT_TURNS))):
            conv, user, parent, at = f"conv-{c:07d}", f"user-{c % 500}", root, t0 + c * 3600
            for i in range(2 * LIBRECHAT_TURNS):
                mine = i % 2 == 0
                mid = f"{conv}-m{i}"
                text = f"{'question' if mine else 'answer'} {i} of {conv}: " + " ".join(_WORDS[(c + i) % 9 :][:8])
                if i == 3:  # the regenerated answer's first try: an older sibling, off the shown path
                    old = {
                        **_librechat_line(f"{mid}-old", conv, parent, user, mine, "first try", at),
                        "_id": {"$oid": f"{c:012x}{i:012x}"},
                    }
                    fh.write(json.dumps(old) + "\n")
                at += 30
                line = _librechat_line(mid, conv, parent, user, mine, text, at)
                fh.write(json.dumps(line) + "\n")
                stamp = datetime.fromtimestamp(at, UTC).isoformat()
                expected.append(
                    {
                        "user_id": user,
                        "conversation_id": conv,
                        "role": "user" if mine else "assistant",
                        "content": text,
                        "chat_time": stamp,
                        "key": mid,
                    }
                )
                parent = mid
    return expected


def _librechat_line(mid: str, conv: str, parent: str, user: str, mine: bool, text: str, at: float) -> dict:
    stamp = datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    return {
        "_id": {"$oid": mid.encode().hex()[:24].ljust(24, "0")},
        "messageId": mid,
        "conversationId": conv,
        "parentMessageId": parent,
        "user": user,
        "isCreatedByUser": mine,
        "sender": "User" if mine else "GPT-4o",
        "text": text,
        "createdAt": {"$date": stamp},
        "updatedAt": {"$date": stamp},
        "error": False,
        "unfinished": False,
    }


WHATSAPP_CHATS = 8
_WORDS = "the a train book run coffee weekday morning plan trip meet call note idea week lunch music garden".split()


def whatsapp_generated(out: Path, n: int) -> list[dict]:
    """`n` messages over WHATSAPP_CHATS chats as WhatsApp exports them (iOS and Android
    shapes by turns, every 20th message on two lines, every 50th a media placeholder, a
    system line every 100), written under `out`; returns the messages loading must give."""
    out.mkdir(parents=True, exist_ok=True)
    expected: list[dict] = []
    per_chat = -(-n // WHATSAPP_CHATS)
    t0 = datetime(2021, 1, 4, 8, 0, 0, tzinfo=UTC).timestamp()
    for c in range(WHATSAPP_CHATS):
        other, ios = f"Ann {c}", c % 2 == 0
        name = f"WhatsApp Chat with {other}.txt"
        lines = []
        for i in range(min(per_chat, n - c * per_chat)):
            at = datetime.fromtimestamp(t0 + i * 37, UTC)
            stamp = at.strftime("[%d/%m/%Y, %H:%M:%S] " if ios else "%d/%m/%Y, %H:%M - ")
            if i % 100 == 99:
                lines.append(
                    f"{stamp}{other} changed the group description" if not ios else f"{stamp}\u200e{other} left"
                )
                continue
            me = i % 2 == 0
            who = "Dee" if me else other
            text = " ".join(_WORDS[(i * 7 + k) % len(_WORDS)] for k in range(12 + i % 9))
            if i % 20 == 3:
                text += "\nand a second line"
            shown = text
            if i % 50 == 7:
                text, shown = (
                    ("\u200eimage omitted", "[image omitted]") if ios else ("<Media omitted>", "[media omitted]")
                )
            lines.append(f"{stamp}{who}: {text}")
            when = at if ios else at.replace(second=0)
            expected.append(
                {
                    "user_id": "whatsapp-Dee",
                    "conversation_id": f"whatsapp-{other}",
                    "role": "user" if me else "assistant",
                    "content": shown if me else f"{other}: {shown}",
                    "chat_time": when.strftime("%Y-%m-%dT%H:%M:%S"),
                }
            )
        (out / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return expected


def run(base: Path, n: int, peak, preset: str = "telegram-export") -> dict:
    """`peak(mapping, work)` measures a dry run's peak RSS in its own process (benchmarks.run)."""
    small_export, _ = _write(base, preset, max(1, n // 5))
    export, flat = _write(base, preset, n)
    planned_rate(flat, base / "work-export-warm", per="read")  # imports and caches, not measured
    out: dict = {"preset": preset, "messages": n}
    out["flat"] = planned_rate(flat, base / "work-export-flat", per="read")
    out["export"] = planned_rate(export, base / "work-export", per="read")
    out["ratio"] = out["export"]["per_min"] / out["flat"]["per_min"]
    out["peak_small"] = peak(small_export, base / "mem-export-small")["peak_rss_bytes"]
    out["peak"] = peak(export, base / "mem-export")["peak_rss_bytes"]
    out["file_bytes"] = (
        sum(f.stat().st_size for f in export.parent.joinpath("export").rglob("*") if f.is_file())
        if export.parent.joinpath("export").is_dir()
        else (export.parent / "export.zip").stat().st_size
    )
    return out


# the whatsapp reader's own target is against its earlier self (benchmarks.whatsapp_bench)
TARGETS = {"whatsapp-txt": "RSS <= 1.2x (speed: the reader row below)"}


def rows(m: dict) -> list[tuple[str, str, str, str]]:
    """Rows for the results table."""
    e, f = m["export"], m["flat"]
    return [
        (
            f"{m['preset']} dry run, {m['messages']:,} messages ({m['file_bytes'] / 2**20:.0f} MiB as downloaded)",
            f"{e['per_min'] / 1e6:.2f}M msg/min, flat Parquet {f['per_min'] / 1e6:.2f}M",
            f"{m['ratio']:.2f} of flat; peak RSS {m['peak'] / 2**20:.0f} MiB, "
            f"{m['peak'] / m['peak_small']:.2f}x that of a fifth of it",
            TARGETS.get(m["preset"], ">= 0.3 of flat, RSS <= 1.2x"),
        )
    ]
