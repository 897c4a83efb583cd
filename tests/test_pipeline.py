"""The whole pipeline on the smoke preset (tiny model, a few demo tasks): once through the CLI, once through the
eight notebooks with papermill, so neither door can drift from `common`."""

import json
import os
import subprocess
import sys
import time

import pytest

from common.pipeline.artifacts import RunDir, load_dataset_dir, read_manifest
from tests.helpers import REPO

NOTEBOOKS = [
    "1_global_dataset_generation/01_prepare_mbpp.ipynb",
    "1_global_dataset_generation/02_generate_candidates.ipynb",
    "1_global_dataset_generation/03_label_pairs.ipynb",
    "2_fine_tuning_process/01_dpo.ipynb",
    "2_fine_tuning_process/02_self_generation.ipynb",
    "2_fine_tuning_process/03_dpo_further.ipynb",
    "3_evaluation/01_evaluate.ipynb",
    "3_evaluation/02_tables_and_figures.ipynb",
]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
       "TOKENIZERS_PARALLELISM": "false"}


def _check_artifacts(run: RunDir) -> None:
    for folder in (run.mbpp, run.candidates, run.pairs, run.dpo_adapter, run.selfgen_pairs, run.dpo_further_adapter):
        assert read_manifest(folder) is not None, f"no manifest in {folder}"
    assert len(load_dataset_dir(run.pairs)) > 0
    assert (run.dpo_adapter / "adapter_model.safetensors").is_file()
    assert (run.dpo_further_adapter / "adapter_model.safetensors").is_file()
    summary = (run.report / "summary.csv").read_text().splitlines()
    assert len(summary) == 1 + 3 * 2  # header + 3 variants x 2 runs
    assert (run.report / "tables.md").read_text().count("±") >= 3


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
    assert read_manifest(run.dpo_further_adapter)["skipped_training"] is True
    assert "dpo-further was not trained" in (run.report / "tables.md").read_text()
    again = subprocess.run([sys.executable, "-m", "common", "run", "--config", "configs/smoke.yaml", "--run-dir",
                            str(run.root)], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("up to date") + again.stdout.count("complete, skipping") >= 7  # nothing recomputed
    # Resizing the evaluation re-prepares MBPP and re-evaluates, but keeps stages 1-2 (they read the train split)
    adapter = read_manifest(run.dpo_adapter)
    resized = subprocess.run([sys.executable, "-m", "common", "run", "--config", "configs/smoke.yaml", "--run-dir",
                              str(run.root), "--set", "data.max_eval_tasks=3"], cwd=REPO, env=ENV,
                             capture_output=True, text=True, timeout=600)
    assert resized.returncode == 0, resized.stderr[-3000:]
    for stage in ("candidates", "pairs", "self-generation"):
        assert f"[{stage}] up to date" in resized.stdout, (stage, resized.stdout[-3000:])
    assert resized.stdout.count("complete, skipping") == 2  # dpo and dpo-further
    assert read_manifest(run.dpo_adapter)["uid"] == adapter["uid"]
    assert "up to date" not in "".join(line for line in resized.stdout.splitlines() if "[evaluate]" in line)
    assert "3 evaluation tasks" in (run.report / "tables.md").read_text()


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
