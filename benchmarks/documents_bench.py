"""Documents into a knowledge base (flows/runner/documents.py, issue 40): the cost of knowing that
nothing changed, side by side with the cost of uploading.

The dev-server runs in its own process (as in load_bench: its base64 decoding, hashing and
SQLite writes would otherwise share this process's GIL and slow the runner's first sync, which
would flatter the ratio), on loopback, with no latency and no rate limit; the runner's own
limiter is off too (`load.requests_per_second: 0`), so a first sync measures our work and the
server's, not waiting. Each sync is one in-process run of `flows.runner.run`, timed wall, with
the report's upload requests and every HTTP request the target made (counted on its `_post`).

1. `n` small Markdown/text documents (a few hundred bytes, 100 a folder): the first sync,
   then a no-op re-sync; bound: no-op <= 0.05 of the first sync, 0 requests.
2. `big` such documents: a first sync (its time said: 20 files an upload), a no-op re-sync
   (nothing read: listed, compared with the ledger's manifest of size:mtime versions), and a
   re-sync after 1% of the files got new content (only those read, hashed, uploaded; their old
   versions deleted), as files/s over the whole listing, against the bare listing
   (tasks/extract/files.list_local) as the floor.

    uv run python -m benchmarks.documents_bench            # 10,000 and 100,000 files
    uv run python -m benchmarks.documents_bench --quick    # 2,000 and 20,000
    uv run python -m benchmarks.documents_bench --profile  # + cProfile of the big no-op re-sync
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import requests
import yaml

from benchmarks import load_bench
from core.config import RunConfig, load_mapping
from memos_etl.devserver import free_port

ROOT = Path(__file__).resolve().parent.parent
PER_FOLDER = 100
CHANGED_EVERY = 100  # 1% of the files get new content

WORDS = (
    "policy leave travel budget review onboarding security laptop expense meeting holiday "
    "office contract training handbook team customer release incident backup password"
).split()


class Server(load_bench.Server):
    """The dev-server in a process of its own (`memos-etl dev-server`), in-memory store."""

    def __init__(self):
        super().__init__(free_port())

    def files(self, kb_name: str) -> tuple[int, int]:
        """(live files, every file ever uploaded) in the server's knowledge base of that name."""
        kbs = requests.get(self.url + "/_dev/knowledgebases", timeout=600).json()
        every = [f for kb in kbs if kb["name"] == kb_name for f in kb["files"]]
        return sum(not f["deleted"] for f in every), len(every)


def text(i: int, generation: int = 0) -> bytes:
    """A small document: a heading and a few paragraphs, 250-450 bytes, unique to i."""
    w = [WORDS[(i * 7 + k * 3) % len(WORDS)] for k in range(40)]
    body = (
        f"# Page {i}\n\nRevision {generation}. "
        + " ".join(w[:14])
        + ".\n\n"
        + " ".join(w[14:28])
        + f" (see page {(i * 31) % 997}).\n\n"
        + " ".join(w[28 : 28 + i % 12])
        + "\n"
    )
    return body.encode()


def rel(i: int) -> str:
    return f"d{i // PER_FOLDER:04d}/page-{i:06d}.{'md' if i % 2 == 0 else 'txt'}"


