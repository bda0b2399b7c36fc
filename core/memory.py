"""Give freed memory back to the OS between coarse units of work (a staged file, a bucket).

glibc's malloc (Arrow's pool too, see below) keeps freed pages for reuse. With batches of
different sizes going through Arrow, pandas and Great Expectations on several threads, what
they keep grows with the number of batches, not with their size: a 5M-message sync ended
~20% above a 1M one with no live data to show for it. Returning the unused pages after each
unit keeps the peak a function of the batch size alone. Both calls take well under a
millisecond when there is nothing to return.

Arrow's pool is the system allocator (glibc's malloc) unless ARROW_DEFAULT_MEMORY_POOL says
otherwise: core/__init__.py sets that default, since Arrow reads it once, when pyarrow is
imported. With mimalloc, pages freed by one loader thread stay cached in
that thread's heap until that thread collects, and a run's loaders hand tables between
threads: measured on 400,000 Redis messages (100,000 sessions, benchmarks/redis_bench.py),
peak RSS was 418 MiB with mimalloc against 368 with the system pool, and 1.19x against 1.14x
that of 10,000 sessions; the 1M-message flat dry run ran at the same rate within the
machine's noise (6.4/11.8 against 8.0/11.1M msg/min, alternated). A process that imported
pyarrow before memos-etl (an Airflow worker, say) keeps the pool it started with."""

from __future__ import annotations

import ctypes
import ctypes.util

import pyarrow as pa

_libc = None
try:
    _name = ctypes.util.find_library("c")
    if _name:
        _libc = ctypes.CDLL(_name)
        if not hasattr(_libc, "malloc_trim"):  # glibc only; musl and macOS have none
            _libc = None
except (OSError, AttributeError):
    _libc = None


def release_unused() -> None:
    pa.default_memory_pool().release_unused()
    if _libc is not None:
        _libc.malloc_trim(0)
