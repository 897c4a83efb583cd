"""The whole pipeline on the smoke preset (tiny model, a few demo tasks): once through the CLI, once through the
eight notebooks with papermill, so neither door can drift from `common`."""

import json
import os
import subprocess
import sys
import time

import pytest

from common.pipeline.artifacts import RunDir, load_dataset_dir, read_manifest
from common.pipeline.registry import recipe
from tests.helpers import REPO, smoke_config

STAGES = [stage.name for stage in recipe(smoke_config())]
NOTEBOOKS = [stage.notebook for stage in recipe(smoke_config())]  # the recipe's order is the notebooks' run order
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
       "TOKENIZERS_PARALLELISM": "false"}


def _check_artifacts(run: RunDir) -> None:
    for name in STAGES:
        manifest = read_manifest(run.stage_dir(name))
        assert manifest is not None and manifest["stage"] == name, f"no manifest in {run.stage_dir(name)}"
    assert sorted(p.name for p in run.root.iterdir()) == sorted(
        ["1_global_dataset_generation", "2_fine_tuning_process", "3_evaluation", "config.yaml"])
    assert len(load_dataset_dir(run.stage_dir("pairs"))) > 0
    assert (run.stage_dir("dpo") / "adapter_model.safetensors").is_file()
    assert (run.stage_dir("dpo-further") / "adapter_model.safetensors").is_file()
    summary = (run.stage_dir("report") / "summary.csv").read_text().splitlines()
    assert len(summary) == 1 + 3 * 2  # header + 3 variants x 2 runs
    assert (run.stage_dir("report") / "tables.md").read_text().count("±") >= 3


def test_smoke_pipeline_through_the_cli(tmp_path):
    run = RunDir(tmp_path / "smoke")
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "common", "run", "--config", "configs/smoke.yaml", "--run-dir",
                           str(run.root)], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=900)
    elapsed = time.perf_counter() - start
    assert done.returncode == 0, done.stderr[-3000:]
    assert elapsed < 180, f"smoke pipeline took {elapsed:.0f} s (budget 3 min on 2 cores)"
    _check_artifacts(run)
    assert "baseline" in done.stdout and "dpo-further" in done.stdout and "±" in done.stdout
    # a random tiny model never passes twice, so stage 2c carried the -dpo adapter over; the report must say so
    assert read_manifest(run.stage_dir("dpo-further"))["skipped_training"] is True
    assert "dpo-further was not trained" in (run.stage_dir("report") / "tables.md").read_text()
    # ... and stage 3 reused -dpo's samples for it instead of sampling the same adapter again
    assert "reuses dpo's samples" in (run.stage_dir("report") / "tables.md").read_text()
    for r in (1, 2):
        further = run.stage_dir("evaluate") / "dpo-further" / f"run{r}"
        assert read_manifest(further)["reused_from"]["variant"] == "dpo"
        mine, source = load_dataset_dir(further), load_dataset_dir(run.stage_dir("evaluate") / "dpo" / f"run{r}")
        assert mine["code"] == source["code"] and set(mine["variant"]) == {"dpo-further"}
    assert "=== stage 8/8: report ===" in done.stdout
    again = subprocess.run([sys.executable, "-m", "common", "run", "--config", "configs/smoke.yaml", "--run-dir",
                            str(run.root)], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("] up to date: ") == len(STAGES)  # nothing recomputed
    assert "Table 1" in again.stdout  # `run` prints the table even when the report was up to date
    # Resizing the evaluation re-evaluates, but keeps stages 1-2 (they read the train split alone)
    adapter = read_manifest(run.stage_dir("dpo"))
    resized = subprocess.run([sys.executable, "-m", "common", "run", "--config", "configs/smoke.yaml", "--run-dir",
                              str(run.root), "--set", "data.max_eval_tasks=3"], cwd=REPO, env=ENV,
                             capture_output=True, text=True, timeout=600)
    assert resized.returncode == 0, resized.stderr[-3000:]
    for stage in STAGES[:6]:
        assert f"[{stage}] up to date" in resized.stdout, (stage, resized.stdout[-3000:])
    assert read_manifest(run.stage_dir("dpo"))["uid"] == adapter["uid"]
    assert "up to date" not in "".join(line for line in resized.stdout.splitlines() if "[evaluate]" in line)
    assert "3 evaluation tasks" in (run.stage_dir("report") / "tables.md").read_text()


def test_a_missing_input_names_the_command_with_the_users_own_config(tmp_path):
    """The hint repeats --config and --set, so following it builds the artifact of this config, not the default's."""
    done = subprocess.run([sys.executable, "-m", "common", "pairs", "--config", "configs/smoke.yaml", "--set",
                           "stage1.max_variants=2", "--run-dir", str(tmp_path / "run")], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert ("run `python -m common prepare --config configs/smoke.yaml --set stage1.max_variants=2 --run-dir "
            f"{tmp_path / 'run'}` first") in done.stderr
    legacy = subprocess.run([sys.executable, "-m", "common", "label-pairs", "--help"], cwd=REPO, env=ENV,
                            capture_output=True, text=True, timeout=300)
    assert legacy.returncode == 0  # the earlier command names still work


def test_notebooks_run_top_to_bottom_with_the_smoke_config(tmp_path):
    papermill = pytest.importorskip("papermill")
    run = RunDir(tmp_path / "nb")
    for notebook in NOTEBOOKS:
        out = tmp_path / "executed" / notebook
        out.parent.mkdir(parents=True, exist_ok=True)
        papermill.execute_notebook(str(REPO / notebook), str(out), cwd=str((REPO / notebook).parent),
                                   parameters={"config_path": "configs/smoke.yaml", "run_dir": str(run.root)},
                                   kernel_name="python3", progress_bar=False)
        cells = json.loads(out.read_text())["cells"]
        assert not any(o.get("output_type") == "error" for c in cells for o in c.get("outputs", []))
    _check_artifacts(run)


def test_make_demo_uses_real_mbpp_when_mbpp_path_is_set(tmp_path):
    """`make demo` runs on the embedded tasks, or on real MBPP when $MBPP_PATH is set (demo.yaml says `demo`)."""
    env = {k: v for k, v in ENV.items() if k != "MBPP_PATH"}
    plain = subprocess.run(["make", "-n", "demo"], cwd=REPO, env=env, capture_output=True, text=True, check=True)
    real = subprocess.run(["make", "-n", "demo"], cwd=REPO, env={**env, "MBPP_PATH": str(tmp_path / "mbpp.jsonl")},
                          capture_output=True, text=True, check=True)
    assert "--config configs/demo.yaml" in plain.stdout and "data.source" not in plain.stdout
    assert f"--set data.source={tmp_path / 'mbpp.jsonl'}" in real.stdout
