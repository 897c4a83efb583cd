"""Maintainability Index (radon, 0-100 scale): the paper's preference signal.

MI = ``radon.metrics.mi_visit(code, multi=True)`` on the code *without* its markdown fence (the reference notebooks
scored fence debris, docs/design.md §2). Unparsable code has no MI (None): radon raises on syntax errors, and a broken
solution must never be ranked.
"""

from __future__ import annotations

import os
from typing import Iterable

from radon.metrics import mi_visit

from common.prompting.extract import strip_fence
from common.signals.pool import flatten, map_chunks

# Below this many distinct solutions a process pool costs more than it saves (radon takes ~1 ms per solution).
_POOL_THRESHOLD = 256


def maintainability_index(code: str) -> float | None:
    """radon's MI of ``code`` (a surrounding ```python fence is removed first); None when radon cannot parse it."""
    try:
        return float(mi_visit(strip_fence(code), multi=True))
    except (SyntaxError, ValueError, TypeError, RecursionError, MemoryError):
        return None


def _score_chunk(codes: list[str]) -> list[float | None]:
    return [maintainability_index(code) for code in codes]


def maintainability_indices(codes: Iterable[str], workers: int | None = None) -> list[float | None]:
    """MI for many solutions: each distinct string is scored once, on all cores, results in input order.

    Workers are spawned (never forked): the caller may hold CUDA state or gigabytes of weights; where they cannot
    start (a script read from standard input), the scoring runs here (``common.signals.pool``).
    """
    codes = list(codes)
    unique = list(dict.fromkeys(codes))
    workers = workers or os.cpu_count() or 1
    if workers <= 1 or len(unique) < _POOL_THRESHOLD:
        scores = _score_chunk(unique)
    else:
        chunk = max(1, len(unique) // (workers * 4))
        chunks = [unique[i: i + chunk] for i in range(0, len(unique), chunk)]
        scores = flatten(map_chunks(_score_chunk, chunks, workers))
    by_code = dict(zip(unique, scores))
    return [by_code[code] for code in codes]
