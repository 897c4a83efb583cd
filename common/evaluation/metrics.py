"""Evaluation metrics: where a stage-3 number is aggregated. pass@k follows Chen et al. 2021 ("Evaluating Large
Language Models Trained on Code"); the average MI is the paper's (macro over tasks with a passing sample).

From per-sample verdicts (task_id, passed, mi) to the numbers of the paper's table: ``task_outcomes`` groups samples
by task, ``aggregate_run`` computes every number of one (variant, run). The evaluate and report stages both call it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Sequence


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased estimate of pass@k from ``n`` samples of which ``c`` passed.

    pass@k = 1 - C(n - c, k) / C(n, k): one minus the chance that k samples drawn without replacement from
    the n are all failures. Computed as the product form 1 - prod_{i = n-c+1}^{n} (1 - k / i) (Chen et al.,
    Fig. 3), which never forms the huge binomials and stays exact to float precision for any n.
    With n = k (the paper's protocol: 10 samples, pass@10) it is 1.0 if any sample passed, else 0.0.
    """
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    prob_all_fail = 1.0
    for i in range(n - c + 1, n + 1):
        prob_all_fail *= 1.0 - k / i
    return 1.0 - prob_all_fail


# --------------------------------------------------------------------------------------------------------------
# Per-task outcomes and run aggregates


@dataclass(frozen=True)
class TaskOutcome:
    """One task in one evaluation run: ``n`` samples, ``c`` of them passing, and the MI of each passing sample
    that radon could score (a passing sample always parses, so in practice ``len(passing_mi) == c``)."""

    task_id: int
    n: int
    c: int
    passing_mi: tuple[float, ...]

    @property
    def mean_passing_mi(self) -> float | None:
        """Mean MI of this task's passing samples: the per-task term of the paper's average MI."""
        return sum(self.passing_mi) / len(self.passing_mi) if self.passing_mi else None

    def pass_at(self, k: int) -> float | None:
        """This task's unbiased pass@k estimate, or None when it has fewer than k samples."""
        return pass_at_k(self.n, self.c, k) if self.n >= k else None


def task_outcomes(task_ids: Iterable[int], passed: Iterable[bool],
                  mis: Iterable[float | None]) -> list[TaskOutcome]:
    """Group per-sample rows (three parallel sequences) into one :class:`TaskOutcome` per task, sorted by id.

    An MI of None or NaN (radon could not parse the code) is left out of the MI terms; such a sample still counts
    towards n and, if it passed, towards c.
    """
    counts: dict[int, list[int]] = {}
    passing_mi: dict[int, list[float]] = {}
    for tid, ok, mi in zip(task_ids, passed, mis, strict=True):
        tid = int(tid)
        entry = counts.setdefault(tid, [0, 0])
        passing_mi.setdefault(tid, [])
        entry[0] += 1
        if ok:
            entry[1] += 1
            if mi is not None and not math.isnan(float(mi)):
                passing_mi[tid].append(float(mi))
    return [TaskOutcome(tid, counts[tid][0], counts[tid][1], tuple(passing_mi[tid])) for tid in sorted(counts)]


def mean_pass_at_k(outcomes: Sequence[TaskOutcome], k: int) -> float | None:
    """pass@k of a run: the per-task unbiased estimates averaged over tasks (a fraction in [0, 1]).

    With n == k this is the share of tasks with at least one passing sample (the paper's pass@10 with n = 10).
    None when there are no tasks or some task has fewer than k samples (the estimator is undefined there).
    """
    values = [outcome.pass_at(k) for outcome in outcomes]
    if not values or any(value is None for value in values):
        return None
    return sum(values) / len(values)


def avg_mi_macro(outcomes: Sequence[TaskOutcome]) -> float | None:
    """The paper's average MI: over tasks with at least one passing (MI-scored) sample, the mean of the mean MI of
    that task's passing samples. Every solved task weighs the same, however many samples passed."""
    means = [outcome.mean_passing_mi for outcome in outcomes if outcome.passing_mi]
    return sum(means) / len(means) if means else None


def avg_mi_micro(outcomes: Sequence[TaskOutcome]) -> float | None:
    """Mean MI over all passing samples pooled: easy tasks, which pass more often, weigh more."""
    values = [mi for outcome in outcomes for mi in outcome.passing_mi]
    return sum(values) / len(values) if values else None


def aggregate_run(task_ids: Iterable[int], passed: Iterable[bool], mis: Iterable[float | None],
                  ks: Iterable[int] = (1, 10)) -> dict[str, Any]:
    """Every stage-3 number for one (variant, run) from its per-sample rows.

    Keys: ``pass_at_<k>`` for each k (fractions in [0, 1]; None where k exceeds a task's sample count),
    ``pass_rate`` (passing samples / samples), ``avg_mi_macro``, ``avg_mi_micro``, ``n_tasks``, ``n_tasks_solved``
    (tasks with at least one passing sample), ``n_samples`` and ``n_passing``.
    """
    outcomes = task_outcomes(task_ids, passed, mis)
    n_samples = sum(outcome.n for outcome in outcomes)
    n_passing = sum(outcome.c for outcome in outcomes)
    result: dict[str, Any] = {f"pass_at_{k}": mean_pass_at_k(outcomes, k) for k in ks}
    result.update({
        "pass_rate": n_passing / n_samples if n_samples else None,
        "avg_mi_macro": avg_mi_macro(outcomes),
        "avg_mi_micro": avg_mi_micro(outcomes),
        "n_tasks": len(outcomes),
        "n_tasks_solved": sum(outcome.c > 0 for outcome in outcomes),
        "n_samples": n_samples,
        "n_passing": n_passing,
    })
    return result
