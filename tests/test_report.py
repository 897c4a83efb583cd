"""Stage 3 report: summary.csv, the tables (mean ± std, change against baseline with paired tests, the paper's
numbers) and the figures, from synthetic per-sample evaluation datasets written to a real run directory."""

import csv
import statistics

import pytest
from datasets import Dataset

from common.config import load_config
from common.evaluation.report.build import (CURVES_PNG, METRICS_PNG, MI_PNG, PER_TASK_CSV, SUMMARY_CSV, TABLES_MD,
                                            collect_runs, print_table)
from common.evaluation.sampling import run_seed
from common.pipeline.artifacts import ArtifactError, RunDir, read_manifest, save_dataset, write_manifest
from common.pipeline.runner import run_stage, write_stage_manifest
from common.evaluation.report.stats import compare_to_baseline, mean_std
from common.evaluation.report.tables import fmt_mean_std
from tests.helpers import REPO

PAPER_CSV = REPO / "common" / "resources" / "paper_results.csv"  # committed copy: fresh clones have no ../shared
SHARED_PAPER_CSV = REPO.parent / "shared" / "reference" / "paper_results.csv"
N_TASKS, N = 20, 4


def make_config(tmp_path, *extra):
    return load_config(REPO / "configs" / "smoke.yaml",
                       [f"sampling.num_samples={N}", "evaluation.k=[1,4]", "evaluation.runs=3",
                        "evaluation.variants=[baseline,dpo]", *extra])


def write_run(run, config, variant, r, passes_per_task, mi_of):
    """A finished evaluation run on disk: task t gets passes_per_task(t) passing samples (of N), MI mi_of(t, i)."""
    rows = []
    for tid in range(1, N_TASKS + 1):
        c = passes_per_task(tid)
        for i in range(N):
            passed = i < c
            rows.append({"key": str(tid), "sample_index": i, "task_id": tid, "text": "x", "code": f"# {tid} {i}",
                         "finish_reason": "stop", "num_tokens": 3, "passed": passed,
                         "status": "passed" if passed else "failed", "detail": "", "duration": 0.01,
                         "mi": float(mi_of(tid, i)), "variant": variant, "run": r, "seed": run_seed(config, r)})
    folder = run.stage_dir("evaluate") / variant / f"run{r}"
    save_dataset(Dataset.from_list(rows), folder)
    write_manifest(folder, "evaluate", "unit", extra={"variant": variant, "run": r, "seed": run_seed(config, r)})


def finish_evaluation(run, config):
    """The evaluate stage's manifest over the units on disk (what the evaluate stage writes when it finishes)."""
    units = []
    for variant in config.evaluation.variants:
        for r in range(1, config.evaluation.runs + 1):
            folder = run.stage_dir("evaluate") / variant / f"run{r}"
            units.append({"variant": variant, "run": r, "seed": run_seed(config, r), "folder": f"{variant}/run{r}",
                          "uid": read_manifest(folder)["uid"]})
    write_stage_manifest(run, config, "evaluate", {"units": units})


def run_report(config, run_dir):
    return run_stage("report", config, run_dir)


def baseline_passes(r):
    return lambda tid: (tid + r) % 3  # 0, 1 or 2 passing samples of 4


def dpo_passes(r):
    return lambda tid: min(N, (tid + r) % 3 + 1)  # one more than the baseline on every task


@pytest.fixture
def populated(tmp_path):
    config = make_config(tmp_path)
    run = RunDir(tmp_path / "run")
    for r in (1, 2, 3):
        write_run(run, config, "baseline", r, baseline_passes(r), lambda tid, i: 70 + (tid % 5))
        write_run(run, config, "dpo", r, dpo_passes(r), lambda tid, i: 72 + (tid % 5) + r * 0.1)
    finish_evaluation(run, config)
    return config, run


def test_summary_csv_has_one_row_per_variant_and_run_with_known_values(populated):
    config, run = populated
    out = run_report(config, run.root)
    rows = list(csv.DictReader((out / SUMMARY_CSV).open()))
    assert [(row["model"], row["variant"], row["run"]) for row in rows] == [
        ("tiny-gemma3", v, str(r)) for v in ("baseline", "dpo") for r in (1, 2, 3)]
    assert {"pass_at_1", "pass_at_4", "pass_rate", "avg_mi_macro", "avg_mi_micro", "n_tasks", "n_samples",
            "n_tasks_solved", "n_passing", "seed", "dataset"} <= set(rows[0])
    for row in rows:
        r = int(row["run"])
        fn = baseline_passes(r) if row["variant"] == "baseline" else dpo_passes(r)
        counts = [fn(t) for t in range(1, N_TASKS + 1)]
        assert float(row["pass_at_1"]) == pytest.approx(100 * sum(counts) / (N * N_TASKS), abs=1e-3)
        assert float(row["pass_at_4"]) == pytest.approx(100 * sum(c > 0 for c in counts) / N_TASKS, abs=1e-3)
        assert int(row["n_tasks"]) == N_TASKS and int(row["n_samples"]) == N_TASKS * N
        assert int(row["seed"]) == config.sampling.seed + r - 1
    # per-task file: one row per variant x run x task
    assert len(list(csv.DictReader((out / PER_TASK_CSV).open()))) == 2 * 3 * N_TASKS