def generate(root: Path, n: int) -> None:
    """n documents under root, PER_FOLDER a folder; kept when already there (same n)."""
    stamp = root / ".generated"
    if stamp.exists() and stamp.read_text() == str(n):
        return
    shutil.rmtree(root, ignore_errors=True)
    for d in range((n + PER_FOLDER - 1) // PER_FOLDER):
        (root / f"d{d:04d}").mkdir(parents=True)
    for i in range(n):
        (root / rel(i)).write_bytes(text(i))
    stamp.write_text(str(n))  # a hidden name: not listed by the source


def touch(root: Path, n: int, generation: int) -> int:
    """New content for every CHANGED_EVERY-th document (size and mtime move); how many."""
    k = 0
    for i in range(0, n, CHANGED_EVERY):
        (root / rel(i)).write_bytes(text(i, generation) + b"Edited.\n")
        k += 1
    (root / ".generated").unlink()  # the folder is no longer what generate() made
    return k


def mapping(base: Path, name: str, folder: Path) -> Path:
    m = base / f"{name}.yaml"
    body = {
        "source": {"name": name, "type": "files", "format": "documents", "path": str(folder)},
        "documents": {"knowledgebase": name, "parse_wait_s": 60},
        "on_delete": "delete",
    }
    m.write_text(yaml.safe_dump(body))
    return m


def config(url: str, work: Path) -> RunConfig:
    cfg = RunConfig()
    cfg.target.base_url = url
    cfg.target.name = "bench-documents"
    cfg.state.work_dir = str(work)
    cfg.load.requests_per_second = 0  # the server has no limit either: the sync's own time
    return cfg


def sync(mapping_path: Path, cfg: RunConfig, profile: Path | None = None) -> dict:
    """One run of the documents source: wall seconds, the report's counts, and the HTTP
    requests its target made (uploads, listings, status polls, deletes, creates)."""
    from core.client import make_target
    from flows.runner import run

    target: Any = make_target(cfg.target)  # its _post wrapped below
    calls = {"n": 0}
    post = target._post

    def counted(*a, **k):
        calls["n"] += 1
        return post(*a, **k)

    target._post = counted  # this instance's requests, counted
    m = load_mapping(mapping_path)
    prof = None
    if profile is not None:
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
    t = time.perf_counter()
    try:
        report = run(m, cfg, target=target)
    finally:
        seconds = time.perf_counter() - t
        if prof is not None:
            prof.disable()
            prof.dump_stats(str(profile))
        target.close()
    c = report.counts
    if report.status != "completed":
        raise RuntimeError(f"documents sync {report.status}: {report.error or report.notes}")
    return {
        "seconds": seconds,
        "status": report.status,
        "requests": c.requests,
        "http_requests": calls["n"],
        "read": c.read,
        "delivered": c.delivered,
        "units_skipped": c.units_skipped,
        "already_delivered": c.already_delivered,
        "quarantined": c.quarantined,
        "gone_from_source": c.gone_from_source,
    }


def listing(mapping_path: Path) -> float:
    """The floor of any re-sync: listing the folder the way the source does (walk, stat)."""
    from tasks.extract.files import list_local

    m = load_mapping(mapping_path)
    t = time.perf_counter()
    list_local(m)
    return time.perf_counter() - t


def fresh(work: Path) -> Path:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    return work


def run(base: Path, n: int = 10_000, big: int = 100_000, log=print, profile: bool = False) -> dict:
    base.mkdir(parents=True, exist_ok=True)
    out: dict = {"n": n, "big": big}
    server = Server()
    try:
        # a warm-up (imports, the first connection) so the first sync measured is not the first run
        warm = base / "docs-warm"
        generate(warm, 20)
        sync(mapping(base, "docswarm", warm), config(server.url, fresh(base / "work-docs-warm")))
        # 1. n documents: the first sync and a no-op re-sync
        folder = base / f"docs-{n}"
        generate(folder, n)
        small = mapping(base, f"docs{n}", folder)
        cfg = config(server.url, fresh(base / f"work-docs-{n}"))
        first = sync(small, cfg)
        noops = [sync(small, cfg) for _ in range(3)]  # cheap: the median of three, for the noise
        noop = sorted(noops, key=lambda r: r["seconds"])[1]
        live, every = server.files(f"docs{n}")
        ratio = noop["seconds"] / first["seconds"]
        requests_made = max(r["http_requests"] for r in noops)
        out["small"] = {
            "first": first,
            "noop": noop,
            "noop_seconds": [r["seconds"] for r in noops],
            "ratio": ratio,
            "noop_http_requests": requests_made,
            "within_bound": ratio <= 0.05 and requests_made == 0,
            "server_files": live,
            "server_uploads": every,
        }
        log(
            f"documents {n:,}: first sync {first['seconds']:.1f}s ({first['requests']} uploads, "
            f"{first['http_requests']} HTTP requests, {first['delivered']:,} files), no-op re-sync "
            f"{noop['seconds']:.3f}s (median of 3), {requests_made} HTTP requests: "
            f"{ratio:.4f} of the first sync (bound <= 0.05, 0 requests: "
            f"{'met' if out['small']['within_bound'] else 'NOT met'}); "
            f"server holds {live:,} files of {every:,} uploaded"
        )

        # 2. big documents: change detection
        folder = base / f"docs-{big}"
        generate(folder, big)
        large = mapping(base, f"docs{big}", folder)
        cfg = config(server.url, fresh(base / f"work-docs-{big}"))
        out["big_first"] = sync(large, cfg)
        log(
            f"documents {big:,}: first sync {out['big_first']['seconds']:.1f}s "
            f"({big / out['big_first']['seconds']:,.0f} files/s, {out['big_first']['requests']:,} uploads of <= 20 "
            f"files, {out['big_first']['http_requests']:,} HTTP requests)"
        )
        out["big_listing_s"] = min(listing(large) for _ in range(2))
        prof = base / "documents-noop.prof" if profile else None
        noop = sync(large, cfg, profile=prof)
        if prof is not None:  # its own timing is the profiler's: measure again without it
            out["big_noop_profile"] = str(prof)
            noop = sync(large, cfg)
        changed_n = touch(folder, big, 1)
        changed = sync(large, cfg)
        live, every = server.files(f"docs{big}")
        out["big_noop"] = {**noop, "files_per_s": big / noop["seconds"]}
        out["big_changed"] = {**changed, "touched": changed_n, "files_per_s": big / changed["seconds"]}
        out["big_changed_ratio"] = changed["seconds"] / noop["seconds"]
        out["big_noop_over_listing"] = noop["seconds"] / out["big_listing_s"]
        out["big_server_files"], out["big_server_uploads"] = live, every
        log(
            f"documents {big:,} change detection: no-op re-sync {noop['seconds']:.2f}s "
            f"({big / noop['seconds']:,.0f} files/s, {noop['read']} read, {noop['http_requests']} HTTP requests; "
            f"{out['big_noop_over_listing']:.1f}x the bare listing's {out['big_listing_s']:.2f}s); "
            f"{changed_n:,} changed (1%): {changed['seconds']:.2f}s ({big / changed['seconds']:,.0f} files/s, "
            f"{changed['read']:,} read, {changed['delivered']:,} uploaded in {changed['requests']} requests, "
            f"{changed['http_requests']} HTTP requests): {out['big_changed_ratio']:.2f}x the no-op"
        )
        if profile and prof is not None:
            import pstats

            pstats.Stats(str(prof)).sort_stats("cumulative").print_stats(40)
            pstats.Stats(str(prof)).sort_stats("tottime").print_stats(25)
        return out
    finally:
        server.stop()


def rows(m: dict) -> list[tuple[str, str, str, str]]:
    """Rows for the results table."""
    s, n, big = m["small"], m["n"], m["big"]
    return [
        (
            f"documents: no-op re-sync of {n:,} files against their first sync",
            f"{s['noop']['seconds']:.2f} s vs {s['first']['seconds']:.1f} s, {s['noop_http_requests']} requests",
            f"{s['ratio']:.3f}",
            "<= 0.05, 0 requests",
        ),
        (
            f"documents: change detection over {big:,} files (no-op; 1% changed)",
            f"{m['big_noop']['files_per_s']:,.0f} files/s; {m['big_changed']['files_per_s']:,.0f} files/s "
            f"({m['big_changed']['read']:,} read)",
            f"no-op {m['big_noop_over_listing']:.1f}x the bare listing; "
            f"1% changed {m['big_changed_ratio']:.2f}x the no-op",
            "only what changed is read",
        ),
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="2,000 and 20,000 files")
    p.add_argument("--n", type=int, default=None)
    p.add_argument("--big", type=int, default=None)
    p.add_argument("--profile", action="store_true", help="cProfile the big no-op re-sync (printed)")
    a = p.parse_args()
    n = a.n or (2_000 if a.quick else 10_000)
    big = a.big or (20_000 if a.quick else 100_000)
    base = Path(os.environ.get("MEMOS_ETL_BENCH_DIR", Path(tempfile.gettempdir()) / "memos-etl-bench"))
    t = time.perf_counter()
    res = run(base, n, big, profile=a.profile)
    res["bench_seconds"] = time.perf_counter() - t
    print(json.dumps(res, indent=2, default=str))


if __name__ == "__main__":
    main()
