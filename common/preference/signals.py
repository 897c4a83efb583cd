"""Preference signals: what makes one candidate better than another, turned into DPO pairs, KTO singles and SFT targets.

A signal (``stage1.signal``) is one criterion or a comma-separated lexicographic list of them:

* ``exec``: the candidate passed every test of its task (a binary criterion).
* ``compile``: the candidate compiles (``compile(code, "<candidate>", "exec")``; binary). Its negatives are
  corrupted copies of compiling candidates (``corruption.py``: ``stage1.compile_negatives`` per candidate),
  because generators rarely write code that does not compile.
* ``mi``: radon's Maintainability Index, only among candidates that passed (the paper: a broken solution is never
  ranked, however readable). Numeric.
* ``pylint``: pylint's score (``common.signals.pylint_score``), only among passing candidates. Numeric.
* ``exec,mi``: pass first, then MI among the candidates tied on the first criterion, and so on.

Every criterion gives a candidate a value or None ("not scored": MI or pylint of failing code). Candidates are
ranked by the values in criterion order, higher first, None below every value, the lower pool position (candidate
index) first among equals: for ``mi`` that is exactly the paper's rule in ``pairing.select_pairs``, and
tests/test_signals.py checks the two agree. When the FIRST criterion is mi or pylint, the pool holds only the
candidates it scores (passing ones), as the paper; with exec or compile first every candidate takes part (that
is the point of those signals). Identical code (whitespace at the ends ignored) and empty code never take part.

From one ranked pool come:

* pairs (DPO): (chosen, rejected) with chosen strictly better. ``extremes`` = best against worst, ``all`` = every
  combination. A difference in an earlier criterion always counts; on the LAST criterion a numeric difference must
  reach ``min_margin`` unless ``keep_ties`` (two measured values, the paper's tie rule); a binary tie, or two
  unscored sides, is never a pair (there is no measurement that could have tied).
* singles (KTO): see :func:`label_singles`. Binary criteria label absolutely (passing code is desirable even when
  every candidate passes); numeric ones relatively, around the median of the task's candidates.
* a target (SFT): the top-ranked candidate, if no binary criterion rejects it (a task where nothing passes gives no
  ``exec`` target: SFT on failing code would teach failing code).
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

from common.preference.corruption import compiles, corruptions
from common.preference.pairing import Candidate, ranked_combinations

CRITERIA = ("exec", "compile", "mi", "pylint")
BINARY = frozenset({"exec", "compile"})
NUMERIC = frozenset({"mi", "pylint"})
CORRUPT_INDEX = -1  # candidate_index of a corrupted copy (it is no candidate of the generator)


def parse_signal(signal: str) -> tuple[str, ...]:
    """``"exec,mi"`` -> ("exec", "mi"); a ValueError naming ``stage1.signal`` for anything else."""
    names = tuple(part.strip().lower() for part in str(signal or "").split(","))
    unknown = [name for name in names if name not in CRITERIA]
    if not names or unknown:
        raise ValueError(f"stage1.signal={signal!r}: unknown criterion {unknown or [signal]}; valid: "
                         f"{', '.join(CRITERIA)}, or a comma-separated lexicographic list such as 'exec,mi'")
    if len(set(names)) != len(names):
        raise ValueError(f"stage1.signal={signal!r} names a criterion twice; valid: {', '.join(CRITERIA)}")
    return names


@dataclass(frozen=True)
class Scored:
    """A candidate with the values the signal ranks it by (one per criterion, None = not scored)."""

    candidate: Candidate
    values: tuple
    criteria: tuple[str, ...]
    position: int  # place in the pool: breaks ties (the lower candidate index wins, as "output 1 chosen")

    @property
    def sort_key(self) -> tuple:
        return tuple((1, 0.0) if v is None else (0, -float(v)) for v in self.values) + (self.position,)

    def score_json(self) -> str:
        """The signal's values as a JSON object in criterion order, e.g. ``{"exec": true, "mi": 71.3}``."""
        return json.dumps(dict(zip(self.criteria, self.values)))


def criterion_value(name: str, candidate: Candidate, pylint: Mapping[str, float] | None = None) -> object:
    if name == "exec":
        return bool(candidate.passed)
    if name == "compile":
        return compiles(candidate.code)
    if name == "mi":
        return float(candidate.mi) if candidate.passed and candidate.mi is not None else None
    if name == "pylint":
        if pylint is None:
            raise ValueError("the pylint criterion needs pylint scores (common.signals.pylint_score)")
        return float(pylint[candidate.code]) if candidate.passed else None
    raise ValueError(f"unknown criterion {name!r}; valid: {', '.join(CRITERIA)}")


