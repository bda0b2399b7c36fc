"""Messy input beside clean input, side by side in one run: the same messages as JSONL, clean;
with 0.1% bad lines spread over every file (a line cut short, a byte that is not UTF-8, a field
of another type, in turn); and clean as .jsonl.gz and .jsonl.zst. Dry runs (plan): what the
readers cost, not the API. Peak RSS of the clean and the messy run, each in its own process."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import yaml

from benchmarks.data import generate
from benchmarks.pipeline_bench import planned_rate

#: one line in this many is bad in the messy copy
BAD_EVERY = 1000
_BAD = (
    lambda line: line[: len(line) // 2],  # cut short
    lambda line: line.replace(b'"text": "', b'"text": "\xff', 1),  # not UTF-8
    lambda line: line.replace(b'"user": "', b'"user": {"id": "', 1).replace(
        b'", "conversation_id"', b'"}, "conversation_id"', 1
    ),
)


def _jsonl(parquet_dir: Path, out: Path, bad_every: int = 0) -> int:
    """The Parquet files of `parquet_dir` as JSONL files in `out`; every `bad_every`-th line
    spoilt. Returns the number of bad lines."""
    out.mkdir(parents=True, exist_ok=True)
    bad = 0
    for f in sorted(parquet_dir.glob("*.parquet")):
        rows = pq.read_table(f).to_pylist()
        lines = []
        for i, r in enumerate(rows):
            r["sent_at"] = r["sent_at"].isoformat()
            line = orjson.dumps(r).replace(b'":"', b'": "').replace(b'","', b'", "')
            if bad_every and i % bad_every == bad_every // 2:
                line = _BAD[bad % len(_BAD)](line)
                bad += 1
            lines.append(line)
        (out / f"{f.stem}.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    return bad


def _mapping(base_mapping: Path, data: Path, name: str) -> Path:
    body = yaml.safe_load(base_mapping.read_text())
    body["source"].update(format="jsonl", path=str(data), name=name)
    p = data.parent / f"{name}.yaml"
    p.write_text(yaml.safe_dump(body, sort_keys=False))
    return p


def run(base: Path, n: int, peak) -> dict:
    """`peak(mapping, work)` measures a dry run's peak RSS in its own process (benchmarks.run)."""
    parquet = generate(base / f"messy-src{n}", n)
    root = base / f"messy{n}"
    clean, messy, gz, zst = (root / k for k in ("clean", "messy", "gz", "zst"))
    if not (clean / "done").exists():
        _jsonl(parquet.parent / "data", clean)
        bad = _jsonl(parquet.parent / "data", messy, BAD_EVERY)
        for d, tool in ((gz, ["gzip", "-6", "-c"]), (zst, ["zstd", "-3", "-q", "-c"])):
            d.mkdir(parents=True, exist_ok=True)
            ext = ".gz" if d is gz else ".zst"
            for f in sorted(clean.glob("*.jsonl")):
                with open(d / (f.name + ext), "wb") as fh:
                    subprocess.run([*tool, str(f)], stdout=fh, check=True)
        (clean / "done").write_text(json.dumps({"bad": bad}))
    bad = json.loads((clean / "done").read_text())["bad"]
    out: dict = {"messages": n, "bad_lines": bad}
    warm = _mapping(parquet, clean, "messy-clean")
    planned_rate(warm, base / "work-messy-warm", per="read")  # imports and caches, not measured
    for key, d in (("clean", clean), ("messy", messy), ("gz", gz), ("zst", zst)):
        out[key] = planned_rate(_mapping(parquet, d, f"messy-{key}"), base / f"work-messy-{key}", per="read")
        out[key]["bytes"] = sum(f.stat().st_size for f in d.iterdir() if f.name != "done")
    for key in ("gz", "zst", "messy"):
        out[key]["ratio"] = out[key]["per_min"] / out["clean"]["per_min"]
    for key, d in (("clean", clean), ("messy", messy)):
        out[key]["peak_rss_bytes"] = peak(_mapping(parquet, d, f"messy-{key}"), base / f"mem-messy-{key}")[
            "peak_rss_bytes"
        ]
    out["messy"]["rss_ratio"] = out["messy"]["peak_rss_bytes"] / out["clean"]["peak_rss_bytes"]
    return out


def rows(m: dict) -> list[tuple[str, str, str, str]]:
    """Rows for the results table."""
    c, b = m["clean"], m["messy"]
    return [
        (
            f"JSONL dry run, {m['messages']:,} messages, {m['bad_lines']:,} bad lines (0.1%) spread over every file",
            f"{b['per_min'] / 1e6:.2f}M msg/min ({b['quarantined']:,} quarantined), clean {c['per_min'] / 1e6:.2f}M",
            f"{b['ratio']:.2f} of clean; peak RSS {b['peak_rss_bytes'] / 2**20:.0f} / {c['peak_rss_bytes'] / 2**20:.0f}"
            f" MiB = {b['rss_ratio']:.2f}x",
            ">= 0.8 of clean, RSS <= 1.1x",
        ),
        (
            "the same JSONL as .jsonl.gz / .jsonl.zst",
            f"{m['gz']['per_min'] / 1e6:.2f}M / {m['zst']['per_min'] / 1e6:.2f}M msg/min",
            f"{m['gz']['ratio']:.2f} / {m['zst']['ratio']:.2f} of plain .jsonl "
            f"({m['gz']['bytes'] / c['bytes']:.2f} / {m['zst']['bytes'] / c['bytes']:.2f} of its bytes)",
            ">= 0.7 of plain",
        ),
    ]
