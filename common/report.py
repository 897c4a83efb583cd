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

``docs/evaluation.md`` explains the same columns and tests for readers of the README. The numbers are computed in
``report_stats``, formatted in ``report_tables`` and drawn in ``report_figures``; this module loads the runs and
writes the files.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from .artifacts import (ArtifactError, RunDir, is_complete, load_dataset_dir, read_manifest, record_config,
                        write_manifest)
from .config import PipelineConfig
from .evaluation import ADAPTER_EVAL_STAGE, EVAL_STAGES, check_k, run_seed
from .metrics import aggregate_run, task_outcomes
from .report_figures import plot_metrics, plot_mi_distributions, plot_training
from .report_stats import RunResult, compare_to_baseline, metric_names, summary_rows
from .report_tables import PER_TASK_CSV, SUMMARY_CSV, build_tables_md

TABLES_MD = "tables.md"
METRICS_PNG = "pass_and_mi.png"
MI_PNG = "mi_distribution.png"
CURVES_PNG = "training_curves.png"


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
