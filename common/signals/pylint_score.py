"""pylint score of a solution (0-10, pylint's DEFAULT configuration): a second, lint-based quality signal beside MI.

The score is pylint's global evaluation, the "Your code has been rated at X/10" figure, of the code linted ALONE as
one file: ``max(0, 0 if fatal else 10 - (5*error + warning + refactor + convention) / statement * 10)``. Code pylint
gives no rating (no statement: an empty file, a syntax error, ``# pylint: skip-file``) scores 0.0. Scores are the
exact floats pylint computes, NOT rounded to the two decimals it prints.

Why many files per pylint run, and why that still gives each file its own alone-score:
  * A ``pylint.lint.Run`` per file costs ~23 ms a file in a warm process (building the linter, its checkers and its
    configuration), about four times the ~6 ms of linting an MBPP-sized solution in a run over many files; one run
    over a chunk of files pays the set-up once per chunk.
  * pylint's global note is per run, but its stats also keep per-module counts (``linter.stats.by_module``: the
    messages of each category and the statements of each file). We evaluate pylint's own configured ``evaluation``
    expression (the default formula above) on each module's counts, exactly as ``PyLinter._report_evaluation`` does
    on the run totals, so a file's note is the one a run over that file alone reports.
  * That holds because pylint has exactly two cross-file checks, both emitted in a checker's ``close()`` after all
    modules: duplicate-code (R0801, compares *pairs of different files*) and cyclic-import (R0401, needs two linted
    modules importing each other). Neither can fire when a file is linted alone, so disabling both in the bulk run
    changes no file's counts. Every other message is counted against the module being checked.
  * Each distinct code is written once, as ``snippet_<sha1>.py`` (a module name that satisfies the default
    ``module-rgx``, so C0103 never fires on the file name, and that no solution can import by accident).
  * The configuration is pinned to the defaults with an empty ``--rcfile`` so a pylintrc/pyproject.toml in the
    working directory, its parents or ``$HOME`` cannot change the scores; ``--persistent=n`` keeps pylint from writing
    run statistics for thousands of throw-away module names into its cache.

Parallelism: from 256 distinct codes on, chunks of files go to a pool of ``workers`` *spawned* processes (never
forked, and not pylint's own ``--jobs``, which forks the caller: the caller may hold CUDA state or gigabytes of
weights), each running pylint in-process. Fewer codes, or ``workers=1``, run pylint in this process: a spawned
worker pays ~0.5 s to import pylint and warm astroid's caches, so a pool of 2 breaks even at ~200 codes. pylint
reads the code, it never executes it.

Measured (pylint 4.1.5, 2 cores, MBPP reference solutions): 200 distinct codes in 1.3 s in-process (~150 codes/s,
including importing pylint and warming astroid; a pool of 2 is no faster at this size, hence the threshold); all 974
in 3.9 s in-process (~250 codes/s) and 2.8 s on a pool of 2 workers (~350 codes/s). One ``Run`` per file: ~43/s.
tests/test_quality_signals.py checks the agreement with per-file ``pylint.lint.Run`` calls.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Sequence

from common.signals.pool import map_chunks

log = logging.getLogger(__name__)

# Messages that compare modules with each other (see the module docstring): never raised for a file linted alone.
_CROSS_FILE_MESSAGES = ("duplicate-code", "cyclic-import")
# Files per pylint run: big enough to amortise pylint's set-up, small enough to balance work across the pool.
_MAX_CHUNK = 64
# Below this many distinct codes a pool costs more than it saves (module docstring: break-even ~200 on 2 cores).
_POOL_THRESHOLD = 256


def _pylint_args(rcfile: str, paths: Sequence[str]) -> list[str]:
    return [f"--rcfile={rcfile}", "--persistent=n", "--reports=n", "--score=y",
            f"--disable={','.join(_CROSS_FILE_MESSAGES)}", *paths]


def _module_note(evaluation: str, stats: dict) -> float:
    """pylint's ``evaluation`` expression on one module's counts, as ``PyLinter._report_evaluation`` does per run."""
    if not stats or not stats.get("statement"):
        return 0.0  # pylint prints no rating without a statement (empty file, syntax error, skip-file)
    try:
        # pylint's own configured formula, evaluated the way PyLinter._report_evaluation does
        return float(eval(evaluation, {}, dict(stats)))  # pylint: disable=eval-used
    except Exception:  # pylint: disable=broad-exception-caught  (pylint reports "exception while rating", no note)
        return 0.0


def _run_pylint(rcfile: str, paths: Sequence[str]) -> list[float]:
    """One pylint run over ``paths`` (files named ``<module>.py``); the alone-score of each file, in order."""
    from pylint.lint import Run
    from pylint.reporters import CollectingReporter

    run = Run(_pylint_args(rcfile, paths), reporter=CollectingReporter(), exit=False)
    evaluation = run.linter.config.evaluation
    by_module = run.linter.stats.by_module
    return [_module_note(evaluation, by_module.get(Path(path).stem, {})) for path in paths]


def _lint_chunk(rcfile: str, paths: Sequence[str]) -> list[float]:
    """Alone-scores of a chunk of files; if pylint crashes on the chunk, each file is retried in a run of its own."""
    try:
        return _run_pylint(rcfile, paths)
    except Exception:  # pylint crashes on a few pathological inputs (e.g. RecursionError in astroid inference)
        if len(paths) == 1:
            log.warning("pylint crashed on %s; scoring it 0.0", paths[0], exc_info=True)
            return [0.0]
        return [score for path in paths for score in _lint_chunk(rcfile, [path])]


def _write_files(codes: Sequence[str], folder: str) -> list[str]:
    paths = []
    for code in codes:
        digest = hashlib.sha1(code.encode("utf-8", "surrogatepass")).hexdigest()
        path = os.path.join(folder, f"snippet_{digest}.py")
        with open(path, "w", encoding="utf-8", errors="surrogatepass", newline="") as handle:
            handle.write(code)
        paths.append(path)
    return paths


def pylint_scores(codes: Sequence[str], workers: int | None = None, progress: bool = True) -> list[float]:
    """pylint score (0-10, default configuration, exact float) of each code, in input order; 0.0 where pylint gives
    no rating. Each distinct code is linted once; ``workers`` processes (default: all cores) share the work.

    Codes are linted as given: strip a markdown fence first (``common.prompting.extract.strip_fence``), or the fence
    is a syntax error and scores 0.0.
    """
    if isinstance(codes, str):
        raise ValueError("codes must be a sequence of code strings, not one string")
    codes = list(codes)
    if not all(isinstance(code, str) for code in codes):
        raise ValueError("codes must contain only strings")
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be a positive number of processes, got {workers}")
    unique = list(dict.fromkeys(codes))
    if not unique:
        return []
    workers = workers or os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="pylint-scores-") as folder:
        rcfile = os.path.join(folder, "empty.pylintrc")
        Path(rcfile).touch()
        paths = _write_files(unique, folder)
        size = max(1, min(_MAX_CHUNK, -(-len(paths) // (workers * 4))))
        chunks = [paths[i: i + size] for i in range(0, len(paths), size)]
        progress_bar = _progress_bar(len(paths), progress)
        results: dict[int, list[float]] = {}
        if workers == 1 or len(unique) < _POOL_THRESHOLD:
            for index, chunk in enumerate(chunks):
                results[index] = _lint_chunk(rcfile, chunk)
                progress_bar.update(len(chunk))
        else:
            def done(index: int, _scores: list) -> None:
                progress_bar.update(len(chunks[index]))

            results = dict(enumerate(map_chunks(_lint_chunk, chunks, workers, rcfile, on_done=done)))
        progress_bar.close()
    scores = [score for index in range(len(chunks)) for score in results[index]]
    by_code = dict(zip(unique, scores))
    return [by_code[code] for code in codes]


def _progress_bar(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="pylint", unit="code", disable=not enabled)
