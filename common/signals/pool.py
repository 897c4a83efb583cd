"""Running a pure function over chunks on all cores, from any caller.

Why not a plain ``ProcessPoolExecutor``: the workers are *spawned* (a fork would copy a caller that may hold CUDA
state or gigabytes of weights), and a spawned worker re-imports the caller's ``__main__`` from its file. A script
fed on standard input (``python - <<EOF``) or a ``python -c`` one-liner has no such file, and every worker then dies
(``BrokenProcessPool``). :func:`map_chunks` runs in this process in that case, and also when the pool breaks for any
other reason (a worker killed by the OOM killer), so the results are the same whoever calls.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Iterable, Sequence


def spawn_pool_usable() -> bool:
    """Whether spawned workers can start here: ``__main__`` is importable from a real file, or has no file at all
    (notebooks, the REPL, pytest's runner all work)."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    return path is None or os.path.isfile(path)


def map_chunks(fn: Callable[..., list], chunks: Sequence[Any], workers: int, *args: Any,
               on_done: Callable[[int, list], None] | None = None) -> list[list]:
    """``[fn(*args, chunk) for chunk in chunks]``, on ``workers`` spawned processes when that works."""
    results: list = [None] * len(chunks)
    pending = list(range(len(chunks)))
    if workers > 1 and len(chunks) > 1 and spawn_pool_usable():
        try:
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
                futures = {pool.submit(fn, *args, chunks[i]): i for i in pending}
                from concurrent.futures import as_completed

                for future in as_completed(futures):
                    i = futures[future]
                    results[i] = future.result()
                    if on_done:
                        on_done(i, results[i])
        except BrokenProcessPool:
            pass  # finish what the pool did not, here
    for i in (i for i in pending if results[i] is None):
        results[i] = fn(*args, chunks[i])
        if on_done:
            on_done(i, results[i])
    return results


def flatten(parts: Iterable[list]) -> list:
    return [item for part in parts for item in part]
