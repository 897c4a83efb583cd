"""The optimize-data stage through its doors: the CLI (``--steps``, ``--out``), the study smoke preset (SFT on the
original and on each technique's training set, one report), and every technique on the 372 MBPP training tasks with
every output re-run in the sandbox."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest
from datasets import load_from_disk

from common.config import load_config
from common.dataopt.base import StepContext
from common.dataopt.stage import optimize
from common.pipeline.artifacts import RunDir, load_dataset_dir, read_manifest
from common.signals.scoring import score_solutions
from common.study.config import load_study
from common.study.run import ARMS, REPORT
from common.tasks.mbpp import load_mbpp
from tests.helpers import MBPP_JSONL, REPO, requires_mbpp
from tests.test_pipeline import ENV

PRESET = REPO / "configs" / "study-dataopt-smoke.yaml"


def test_cli_runs_the_steps_and_writes_the_training_set(tmp_path):
    run = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "common", "optimize-data", "--config", "configs/smoke.yaml",
                           "--steps", "aug,sel", "--set", "data_opt.sel_fraction=0.5", "--run-dir", str(run),
                           "--out", str(tmp_path / "out")], cwd=REPO, env=ENV, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode != 0 and "prepare" in done.stderr  # its input first, named
    subprocess.run([sys.executable, "-m", "common", "prepare", "--config", "configs/smoke.yaml", "--run-dir",
                    str(run)], cwd=REPO, env=ENV, check=True, capture_output=True, timeout=300)
    done = subprocess.run([sys.executable, "-m", "common", "optimize-data", "--config", "configs/smoke.yaml",
                           "--steps", "aug,sel", "--set", "data_opt.sel_fraction=0.5", "--run-dir", str(run),
                           "--out", str(tmp_path / "out")], cwd=REPO, env=ENV, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = load_from_disk(str(tmp_path / "out"))
    assert {"task_id", "code", "test_list", "steps", "prompt", "completion"} <= set(out.column_names)
    report = json.loads((RunDir(run).stage_dir("optimize-data") / "report.json").read_text())
    assert [entry["step"] for entry in report] == ["references", "aug", "sel"]
    aug, sel = report[1], report[2]
    assert aug["counts"]["added"] > 0 and aug["after"]["rows"] == aug["before"]["rows"] + aug["counts"]["added"]
    assert sel["after"]["rows"] == len(out) == max(1, int(0.5 * sel["before"]["rows"]))
    assert (RunDir(run).stage_dir("optimize-data") / "quality.png").is_file()


@pytest.fixture(scope="module")
def study_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("dataopt") / "study"
    done = subprocess.run([sys.executable, "-m", "common", "study", "--config", str(PRESET), "--run-dir", str(root)],
                          cwd=REPO, env=ENV, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return root


def test_each_technique_reaches_the_sft_data_and_the_report(study_run):
    study = load_study(PRESET)
    with (study_run / REPORT / "summary.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert {row["arm"] for row in rows} == {"baseline", *(arm.name for arm in study.study.arms)}
    assert {"avg_pass_ratio", "pylint_score"} <= set(rows[0])
    by_arm = {row["arm"]: row["signal"] for row in rows}
    assert by_arm["original"] == "data: original" and by_arm["syn-ref"] == "data: syn+ref"
    assert by_arm["dpo-aug"] == "data: aug; pairs: mi"
    dpo = RunDir(study_run / ARMS / "dpo-aug")
    assert read_manifest(dpo.stage_dir("dpo-data"))["n_pairs"] == len(load_dataset_dir(dpo.stage_dir("pairs-optimized")))
    for arm in (arm for arm in study.study.arms if arm.method == "sft_data"):
        run = RunDir(study_run / ARMS / arm.name)
        data = load_dataset_dir(run.stage_dir("optimize-data"))
        trained = read_manifest(run.stage_dir("sft-data"))
        assert trained["n_targets"] == len(data)  # the optimised rows are what SFT trained on
        steps = study.arm_config(arm).data_opt.steps
        report = json.loads((run.stage_dir("optimize-data") / "report.json").read_text())
        assert [entry["step"] for entry in report] == ["references", *steps]
    original = len(load_dataset_dir(RunDir(study_run / ARMS / "original").stage_dir("optimize-data")))
    assert len(load_dataset_dir(RunDir(study_run / ARMS / "aug").stage_dir("optimize-data"))) > original
    assert len(load_dataset_dir(RunDir(study_run / ARMS / "sel").stage_dir("optimize-data"))) < original


@requires_mbpp
def test_every_technique_on_the_372_mbpp_training_tasks_keeps_every_solution_correct(tmp_path):
    tasks = list(load_mbpp("train", str(MBPP_JSONL)))
    assert len(tasks) == 372
    config = load_config(REPO / "configs" / "smoke.yaml", ["data_opt.syn_tries=1", "stage1_sampling.max_new_tokens=16",
                                                           "stage1_sampling.num_samples=1"])
    ctx = StepContext(config=config.data_opt, tasks={int(t["task_id"]): t for t in tasks}, sandbox=config.sandbox,
                      work=tmp_path, model=config.model, sampling=config.stage1_sampling, log=lambda _: None)
    rows, reports = optimize(tasks, ctx, ["syn", "ref", "cle", "aug", "sel"], tmp_path)
    counts = {entry["step"]: entry["counts"] for entry in reports}
    assert counts["references"]["kept"] + counts["references"]["dropped"] == 372
    assert counts["ref"]["changed"] > 300 and counts["aug"]["added"] > 300
    verdicts = score_solutions([r["task_id"] for r in rows], [r["code"] for r in rows], ctx.tasks, config.sandbox)
    assert rows and all(v["passed"] for v in verdicts)


def test_the_candidate_pool_is_optimised_before_pairing_and_dpo_trains_on_it(tmp_path):
    from tests.helpers import run_stages, smoke_config

    config = smoke_config("stage1.mutants=1", "data_opt.steps=[ref,aug]", "data_opt.aug_variants_per_task=1",
                          "recipe=[prepare,candidates,optimize-candidates,pairs-optimized,dpo-data]")
    run_stages(config, tmp_path, "prepare", "candidates", "optimize-candidates", "pairs-optimized", "dpo-data")
    run = RunDir(tmp_path)
    before = load_dataset_dir(run.stage_dir("candidates")).to_list()
    after = load_dataset_dir(run.stage_dir("optimize-candidates")).to_list()
    assert set(after[0]) == set(before[0])  # the candidates' own schema: pairs-optimized reads it as pairs does
    keys = [(row["task_id"], row["candidate_index"]) for row in after]
    assert len(keys) == len(set(keys))
    added = [row for row in after if row["origin"].rsplit("|", 1)[-1].split("+")[-1] == "aug"]
    assert added and all(row["passed"] for row in added)
    failing = [row for row in before if not row["passed"]]
    assert failing and all(row in after for row in failing)  # failing candidates pass through unchanged
    assert len(after) == len(before) + len(added)
    assert len(load_dataset_dir(run.stage_dir("pairs-optimized"))) > 0
    assert read_manifest(run.stage_dir("dpo-data"))["n_pairs"] > 0
    assert (run.stage_dir("dpo-data") / "adapter_model.safetensors").is_file()
