"""``tables.md`` of the stage-3 report: Table 1 (mean ± sample std per variant), Table 2 (change against the
baseline, with tests) and Table 3 (the paper's numbers beside ours, or as context), as Markdown."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from common.config import REPO_ROOT, ConfigError
from common.evaluation.report.stats import Comparison, _float, mean_std, metric_label, metric_names, variant_stats

SUMMARY_CSV = "summary.csv"
PER_TASK_CSV = "per_task.csv"

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


def reference_section(config: Any, ours: Mapping[str, Mapping[str, tuple]]) -> str:
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


def benchmark_section(config: Any, benchmark: str, rows: Sequence[Mapping[str, Any]],
                      comparisons: Sequence[Comparison]) -> str:
    """Tables 1 and 2 of one more benchmark (``evaluation.benchmarks``): same columns and tests as MBPP's."""
    names = metric_names(config.evaluation.k, config.evaluation.metrics)
    stats = variant_stats(rows, names)
    n_tasks = sorted({row["n_tasks"] for row in rows})
    parts = [f"## {benchmark}: Table 1. per variant (mean ± sample std over runs; {'/'.join(map(str, n_tasks))} "
             f"tasks)", main_table(config.model.name, stats, names)]
    if comparisons:
        parts += [f"## {benchmark}: Table 2. Change against the baseline", comparison_table(comparisons)]
    return "\n\n".join(parts)


def build_tables_md(config: Any, rows: Sequence[Mapping[str, Any]], comparisons: Sequence[Comparison],
                    notes: Sequence[str], figures: Sequence[str], samples_folder: str,
                    more: Sequence[str] = (), title: str = "Stage 3 results") -> str:
    """The report; ``more``: sections of further benchmarks (``benchmark_section``), placed after MBPP's."""
    names = metric_names(config.evaluation.k, config.evaluation.metrics)
    stats = variant_stats(rows, names)
    s = config.sampling
    n_tasks = sorted({row["n_tasks"] for row in rows})
    seeds = sorted({row["seed"] for row in rows})
    parts = [
        f"# {title}: {config.model.name}",
        f"{'/'.join(map(str, n_tasks))} evaluation tasks × {s.num_samples} samples per task (temperature "
        f"{s.temperature}, top_p {s.top_p}, max_new_tokens {s.max_new_tokens}); seeds {seeds}. Per-run numbers: "
        f"`{SUMMARY_CSV}`; per-task numbers: `{PER_TASK_CSV}`; every sample: "
        f"`{samples_folder}/<variant>/run<r>`.",
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
    parts += list(more)
    if notes:
        parts += ["## Notes", "\n".join(f"- {note}" for note in notes)]
    if figures:
        parts += ["## Figures", "\n\n".join(f"![{name}]({name})" for name in figures)]
    return "\n\n".join(parts) + "\n"