def build_pool(candidates: Iterable[Candidate], criteria: Sequence[str], pylint: Mapping[str, float] | None = None,
               negatives: int = 0, seed: int | str = 0) -> list[Scored]:
    """One task's pool, ranked best first.

    Candidates in index order; with mi/pylint first only those it scores (the paper's passing ones); then the
    first of each distinct code. With ``compile`` among the criteria, ``negatives`` corrupted copies of each
    compiling candidate join (candidate index -1, origin ``corrupt:<what>``; seeded by ``seed`` and the source's
    index; never the code of another pool member). Corrupted copies follow in the REVERSE
    order of their sources' rank, so among the tied corrupted copies the best candidate's own corruption ranks last
    and ``extremes`` pairs it with its source: a minimal pair that differs only by the error.
    """
    criteria = tuple(criteria)
    ordered = sorted(candidates, key=lambda c: c.index)
    scored = [(c, tuple(criterion_value(name, c, pylint) for name in criteria)) for c in ordered]
    if criteria[0] in NUMERIC:
        scored = [(c, values) for c, values in scored if values[0] is not None]
    seen, pool = set(), []
    for candidate, values in scored:
        key = candidate.code.strip()
        if key and key not in seen:
            seen.add(key)
            pool.append(Scored(candidate, values, criteria, len(pool)))
    pool.sort(key=lambda s: s.sort_key)
    if "compile" not in criteria or negatives <= 0:
        return pool
    extra = []
    for source in reversed(pool):
        if not source.values[criteria.index("compile")]:
            continue
        for bad in corruptions(source.candidate.code, negatives, f"{seed}:{source.candidate.index}", seen):
            seen.add(bad.code.strip())
            copy = Candidate(bad.code, None, False, CORRUPT_INDEX, f"corrupt:{bad.what}")
            values = tuple(criterion_value(name, copy, pylint) for name in criteria)
            extra.append(Scored(copy, values, criteria, len(pool) + len(extra)))
    return sorted(pool + extra, key=lambda s: s.sort_key)


def _last_numeric_margin(hi: Scored, lo: Scored) -> float | None:
    a, b = hi.values[-1], lo.values[-1]
    if hi.criteria[-1] in NUMERIC and a is not None and b is not None:
        return float(a) - float(b)
    return None


def better(hi: Scored, lo: Scored, min_margin: float = 1e-6, keep_ties: bool = False) -> bool:
    """Whether (hi, lo), hi ranked first, is a preference pair: see the module docstring."""
    if hi.values[:-1] != lo.values[:-1]:
        return True
    margin = _last_numeric_margin(hi, lo)
    if margin is not None:
        return keep_ties or margin >= min_margin
    a, b = hi.values[-1], lo.values[-1]
    return a is not None and (b is None or a != b)


def select_pairs(pool: Sequence[Scored], pairing: str = "extremes", min_margin: float = 1e-6,
                 keep_ties: bool = False) -> list[tuple[Scored, Scored]]:
    """(chosen, rejected) pairs of one ranked pool (``build_pool``); the modes of ``pairing.select_pairs``."""
    if len(pool) < 2:
        return []
    return [(hi, lo) for hi, lo in ranked_combinations(pool, pairing) if better(hi, lo, min_margin, keep_ties)]


def label_singles(pool: Sequence[Scored]) -> list[tuple[Scored, bool]]:
    """(candidate, desirable) for KTO, in pool order (candidate index, corrupted copies last); some stay unlabelled.

    The criteria are applied in turn to the candidates still in the running:

    * binary (exec, compile): False -> undesirable; True stays in the running and counts as "judged good". Absolute
      on purpose: passing (compiling) code is desirable even in a task where every candidate passes.
    * numeric (mi, pylint): relative to the median of the values in the running (the task's typical candidate):
      below -> undesirable, above -> stays and is judged good, exactly at the median -> unlabelled (neither better
      nor worse than typical). Unscored (None) -> undesirable (it ranks below every scored one). With fewer than two
      distinct values there is nothing to compare: everyone stays, judged by nothing.

    Desirable = still in the running at the end AND judged good by at least one criterion. So ``mi`` on two passing
    candidates labels the higher one desirable and the lower one undesirable (the pair, unpaired); tied MI or a
    lone passing candidate gives no label, as it gives no pair; ``exec,mi`` makes failing code and below-median
    passing code undesirable. Every rule here can yield both labels within one task.
    """
    labels: dict[int, bool] = {}
    running = list(pool)
    judged: set[int] = set()
    for depth, name in enumerate(pool[0].criteria if pool else ()):
        if name in BINARY:
            for s in running:
                if s.values[depth]:
                    judged.add(s.position)
                else:
                    labels[s.position] = False
            running = [s for s in running if s.values[depth]]
            continue
        values = [s.values[depth] for s in running if s.values[depth] is not None]
        if len(set(values)) < 2:
            for s in running:
                if s.values[depth] is None and values:
                    labels[s.position] = False
            running = [s for s in running if s.values[depth] is not None or not values]
            continue
        median = statistics.median(values)
        kept = []
        for s in running:
            value = s.values[depth]
            if value is None or value < median:
                labels[s.position] = False
            elif value > median:
                judged.add(s.position)
                kept.append(s)
            else:
                labels[s.position] = None  # at the median: no label
        running = kept
    for s in running:
        if s.position in judged:
            labels[s.position] = True
    return [(s, labels[s.position]) for s in sorted(pool, key=lambda s: s.position)
            if labels.get(s.position) is not None]


def select_target(pool: Sequence[Scored]) -> Scored | None:
    """The SFT target of one task: the top-ranked candidate (``mi``: the max-MI passing one, the lower index on a
    tie), or None when a binary criterion rejects even the best (nothing passes / compiles)."""
    if not pool:
        return None
    best = pool[0]
    if any(not value for name, value in zip(best.criteria, best.values) if name in BINARY):
        return None
    return best


def is_tie(chosen: Scored, rejected: Scored) -> bool:
    """A kept pair whose two sides have the same values (only ``keep_ties`` keeps one)."""
    return chosen.values == rejected.values
