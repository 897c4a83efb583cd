"""Stage 3 report: the paper's table (mean ± sample std over runs), the change against the baseline with paired
tests, the paper's own numbers side by side, and the figures, all computed from the per-sample evaluation datasets.

``run_report(config, run_dir)`` writes under ``runs/<run>/report/``:

``summary.csv``  one row per model x variant x run. Columns:
    model            ``model.name`` of the config
    variant          baseline, dpo, dpo-further or an adapter path
    run              run number r (1-based); run r of every variant sampled with seed ``sampling.seed + r - 1``
    seed             that seed
    pass_at_<k>      one column per k in ``evaluation.k``: the unbiased pass@k estimator (Chen et al. 2021) of each
                     task, averaged over the tasks, in percent. With n = k samples (paper: pass@10, n = 10) it is the
                     share of tasks with at least one passing sample.
    pass_rate        passing samples / all samples, in percent (equals pass@1).
    avg_mi_macro     the paper's "average MI": over tasks with at least one passing sample, the mean of the mean
                     MI (radon, 0-100) of that task's passing samples. Every solved task weighs the same.
    avg_mi_micro     mean MI over all passing samples pooled (tasks that pass often weigh more).
    n_tasks          evaluation tasks in the run
    n_tasks_solved   tasks with at least one passing sample (= n_tasks x pass@n)
    n_samples        samples drawn (n_tasks x sampling.num_samples)
    n_passing        samples that passed every assert
    dataset          the per-sample dataset the row was computed from (relative to the run dir)

``per_task.csv``  one row per model x variant x run x task: n_samples, n_passing, mean_passing_mi (the terms the
    run metrics average; the per-task tests use them).
``tables.md``  Table 1 (mean ± sample std over runs per variant), Table 2 (change against the baseline: mean of
    the paired run differences, a paired t-test over runs paired by seed, a Wilcoxon signed-rank test over tasks
    pooled across runs, and how many tasks got better / worse), Table 3 (the paper's numbers for the same model
    side by side, or the paper's whole table as context when it did not evaluate this model).
``pass_and_mi.png``, ``mi_distribution.png``, ``training_curves.png`` (the last only when the adapters' training
    logs exist).

``docs_report.md`` at the repository root explains the same columns and tests for readers of the README.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from .artifacts import (ArtifactError, RunDir, is_complete, load_dataset_dir, read_manifest, record_config,
                        write_manifest)
from .config import REPO_ROOT, ConfigError, PipelineConfig
from .evaluation import ADAPTER_EVAL_STAGE, EVAL_STAGES, check_k, run_seed
from .metrics import TaskOutcome, aggregate_run, task_outcomes

TABLES_MD = "tables.md"
SUMMARY_CSV = "summary.csv"
PER_TASK_CSV = "per_task.csv"
METRICS_PNG = "pass_and_mi.png"
MI_PNG = "mi_distribution.png"
CURVES_PNG = "training_curves.png"
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

    @property
    def by_task(self) -> dict[int, TaskOutcome]:
        return {outcome.task_id: outcome for outcome in self.outcomes}


# --------------------------------------------------------------------------------------------------------------
# Loading


def collect_runs(config: PipelineConfig, run_dir: Path | str) -> tuple[list[RunResult], list[str]]:
    """Every finished evaluation run of the configured variants (runs 1..evaluation.runs) whose manifest matches
    this config; plus notes on the runs that are missing or stale."""
    run = RunDir(run_dir)
    results, notes = [], []
    for variant in config.evaluation.variants:
        stage = EVAL_STAGES.get(variant, ADAPTER_EVAL_STAGE)
        for r in range(1, config.evaluation.runs + 1):
            folder = run.evaluation(variant, r)
            manifest = read_manifest(folder)
            if manifest is None:
                notes.append(f"{variant} run {r}: not evaluated ({folder} missing)")
                continue
            if not is_complete(folder, config, stage) or manifest.get("seed") != run_seed(config, r):
                notes.append(f"{variant} run {r}: made by another config, left out (re-run `evaluate`)")
                continue
            columns = load_dataset_dir(folder).select_columns(["task_id", "passed", "mi"]).to_dict()
            outcomes = task_outcomes(columns["task_id"], columns["passed"], columns["mi"])
            metrics = aggregate_run(columns["task_id"], columns["passed"], columns["mi"], config.evaluation.k)
            results.append(RunResult(variant, r, run_seed(config, r), folder, outcomes, metrics, manifest))
    return results, notes


# --------------------------------------------------------------------------------------------------------------
# Numbers


def metric_names(ks: Iterable[int]) -> list[str]:
    """Table columns in order: pass@k for each k, then the two MI averages."""
    return [f"pass_at_{k}" for k in ks] + list(MI_METRICS)


def metric_label(name: str) -> str:
    if name.startswith("pass_at_"):
        return f"pass@{name[len('pass_at_'):]} (%)"
    return {"avg_mi_macro": "Avg MI (macro)", "avg_mi_micro": "Avg MI (micro)", "avg_mi": "Avg MI",
            "pass_rate": "pass rate (%)"}.get(name, name)


def display_value(name: str, value: float | None) -> float | None:
    """Fractions become percentages (the paper's unit); MI stays on radon's 0-100 scale."""
    if value is None:
        return None
    return 100.0 * value if name.startswith("pass_at_") or name == "pass_rate" else float(value)


def summary_rows(model: str, results: Sequence[RunResult], ks: Sequence[int], run_root: Path) -> list[dict]:
    rows = []
    for res in results:
        m = res.metrics
        row: dict[str, Any] = {"model": model, "variant": res.variant, "run": res.run, "seed": res.seed}
        for k in ks:
            row[f"pass_at_{k}"] = display_value(f"pass_at_{k}", m[f"pass_at_{k}"])
        row["pass_rate"] = display_value("pass_rate", m["pass_rate"])
        row.update({name: m[name] for name in MI_METRICS})
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


# --------------------------------------------------------------------------------------------------------------
# Reference numbers (the paper's reference/paper_results.csv: model, variant, run, pass_at_10, avg_mi)


def resolve_reference(path: str | None) -> Path | None:
    """``evaluation.reference_results`` as a path (a relative one is relative to the repository root)."""
    if not path:
        return None
    p = Path(path).expanduser()
    return p if p.is_absolute() else REPO_ROOT / p


def load_reference(path: Path) -> list[dict[str, Any]]:
    with Path(path).open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    required = {"model", "variant"}
    if rows and not required <= set(rows[0]):
        raise ConfigError(f"evaluation.reference_results {path}: needs columns {sorted(required)}, got {list(rows[0])}")
    return rows


def reference_stats(rows: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str], dict[str, tuple]]:
    """(model, variant) -> metric -> (mean, std, runs) for every numeric column of the reference CSV."""
    metrics = [name for name in (rows[0] if rows else {}) if name not in ("model", "variant", "run")]
    out: dict[tuple[str, str], dict[str, tuple]] = {}
    for key in dict.fromkeys((row["model"], row["variant"]) for row in rows):
        mine = [row for row in rows if (row["model"], row["variant"]) == key]
        out[key] = {name: mean_std([_float(row.get(name)) for row in mine]) for name in metrics}
    return out


def ours_for_reference(name: str) -> str:
    """Our column that a reference column reports: the paper's ``avg_mi`` is the macro average."""
    return "avg_mi_macro" if name == "avg_mi" else name


# --------------------------------------------------------------------------------------------------------------
# Markdown


def fmt_mean_std(stat: tuple | None, digits: int = 2) -> str:
    if not stat or stat[0] is None:
        return "n/a"
    mean, std, _ = stat
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if std is not None else f"{mean:.{digits}f}"


def fmt_p(p: float | None) -> str:
    if p is None or math.isnan(p):
        return "n/a"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _diff(a: tuple | None, b: tuple | None) -> float | None:
    """Difference of two (mean, std, n) means, None when either is missing."""
    if not a or not b or a[0] is None or b[0] is None:
        return None
    return a[0] - b[0]


def fmt_delta(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.2f}"


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def main_table(model: str, stats: Mapping[str, Mapping[str, tuple]], names: Sequence[str]) -> str:
    header = ["Model", "Variant", "Runs", *[metric_label(name) for name in names]]
    rows = []
    for variant, by_metric in stats.items():
        runs = max((stat[2] for stat in by_metric.values()), default=0)
        rows.append([model, variant, runs, *[fmt_mean_std(by_metric[name]) for name in names]])
    return markdown_table(header, rows)


COMPARISON_CAPTION = (
    "Δ: the variant minus the baseline, averaged over runs paired by seed (run r of every variant sampled with "
    "seed `sampling.seed + r - 1`), in the table's units. p (runs): two-sided paired t-test over those runs "
    "(`scipy.stats.ttest_rel`; needs 2 or more runs, n/a when the differences are constant). p (tasks): two-sided "
    "Wilcoxon signed-rank test over evaluation tasks (`scipy.stats.wilcoxon`, zero differences dropped), each task's "
    "value pooled across the paired runs: for pass@k the task's unbiased pass@k estimate averaged over the runs, "
    "for MI the mean MI of all its passing samples in those runs (only tasks with a passing sample under both "
    "variants). Tasks are the independent units here, so this test has far more power than the run-level one, "
    "which has only as many pairs as runs. better / worse: tasks whose per-task value rose / fell (ties omitted); "
    "`avg_mi_micro` has no per-task form and gets only the run-level test."
)


def comparison_table(comparisons: Sequence[Comparison]) -> str:
    header = ["Variant", "Metric", "Δ vs baseline", "Paired runs", "p (runs, paired t)", "p (tasks, Wilcoxon)",
              "Tasks better / worse (of compared)"]
    rows = []
    for c in comparisons:
        tasks = "—" if c.metric == "avg_mi_micro" else f"{c.better} / {c.worse} (of {c.n_tasks})"
        rows.append([c.variant, metric_label(c.metric), fmt_delta(c.delta), c.n_pairs, fmt_p(c.p_runs),
                     "—" if c.metric == "avg_mi_micro" else fmt_p(c.p_tasks), tasks])
    return markdown_table(header, rows)


def reference_section(config: PipelineConfig, ours: Mapping[str, Mapping[str, tuple]]) -> str:
    """Table 3: the paper's numbers beside ours (same model), or the paper's whole table as context."""
    path = resolve_reference(config.evaluation.reference_results)
    if path is None:
        return ""
    if not path.is_file():
        return f"## Table 3. Reference numbers\n\n`evaluation.reference_results` not found: {path}\n"
    rows = load_reference(path)
    ref = reference_stats(rows)
    ref_metrics = [name for name in (rows[0] if rows else {}) if name not in ("model", "variant", "run")]
    model = config.evaluation.reference_model or config.model.name
    variants = [v for (m, v) in ref if m == model]
    source = config.evaluation.reference_results
    if variants:
        header = ["Variant"]
        for name in ref_metrics:
            label = metric_label(ours_for_reference(name))
            header += [f"{label} ours", f"{label} paper", "Δ vs baseline (ours / paper)"]
        body = []
        for variant in dict.fromkeys([*ours, *variants]):
            line = [variant]
            for name in ref_metrics:
                mine = ours.get(variant, {}).get(ours_for_reference(name))
                theirs = ref.get((model, variant), {}).get(name)
                mine_base = ours.get("baseline", {}).get(ours_for_reference(name))
                theirs_base = ref.get((model, "baseline"), {}).get(name)
                deltas = "—" if variant == "baseline" else \
                    f"{fmt_delta(_diff(mine, mine_base))} / {fmt_delta(_diff(theirs, theirs_base))}"
                line += [fmt_mean_std(mine), fmt_mean_std(theirs), deltas]
            body.append(line)
        caption = (f"Ours (this run, model `{config.model.name}`) beside the paper's `{model}` (`{source}`; mean ± "
                   f"sample std over its runs). The paper's avg MI is the macro average. Δ vs baseline: each side's "
                   f"variant mean minus its own baseline mean — the effect of the fine-tuning, which is what should "
                   f"reproduce even where absolute numbers differ (hardware, library versions, sampling seeds). "
                   f"\"n/a\" under ours: not computed in this run (e.g. that k is not in `evaluation.k`, or the "
                   f"variant was not evaluated).")
        return f"## Table 3. Ours vs the paper ({model})\n\n{markdown_table(header, body)}\n\n{caption}\n"
    header = ["Model (paper)", "Variant", "Runs", *[metric_label(name) for name in ref_metrics]]
    body = [[m, v, max((s[2] for s in by.values()), default=0), *[fmt_mean_std(by[name]) for name in ref_metrics]]
            for (m, v), by in ref.items()]
    caption = (f"Context only: the paper did not evaluate `{model}`, so these are the paper's numbers for its own "
               f"models (`{source}`; mean ± sample std over its runs), not a comparison with ours.")
    return (f"## Table 3. The paper's results, all models (context only — not `{model}`)\n\n"
            f"{markdown_table(header, body)}\n\n{caption}\n")


def build_tables_md(config: PipelineConfig, rows: Sequence[Mapping[str, Any]], comparisons: Sequence[Comparison],
                    notes: Sequence[str], figures: Sequence[str]) -> str:
    names = metric_names(config.evaluation.k)
    stats = variant_stats(rows, names)
    s = config.sampling
    n_tasks = sorted({row["n_tasks"] for row in rows})
    seeds = sorted({row["seed"] for row in rows})
    parts = [
        f"# Stage 3 results: {config.model.name}",
        f"{'/'.join(map(str, n_tasks))} evaluation tasks × {s.num_samples} samples per task (temperature "
        f"{s.temperature}, top_p {s.top_p}, max_new_tokens {s.max_new_tokens}); seeds {seeds}. Per-run numbers: "
        f"`{SUMMARY_CSV}`; per-task numbers: `{PER_TASK_CSV}`; every sample: `stage3/samples/<variant>/run<r>`.",
        "## Table 1. pass@k and average MI per variant (mean ± sample std over runs)",
        main_table(config.model.name, stats, names),
        "pass@k: the unbiased estimator 1 − C(n−c, k)/C(n, k) per task (n samples, c passing), averaged over tasks, "
        "in percent; with k = n it is the share of tasks with at least one passing sample (the paper's pass@10). "
        "Avg MI (macro): the paper's average MI — for each task with a passing sample, the mean Maintainability Index "
        "(radon, 0–100) of its passing samples, averaged over those tasks. Avg MI (micro): the mean MI over all "
        "passing samples. ± is the sample standard deviation (ddof = 1) over runs; absent with a single run.",
    ]
    if comparisons:
        parts += ["## Table 2. Change against the baseline", comparison_table(comparisons), COMPARISON_CAPTION]
    reference = reference_section(config, stats)
    if reference:
        parts.append(reference.rstrip("\n"))
    if notes:
        parts += ["## Notes", "\n".join(f"- {note}" for note in notes)]
    if figures:
        parts += ["## Figures", "\n\n".join(f"![{name}]({name})" for name in figures)]
    return "\n\n".join(parts) + "\n"


# --------------------------------------------------------------------------------------------------------------
# Figures


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_metrics(rows: Sequence[Mapping[str, Any]], names: Sequence[str], out_png: Path, title: str) -> Path:
    """One panel per metric: each variant's mean with a ± sample-std error bar, and its runs as dots."""
    plt = _pyplot()
    variants = list(dict.fromkeys(row["variant"] for row in rows))
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names) + 0.5, 3.8), squeeze=False)
    for ax, name in zip(axes[0], names):
        for x, variant in enumerate(variants):
            values = [row[name] for row in rows if row["variant"] == variant and row.get(name) is not None]
            mean, std, _ = mean_std(values)
            if mean is None:
                continue
            ax.scatter([x] * len(values), values, s=12, alpha=0.5, color="gray", zorder=2)
            ax.errorbar([x], [mean], yerr=[std or 0.0], fmt="o", capsize=6, markersize=7, zorder=3)
        ax.set_xticks(range(len(variants)))
        ax.set_xticklabels([_short(v) for v in variants], rotation=20)
        ax.set_title(metric_label(name))
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png


