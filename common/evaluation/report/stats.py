"""The numbers of the stage-3 report: per-run summary rows, mean ± sample std per variant, per-task values, and
the change of each variant against the baseline with a paired t-test over runs and a Wilcoxon test over tasks.

The columns are documented in ``common/report.py``; ``common/report_tables.py`` formats them.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from common.evaluation.metrics import TaskOutcome

MI_METRICS = ("avg_mi_macro", "avg_mi_micro")


@dataclass
class RunResult:
    """One finished (variant, run): its per-task outcomes and the run metrics (pass@k as fractions)."""

    variant: str
    run: int
    seed: int
    folder: Path
    outcomes: list[TaskOutcome]
    metrics: dict[str, Any]
    manifest: dict[str, Any] = field(default_factory=dict)
    benchmark: str = "mbpp"

    @property
    def by_task(self) -> dict[int, TaskOutcome]:
        return {outcome.task_id: outcome for outcome in self.outcomes}




# What each optional scorer (``evaluation.metrics``, common/evaluation/scorers.py) adds as table columns.
EXTRA_COLUMNS = {"exec": ("exec_at_{k}",), "compile": ("compile_at_{k}",), "pass_ratio": ("avg_pass_ratio",),
                 "pylint": ("pylint_score",), "bleu": ("bleu",), "codebleu": ("codebleu",),
                 "bertscore": ("bertscore_f1",)}
_RATES = ("pass_at_", "exec_at_", "compile_at_")


def extra_metric_names(ks: Iterable[int], metrics: Iterable[str] = ()) -> list[str]:
    names = []
    for metric in metrics:
        for pattern in EXTRA_COLUMNS.get(metric, ()):
            names += [pattern.format(k=k) for k in ks] if "{k}" in pattern else [pattern]
    return names


def metric_names(ks: Iterable[int], metrics: Iterable[str] = ()) -> list[str]:
    """Table columns in order: pass@k for each k, the two MI averages, then the optional scorers' columns."""
    ks = list(ks)
    return [f"pass_at_{k}" for k in ks] + list(MI_METRICS) + extra_metric_names(ks, metrics)


def metric_label(name: str) -> str:
    for prefix in _RATES:
        if name.startswith(prefix):
            return f"{prefix[:-4]}@{name[len(prefix):]} (%)"
    return {"avg_mi_macro": "Avg MI (macro)", "avg_mi_micro": "Avg MI (micro)", "avg_mi": "Avg MI",
            "pass_rate": "pass rate (%)", "avg_pass_ratio": "tests passed (%)", "pylint_score": "pylint (/10)",
            "bleu": "BLEU", "codebleu": "CodeBLEU", "bertscore_f1": "BERTScore F1"}.get(name, name)


def display_value(name: str, value: float | None) -> float | None:
    """Fractions become percentages (the paper's unit); MI stays on radon's 0-100 scale."""
    if value is None:
        return None
    rate = name.startswith(_RATES) or name in ("pass_rate", "avg_pass_ratio")
    return 100.0 * value if rate else float(value)


def summary_rows(model: str, results: Sequence[RunResult], ks: Sequence[int], run_root: Path,
                 metrics: Sequence[str] = (), with_benchmark: bool = False) -> list[dict]:
    rows = []
    for res in results:
        m = res.metrics
        row: dict[str, Any] = {"model": model, "variant": res.variant, "run": res.run, "seed": res.seed}
        if with_benchmark:
            row = {"model": model, "benchmark": res.benchmark, **{k: v for k, v in row.items() if k != "model"}}
        for k in ks:
            row[f"pass_at_{k}"] = display_value(f"pass_at_{k}", m[f"pass_at_{k}"])
        row["pass_rate"] = display_value("pass_rate", m["pass_rate"])
        row.update({name: m[name] for name in MI_METRICS})
        row.update({name: display_value(name, m.get(name)) for name in extra_metric_names(ks, metrics)})
        row.update({name: m[name] for name in ("n_tasks", "n_tasks_solved", "n_samples", "n_passing")})
        row["dataset"] = _relative(res.folder, run_root)
        rows.append(row)
    return rows


def mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None, int]:
    """Mean and sample standard deviation (ddof = 1; None with fewer than 2 values) of the non-missing values."""
    present = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not present:
        return None, None, 0
    return statistics.fmean(present), (statistics.stdev(present) if len(present) > 1 else None), len(present)


