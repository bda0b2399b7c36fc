"""How a phase runs its items: a FanOut is map(fn, items, on_done) -> results in the items'
order. serial_fanout and thread_fanout here; the flows run a phase as one Prefect task run."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

#: map(fn, items, on_done) -> results in the order of items; on_done(result) is called as each finishes
FanOut = Callable[..., list]


def serial_fanout(fn: Callable, items: Iterable[tuple], on_done: Callable | None = None) -> list:
    out = []
    for args in items:
        out.append(fn(*args))
        if on_done:
            on_done(out[-1])
    return out


def thread_fanout(workers: int) -> FanOut:
    def run_all(fn: Callable, items: Iterable[tuple], on_done: Callable | None = None) -> list:
        def one(args):
            r = fn(*args)
            if on_done:
                on_done(r)
            return r

        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="memos-etl") as pool:
            return list(pool.map(one, items))

    return run_all
