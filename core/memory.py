"""Give freed memory back to the OS between coarse units of work (a staged file, a bucket).

Arrow's allocator (mimalloc) and glibc's malloc keep freed pages for reuse. With batches of
different sizes going through Arrow, pandas and Great Expectations on several threads, what
they keep grows with the number of batches, not with their size: a 5M-message sync ended
~20% above a 1M one with no live data to show for it. Returning the unused pages after each
unit keeps the peak a function of the batch size alone. Both calls take well under a
millisecond when there is nothing to return."""

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