def variant_stats(rows: Sequence[Mapping[str, Any]], names: Sequence[str]) -> dict[str, dict[str, tuple]]:
    """variant -> metric -> (mean, std, runs) over the summary rows (display units)."""
    out: dict[str, dict[str, tuple]] = {}
    for variant in dict.fromkeys(row["variant"] for row in rows):
        mine = [row for row in rows if row["variant"] == variant]
        out[variant] = {name: mean_std([row.get(name) for row in mine]) for name in names}
    return out


def per_task_values(results: Sequence[RunResult], metric: str, tasks: Iterable[int] | None = None) -> dict[int, float]:
    """One number per task from several runs of one variant: the task's pass@k estimate averaged over the runs,
    or (MI metrics) the mean MI of all the task's passing samples pooled over the runs (tasks with none left out)."""
    values: dict[int, float] = {}
    task_ids = sorted(set(tasks) if tasks is not None else {o.task_id for res in results for o in res.outcomes})
    for tid in task_ids:
        outcomes = [res.by_task[tid] for res in results if tid in res.by_task]
        if not outcomes:
            continue
        if metric.startswith("pass_at_"):
            k = int(metric[len("pass_at_"):])
            estimates = [o.pass_at(k) for o in outcomes]
            if all(e is not None for e in estimates):
                values[tid] = statistics.fmean(estimates)
        else:
            mis = [mi for o in outcomes for mi in o.passing_mi]
            if mis:
                values[tid] = statistics.fmean(mis)
    return values


@dataclass
class Comparison:
    """A variant against the baseline on one metric (display units)."""

    variant: str
    metric: str
    delta: float | None  # mean over paired runs of (variant - baseline)
    n_pairs: int
    p_runs: float | None  # paired t-test over runs paired by seed
    p_tasks: float | None  # Wilcoxon signed-rank over tasks (None for avg_mi_micro: no per-task counterpart)
    n_tasks: int  # tasks entering the per-task test (before zero differences are dropped)
    better: int
    worse: int


def compare_to_baseline(results: Sequence[RunResult], names: Sequence[str],
                        baseline: str = "baseline") -> list[Comparison]:
    """Paired comparisons of every other variant with ``baseline``.

    Runs are paired by run number, i.e. by seed (run r of each variant sampled with the same seed). The run-level
    test is a two-sided paired t-test on the run metrics (``scipy.stats.ttest_rel``). The task-level test pools the
    paired runs: each task gets one value per variant (``per_task_values``) and a two-sided Wilcoxon signed-rank
    test (``scipy.stats.wilcoxon``, zero differences dropped) compares them over the tasks both variants have a
    value for. ``avg_mi_micro`` has no per-task form, so only its run-level test is given.
    """
    from scipy import stats

    base_runs = {res.run: res for res in results if res.variant == baseline}
    comparisons = []
    if not base_runs:
        return comparisons
    for variant in dict.fromkeys(res.variant for res in results if res.variant != baseline):
        runs = {res.run: res for res in results if res.variant == variant}
        paired = sorted(set(runs) & set(base_runs))
        mine = [runs[r] for r in paired]
        theirs = [base_runs[r] for r in paired]
        for name in names:
            a = [display_value(name, res.metrics.get(name)) for res in mine]
            b = [display_value(name, res.metrics.get(name)) for res in theirs]
            pairs = [(x, y) for x, y in zip(a, b) if x is not None and y is not None]
            delta = statistics.fmean(x - y for x, y in pairs) if pairs else None
            p_runs = None
            if len(pairs) >= 2:
                diffs = [x - y for x, y in pairs]
                if statistics.pstdev(diffs) > 1e-12:  # constant differences make t undefined
                    p_runs = float(stats.ttest_rel([x for x, _ in pairs], [y for _, y in pairs]).pvalue)
            p_tasks, n_tasks, better, worse = None, 0, 0, 0
            if name != "avg_mi_micro" and mine:
                va, vb = per_task_values(mine, name), per_task_values(theirs, name)
                common = sorted(set(va) & set(vb))
                n_tasks = len(common)
                diffs = [va[t] - vb[t] for t in common]
                better = sum(d > 1e-12 for d in diffs)
                worse = sum(d < -1e-12 for d in diffs)
                if better + worse:
                    p_tasks = float(stats.wilcoxon([va[t] for t in common], [vb[t] for t in common],
                                                   zero_method="wilcox", alternative="two-sided").pvalue)
            comparisons.append(Comparison(variant, name, delta, len(pairs), p_runs, p_tasks, n_tasks, better, worse))
    return comparisons


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _relative(path: Path, root: Path) -> str:
    try:
        return Path(path).resolve().relative_to(Path(root).resolve()).as_posix()
    except ValueError:
        return str(path)
