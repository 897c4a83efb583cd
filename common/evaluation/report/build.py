"""Stage 3 report: the paper's table (mean ± sample std over runs), the change against the baseline with paired
tests, the paper's own numbers side by side, and the figures, all computed from the per-sample evaluation datasets.

Stage ``report`` writes under ``runs/<run>/3_evaluation/report/``, from the evaluation units that the ``evaluate``
manifest lists (so it never mixes in a stale run):

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
``stats.py``, formatted in ``tables.py`` and drawn in ``figures.py``; this module loads the runs and
writes the files.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from common.config import ConfigError
from common.evaluation.metrics import aggregate_run, task_outcomes
from common.evaluation.report.figures import plot_metrics, plot_mi_distributions, plot_training
from common.evaluation.report.stats import RunResult, compare_to_baseline, metric_names, summary_rows
from common.evaluation.report.tables import PER_TASK_CSV, SUMMARY_CSV, benchmark_section, build_tables_md
from common.pipeline.artifacts import RunDir, load_dataset_dir, read_manifest
from common.pipeline.registry import BASELINE

TABLES_MD = "tables.md"
METRICS_PNG = "pass_and_mi.png"
MI_PNG = "mi_distribution.png"
CURVES_PNG = "training_curves.png"
TRAINING_LOG = "training_log.csv"


# --------------------------------------------------------------------------------------------------------------
# Loading


def collect_runs(samples_dir: Path, samples_manifest: Mapping[str, Any], ks: Sequence[int],
                 metrics: Sequence[str] = ("pass", "mi"), options: Mapping[str, Any] | None = None
                 ) -> list[RunResult]:
    """The evaluation units listed by the ``evaluate`` manifest, loaded and aggregated; scorers beyond the paper's
    pass@k and MI (``evaluation.metrics``) are computed by ``scorers.score_records``, as ``score`` does."""
    from common.evaluation.sampling import DEFAULT_BENCHMARK, TASKS, benchmark_prefix
    from common.evaluation.scorers import score_records

    extra = [m for m in metrics if m not in ("pass", "mi")]
    references: dict[str, dict[int, str]] = {}
    results = []
    for unit in samples_manifest.get("units", []):
        folder = Path(samples_dir) / unit["folder"]
        benchmark = unit.get("benchmark", DEFAULT_BENCHMARK)
        manifest = read_manifest(folder)
        if manifest is None or manifest.get("uid") != unit["uid"]:
            raise ConfigError(f"report: {folder} is not the evaluation run the evaluate manifest lists; re-run "
                              f"`evaluate`")
        dataset = load_dataset_dir(folder)
        columns = dataset.select_columns(["task_id", "passed", "mi"]).to_dict()
        outcomes = task_outcomes(columns["task_id"], columns["passed"], columns["mi"])
        metrics_row = aggregate_run(columns["task_id"], columns["passed"], columns["mi"], ks)
        if extra:
            if benchmark not in references:
                tasks = load_dataset_dir(Path(samples_dir) / f"{benchmark_prefix(benchmark)}{TASKS}")
                references[benchmark] = {int(t["task_id"]): t["code"] for t in tasks}
            records = [{**row, "reference": references[benchmark].get(int(row["task_id"]))} for row in dataset]
            metrics_row.update({k: v for k, v in score_records(records, ks, extra, options).items()
                                if k not in ("n_tasks", "n_samples")})
        results.append(RunResult(unit["variant"], unit["run"], unit["seed"], folder, outcomes, metrics_row, manifest,
                                 benchmark))
    return results


def evaluated_adapters(run: RunDir, samples_manifest: Mapping[str, Any]) -> dict[str, Path]:
    """variant -> adapter folder, for the adapter stages that ``evaluate`` read (its ``variant:<name>`` inputs)."""
    inputs = samples_manifest.get("inputs", {})
    return {role.split(":", 1)[1]: run.stage_dir(entry["stage"]) for role, entry in inputs.items()
            if role.startswith("variant:")}


# --------------------------------------------------------------------------------------------------------------
# The stage


def run_report(ctx: Any) -> dict[str, Any]:
    """Tables and figures from every evaluation unit (``run`` and the ``report`` command print the tables)."""
    from common.evaluation.sampling import check_k

    config = ctx.config
    check_k(config)
    samples_manifest = ctx.input_manifests["samples"]
    results = collect_runs(ctx.input("samples"), samples_manifest, config.evaluation.k, list(config.evaluation.metrics),
                           report_options(config))
    adapters = evaluated_adapters(ctx.run, samples_manifest)
    notes = carried_over_notes(adapters, results)
    samples_folder = ctx.input("samples").relative_to(ctx.run.root).as_posix()
    figures = write_report(config, results, ctx.output, ctx.run.root, adapters, notes, samples_folder)
    ctx.log(f"{len(results)} evaluation run(s) -> {ctx.output}")
    return {"figures": figures}


def report_options(config: Any) -> dict[str, Any]:
    return {"bertscore_model": config.evaluation.bertscore_model,
            "bertscore_layers": config.evaluation.bertscore_layers}


def carried_over_notes(adapters: Mapping[str, Path], results: Sequence[RunResult]) -> list[str]:
    """A note for each evaluated adapter that was carried over untrained (its input had no rows)."""
    notes = []
    for variant, folder in adapters.items():
        manifest = read_manifest(folder) or {}
        if manifest.get("skipped_training"):
            continued = Path(manifest.get("init_adapter", "")).name
            reused = any((res.manifest.get("reused_from") or {}).get("variant") for res in results
                         if res.variant == variant)
            how = (f"its evaluation reuses {continued}'s samples, so its rows equal {continued}'s" if reused else
                   f"its rows differ from {continued} only by sampling noise")
            notes.append(f"{variant} was not trained: its input had no pairs, so it is the {continued} adapter "
                         f"unchanged ({how})")
    return notes


def write_report(config: Any, results: Sequence[RunResult], out: Path, run_root: Path, adapters: Mapping[str, Path],
                 notes: Sequence[str], samples_folder: str, *, columns: Mapping[str, Mapping[str, Any]] | None = None,
                 title: str = "Stage 3 results") -> list[str]:
    """Write summary.csv, per_task.csv, tables.md, comparisons.json and the figures for ``results`` (the stage-3
    report and the study's). ``columns``: variant -> extra leading columns of its summary rows (a study's arm,
    method and signal); ``adapters``: variant -> adapter folder, for the training curves. Returns the figures."""
    out.mkdir(parents=True, exist_ok=True)
    notes = list(notes)
    metrics = list(config.evaluation.metrics)
    ks, names, model = list(config.evaluation.k), metric_names(config.evaluation.k, metrics), config.model.name
    order = [b for b in config.evaluation.benchmarks if any(r.benchmark == b for r in results)]
    benchmarks = order + sorted({r.benchmark for r in results} - set(order))
    multi = benchmarks != ["mbpp"]  # an MBPP-only report keeps the paper's layout, column for column
    all_rows = summary_rows(model, results, ks, run_root, metrics, with_benchmark=multi)
    if columns:
        all_rows = [{**columns.get(row["variant"], {}), **row} for row in all_rows]
    _write_csv(out / SUMMARY_CSV, all_rows)
    _write_csv(out / PER_TASK_CSV, [
        {"model": model, **({"benchmark": res.benchmark} if multi else {}), "variant": res.variant, "run": res.run,
         "task_id": o.task_id, "n_samples": o.n, "n_passing": o.c, "mean_passing_mi": o.mean_passing_mi}
        for res in results for o in res.outcomes])
    primary = benchmarks[0] if benchmarks else "mbpp"
    rows = [row for row, res in zip(all_rows, results) if res.benchmark == primary]
    main_results = [res for res in results if res.benchmark == primary]
    comparisons = compare_to_baseline(main_results, names)
    more = []
    for benchmark in benchmarks[1:]:
        group = [res for res in results if res.benchmark == benchmark]
        group_rows = [row for row, res in zip(all_rows, results) if res.benchmark == benchmark]
        more.append(benchmark_section(config, benchmark, group_rows, compare_to_baseline(group, names)))
    if not any(res.variant == BASELINE for res in results):
        notes.append("no baseline was evaluated: Table 2 (change against the baseline) left out")

    heading = model if not multi else f"{model} on {primary}"
    figures = [plot_metrics(rows, names, out / METRICS_PNG, f"{heading}: mean ± sample std over runs").name,
               plot_mi_distributions(main_results, out / MI_PNG, f"{heading}: MI of passing solutions").name]
    logs = {variant: folder / TRAINING_LOG for variant, folder in adapters.items() if (folder / TRAINING_LOG).is_file()}
    if logs:
        figures.append(plot_training(logs, out / CURVES_PNG).name)
    elif adapters:
        notes.append("no training_log.csv beside the adapters: training curves not drawn")
    (out / TABLES_MD).write_text(build_tables_md(config, rows, comparisons, notes, figures, samples_folder, more,
                                                 title=title))
    (out / "comparisons.json").write_text(json.dumps([c.__dict__ for c in comparisons], indent=2))
    return figures


def print_table(report_dir: Path | str) -> str:
    """Print the report's tables (``tables.md`` without the figure links) and return that text."""
    path = Path(report_dir) / TABLES_MD
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