def plot_mi_distributions(results: Sequence[RunResult], out_png: Path, title: str) -> Path:
    """Histogram (density, step) of the MI of every passing sample per variant, pooled over runs."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    bins = [x * 2.5 for x in range(41)]
    drawn = False
    for variant in dict.fromkeys(res.variant for res in results):
        mis = [mi for res in results if res.variant == variant for o in res.outcomes for mi in o.passing_mi]
        if not mis:
            continue
        ax.hist(mis, bins=bins, histtype="step", linewidth=1.6, density=True,
                label=f"{_short(variant)} (n={len(mis)}, mean {statistics.fmean(mis):.2f})")
        drawn = True
    if drawn:
        ax.legend(fontsize=8)
        low = min(mi for res in results for o in res.outcomes for mi in o.passing_mi)
        ax.set_xlim(max(0.0, low - 5.0), 100.5)  # MI of working code clusters in 50-100; do not waste the axis
    else:
        ax.text(0.5, 0.5, "no passing solutions", ha="center", va="center", transform=ax.transAxes, color="gray")
    ax.set_xlabel("Maintainability Index of passing solutions (radon, 0-100)")
    ax.set_ylabel("density")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png


def plot_training(run: RunDir, out_png: Path) -> Path | None:
    """The DPO training curves of both adapters (stage 1c and 2c) when their ``training_log.csv`` exist."""
    logs = {label: folder / "training_log.csv"
            for label, folder in (("dpo", run.dpo_adapter), ("dpo-further", run.dpo_further_adapter))}
    logs = {label: path for label, path in logs.items() if path.is_file()}
    if not logs:
        return None
    try:
        from .training_logs import plot_training_curves
    except ImportError:
        from .training import plot_training_curves
    return Path(plot_training_curves(logs, out_png))


def _short(variant: str) -> str:
    return variant if len(variant) <= 18 else "…" + variant[-17:]


# --------------------------------------------------------------------------------------------------------------
# The stage


def run_report(config: PipelineConfig, run_dir: Path | str, force: bool = False) -> Path:
    """Tables and figures from every finished evaluation run; returns the report folder and prints the tables."""
    run = RunDir(run_dir)
    record_config(run, config)
    check_k(config)
    results, notes = collect_runs(config, run.root)
    if not results:
        raise ArtifactError(f"report: no finished evaluation runs under {run.path('stage3', 'samples')} for this "
                            f"config; run `python -m common evaluate --run-dir {run.root}` first")
    inputs = [[res.variant, res.run, res.manifest.get("fingerprint"),
               res.manifest.get("uid", res.manifest.get("created"))] for res in results]
    out = run.report
    manifest = read_manifest(out)
    if (not force and is_complete(out, config, "report") and manifest.get("inputs") == inputs
            and (out / TABLES_MD).is_file()):
        print(f"[report] up to date: {out}")
        print_table(run.root)
        return out
    out.mkdir(parents=True, exist_ok=True)
    ks, names, model = list(config.evaluation.k), metric_names(config.evaluation.k), config.model.name
    rows = summary_rows(model, results, ks, run.root)
    _write_csv(out / SUMMARY_CSV, rows)
    _write_csv(out / PER_TASK_CSV, [
        {"model": model, "variant": res.variant, "run": res.run, "task_id": o.task_id, "n_samples": o.n,
         "n_passing": o.c, "mean_passing_mi": o.mean_passing_mi}
        for res in results for o in res.outcomes])
    comparisons = compare_to_baseline(results, names)
    if "baseline" in config.evaluation.variants and not any(res.variant == "baseline" for res in results):
        notes.append("no finished baseline run: Table 2 (change against the baseline) left out")

    further = read_manifest(run.dpo_further_adapter) or {}
    if further.get("skipped_training") and "dpo-further" in config.evaluation.variants:
        notes.append("dpo-further was not trained: self-generation produced no pairs, so it is the -dpo adapter "
                     "unchanged (its rows differ from dpo only by sampling noise)")

    figures = [plot_metrics(rows, names, out / METRICS_PNG, f"{model}: mean ± sample std over runs").name,
               plot_mi_distributions(results, out / MI_PNG, f"{model}: MI of passing solutions").name]
    curves = plot_training(run, out / CURVES_PNG)
    if curves is not None:
        figures.append(curves.name)
    else:
        notes.append("no training_log.csv beside the adapters: training curves not drawn")
    (out / TABLES_MD).write_text(build_tables_md(config, rows, comparisons, notes, figures))
    (out / "comparisons.json").write_text(json.dumps([c.__dict__ for c in comparisons], indent=2))
    write_manifest(out, config, "report", extra={"inputs": inputs, "figures": figures})
    print(f"[report] {len(results)} evaluation run(s) -> {out}")
    print_table(run.root)
    return out


def print_table(run_dir: Path | str) -> str:
    """Print the report's tables (``tables.md`` without the figure links) and return that text."""
    path = RunDir(run_dir).report / TABLES_MD
    if not path.is_file():
        text = f"(no report yet: {path} missing; run `python -m common report`)"
    else:
        text = path.read_text().split("\n## Figures", 1)[0].rstrip() + "\n"
    print(text)
    return text


def _write_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({key: _csv_value(row.get(key)) for key in columns})


def _csv_value(value: Any) -> Any:
    if isinstance(value, float):
        return f"{value:.6g}" if not math.isnan(value) else ""
    return "" if value is None else value


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