def test_tables_show_mean_std_and_the_change_against_baseline(populated):
    config, run = populated
    out = run_report(config, run.root)
    text = (out / TABLES_MD).read_text()
    values = [100 * sum(baseline_passes(r)(t) > 0 for t in range(1, N_TASKS + 1)) / N_TASKS for r in (1, 2, 3)]
    assert f"{statistics.fmean(values):.2f} ± {statistics.stdev(values):.2f}" in text
    assert "Table 1" in text and "Table 2" in text and "Wilcoxon" in text and "paired t" in text
    samples = run.stage_dir("evaluate")
    [macro] = [c for c in compare_to_baseline(collect_runs(samples, read_manifest(samples), config.evaluation.k),
                                              ["avg_mi_macro"])]
    assert macro.variant == "dpo" and macro.n_pairs == 3
    assert macro.delta == pytest.approx(2.2, abs=0.05)  # MI 2 + 0.1 r higher on every task: mean over r = 2.2
    assert macro.better == N_TASKS and macro.worse == 0 and macro.p_tasks < 0.001
    assert macro.p_runs is not None and macro.p_runs < 0.01


def test_report_figures_are_png_files(populated):
    config, run = populated
    out = run_report(config, run.root)
    for name in (METRICS_PNG, MI_PNG):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert not (out / CURVES_PNG).exists()  # no training logs beside the dpo adapter: skipped, said so
    assert "training curves not drawn" in (out / TABLES_MD).read_text()


def test_training_curves_drawn_when_logs_exist(populated):
    config, run = populated
    run.stage_dir("dpo").mkdir(parents=True)
    (run.stage_dir("dpo") / "training_log.csv").write_text("step,loss,rewards/margins\n1,0.69,0.0\n2,0.6,0.2\n")
    out = run_report(config, run.root)
    assert (out / CURVES_PNG).read_bytes()[:4] == b"\x89PNG"
    assert f"]({CURVES_PNG})" in (out / TABLES_MD).read_text()


def test_paper_numbers_side_by_side_for_the_same_model(populated):
    config, run = populated
    config.evaluation.reference_results = str(PAPER_CSV)
    config.evaluation.reference_model = "gemma-3-1b-it"
    text = (run_report(config, run.root) / TABLES_MD).read_text()
    paper = [row for row in csv.DictReader(PAPER_CSV.open())
             if row["model"] == "gemma-3-1b-it" and row["variant"] == "baseline"]
    expected = fmt_mean_std(mean_std([float(row["pass_at_10"]) for row in paper]))
    assert "Ours vs the paper (gemma-3-1b-it)" in text and expected in text
    assert "44.40 ± 0.55" in text  # the paper's 1B baseline pass@10 over its 5 runs


def test_paper_table_as_context_for_another_model(populated):
    config, run = populated
    config.evaluation.reference_results = "common/resources/paper_results.csv"  # relative to the repo root
    text = (run_report(config, run.root) / TABLES_MD).read_text()
    assert "context only" in text
    for model in ("gemma-3-1b-it", "gemma-3-4b-it", "gemma-3-12b-it", "qwen3-4b-instruct-2507"):
        assert model in text


def test_report_is_not_rewritten_when_up_to_date_and_print_table(populated, capsys):
    config, run = populated
    out = run_report(config, run.root)
    before = (out / SUMMARY_CSV).read_text()
    mtime = (out / SUMMARY_CSV).stat().st_mtime_ns
    capsys.readouterr()
    run_report(config, run.root)
    assert (out / SUMMARY_CSV).stat().st_mtime_ns == mtime and "up to date" in capsys.readouterr().out
    # a new evaluation run is a new input: the report is rebuilt
    write_run(run, config, "dpo", 3, dpo_passes(1), lambda tid, i: 99.0)
    finish_evaluation(run, config)
    run_report(config, run.root)
    # judged by content: two writes within one file-system timestamp tick can leave mtime_ns unchanged
    after = (out / SUMMARY_CSV).read_text()
    assert after != before and "99" in after and "99" not in before
    text = print_table(out)
    assert "Table 1" in text and "## Figures" not in text and "Table 1" in capsys.readouterr().out


def test_stale_or_partial_evaluations_are_refused_never_mixed_in(populated):
    config, run = populated
    config.evaluation.runs = 4  # run 4 was never evaluated: the evaluation is not finished for this config
    with pytest.raises(ArtifactError, match=r"evaluate.*fields that differ: evaluation.runs.*python -m common evaluate"):
        run_report(config, run.root)
    config.evaluation.runs = 3
    config.sampling.temperature = 0.61  # now every run is stale
    with pytest.raises(ArtifactError, match=r"evaluate.*sampling"):
        run_report(config, run.root)
    config.sampling.temperature = 0.6
    text = (run_report(config, run.root) / TABLES_MD).read_text()
    assert "Table 1" in text and "3_evaluation/evaluate/<variant>/run<r>" in text


PAPER_CSV_SHA256 = "b038c8d8d442dc586291e9c25210fafed93bfe61833e718fc471fa5d825ae0d2"  # the paper's table as shipped (checked against ../shared where it exists)


def test_committed_paper_numbers_equal_the_shared_reference():
    import hashlib

    assert hashlib.sha256(PAPER_CSV.read_bytes()).hexdigest() == PAPER_CSV_SHA256
    if SHARED_PAPER_CSV.is_file():  # a fresh clone has no ../shared: the pinned digest still checks the copy
        assert PAPER_CSV.read_bytes() == SHARED_PAPER_CSV.read_bytes()


def test_presets_point_at_the_committed_paper_numbers():
    for preset in ("paper", "demo"):
        config = load_config(REPO / "configs" / f"{preset}.yaml")
        assert (REPO / config.evaluation.reference_results).resolve() == PAPER_CSV.resolve(), preset
