"""The WhatsApp reader against the reader of an earlier commit, side by side in one run: the
same generated chats (benchmarks.exports_bench.whatsapp_generated) read to record batches by
each, turn about, best of `rounds`. The earlier reader is the file at that commit (git show),
loaded as a module of its own: what today's languages, chronology rule and clock-change
handling cost over the English-only reader they replaced.

    uv run python -m benchmarks.whatsapp_bench [--messages 1000000] [--against dc67b0c]
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.exports_bench import whatsapp_generated
from tasks.extract import chatlines

BEFORE = "dc67b0c"  # main before issue 37: English wordings, no chronology rule


def _earlier(commit: str):
    src = subprocess.run(
        ["git", "show", f"{commit}:tasks/extract/chatlines.py"], capture_output=True, text=True, check=True
    ).stdout
    path = Path(tempfile.mkdtemp()) / "chatlines_before.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("chatlines_before", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["chatlines_before"] = module
    spec.loader.exec_module(module)
    return module


def _read(module, files: list[Path]) -> tuple[float, int]:
    t0, rows = time.perf_counter(), 0
    for f in files:
        for _, rb in module.whatsapp_batches(lambda f=f: open(f, "rb"), f.name, [], False):
            rows += rb.num_rows
    return time.perf_counter() - t0, rows


def run(base: Path, n: int, against: str = BEFORE, rounds: int = 3) -> dict:
    d = base / f"whatsapp-reader-{n}"
    if not (d / "done").exists():
        whatsapp_generated(d, n)
        (d / "done").write_text("")
    files = sorted(d.glob("*.txt"))
    before = _earlier(against)
    best = {"now": float("inf"), "before": float("inf")}
    rows = {}
    for _ in range(rounds):
        for name, module in (("before", before), ("now", chatlines)):
            s, rows[name] = _read(module, files)
            best[name] = min(best[name], s)
    return {
        "messages": n,
        "against": against,
        "rows": rows,
        "now_per_min": rows["now"] / best["now"] * 60,
        "before_per_min": rows["before"] / best["before"] * 60,
        "ratio": (rows["now"] / best["now"]) / (rows["before"] / best["before"]),
    }


def rows(m: dict) -> list[tuple[str, str, str, str]]:
    return [
        (
            f"whatsapp reader, {m['messages']:,} messages, today's beside {m['against']}'s",
            f"{m['now_per_min'] / 1e6:.2f}M msg/min, before {m['before_per_min'] / 1e6:.2f}M",
            f"{m['ratio']:.2f} of before",
            ">= 0.9 of before",
        )
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=1_000_000)
    ap.add_argument("--against", default=BEFORE)
    args = ap.parse_args()
    base = Path(tempfile.gettempdir()) / "memos-etl-bench"
    for r in rows(run(base, args.messages, args.against)):
        print("  ".join(r))


if __name__ == "__main__":
    main()
