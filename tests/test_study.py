"""The method study on its smoke preset (tiny model, seven arms): once through the CLI, then the study notebook and
every new stage's notebook against the finished folders; plus the study preset's checks and the sharing rule
(an arm links an artifact of the same fingerprint, and builds its own when its fingerprint differs)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time

import pytest

from common.config import ConfigError, load_config
from common.pipeline.artifacts import RunDir, read_manifest
from common.pipeline.registry import fingerprint
from common.study.config import ArmConfig, arm_recipe, load_study
from common.study.run import ARMS, REPORT, run_arm
from tests.helpers import REPO
from tests.test_pipeline import ENV

PRESET = REPO / "configs" / "study-smoke.yaml"


@pytest.fixture(scope="module")
def study_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("study") / "study-smoke"
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "common", "study", "--config", str(PRESET), "--run-dir", str(root)],
                          cwd=REPO, env=ENV, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return root, done.stdout, time.perf_counter() - start


def test_one_report_with_a_row_per_arm_and_run(study_run):
    root, stdout, _ = study_run
    study = load_study(PRESET)
    arms = [arm.name for arm in study.study.arms]
    assert len(arms) >= 5 and {"sft_dpo", "kto", "grpo"} <= {arm.method for arm in study.study.arms}
    with (root / REPORT / "summary.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0])[:3] == ["arm", "method", "signal"]
    runs = study.shared_config().evaluation.runs
    assert sorted({row["arm"] for row in rows}) == sorted(["baseline", *arms])
    assert all(sum(row["arm"] == name for row in rows) == runs for name in ["baseline", *arms])
    seeds = {name: sorted(row["seed"] for row in rows if row["arm"] == name) for name in ["baseline", *arms]}
    assert len({tuple(s) for s in seeds.values()}) == 1  # every arm sampled with the baseline's seeds
    tables = (root / REPORT / "tables.md").read_text()
    assert "# Study results" in tables and "Table 2. Change against the baseline" in tables
    assert all(f"| {name} " in tables for name in arms)
    assert (root / REPORT / "pass_and_mi.png").is_file() and (root / REPORT / "training_curves.png").is_file()
    assert "Study results" in stdout  # the CLI prints the tables


def test_every_arm_trained_its_method_on_the_shared_candidates(study_run):
    root, _, _ = study_run
    shared = RunDir(root)
    for arm in load_study(PRESET).study.arms:
        run = RunDir(root / ARMS / arm.name)
        model_stage = arm_recipe(arm)[-2]
        manifest = read_manifest(run.stage_dir(model_stage))
        assert manifest is not None and (run.stage_dir(model_stage) / "adapter_model.safetensors").is_file()
        assert manifest["method"] == {"sft_dpo": "dpo", "kto_sft": "sft"}.get(arm.method, arm.method)
        if "candidates" in arm_recipe(arm):
            link = run.stage_dir("candidates")
            assert link.is_symlink() and link.resolve() == shared.stage_dir("candidates").resolve()
        else:
            assert not run.stage_dir("candidates").exists()  # grpo needs no stage-1 candidates
        assert read_manifest(run.stage_dir("pairs" if arm.method in ("dpo", "sft_dpo") else model_stage))
    # sft_dpo's DPO continues the SFT adapter with the SFT model as reference; its SFT is the sft arm's (same
    # fingerprint), linked rather than trained twice
    sft_dpo = RunDir(root / ARMS / "sft-dpo-mi")
    assert read_manifest(sft_dpo.stage_dir("sft-dpo"))["reference"] == "stage1"
    assert sft_dpo.stage_dir("sft").is_symlink()
    assert sft_dpo.stage_dir("sft").resolve() == RunDir(root / ARMS / "sft-mi").stage_dir("sft").resolve()
    assert read_manifest(RunDir(root / ARMS / "kto-exec").stage_dir("kto"))["reference"] == "base"


def test_a_second_call_resumes_without_recomputing(study_run):
    root, _, first = study_run
    before = {p: p.stat().st_mtime_ns for p in root.rglob("manifest.json")}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "common", "study", "--config", str(PRESET), "--run-dir", str(root)],
                          cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in root.rglob("manifest.json")} == before
    assert time.perf_counter() - start < first


def test_the_study_notebook_and_the_new_stage_notebooks_reach_the_same_artifacts(study_run, tmp_path):
    papermill = pytest.importorskip("papermill")
    root, _, _ = study_run
    jobs = [("3_evaluation/03_study.ipynb", str(PRESET), root)]
    for arm, stages in [("sft-dpo-mi", ["targets", "sft", "sft-dpo"]), ("kto-sft-exec", ["singles", "kto", "kto-sft"]),
                        ("grpo", ["grpo"])]:
        run = root / ARMS / arm
        jobs += [(stage_notebook(stage), str(run / "config.yaml"), run) for stage in stages]
    before = {p: p.stat().st_mtime_ns for p in root.rglob("manifest.json")}
    for notebook, config_path, run_dir in jobs:
        out = tmp_path / notebook.replace("/", "_")
        papermill.execute_notebook(str(REPO / notebook), str(out), cwd=str((REPO / notebook).parent),
                                   parameters={"config_path": config_path, "run_dir": str(run_dir)},
                                   kernel_name="python3", progress_bar=False)
        cells = json.loads(out.read_text())["cells"]
        assert not any(o.get("output_type") == "error" for c in cells for o in c.get("outputs", [])), notebook
    assert {p: p.stat().st_mtime_ns for p in root.rglob("manifest.json")} == before  # all up to date: reused


def stage_notebook(name: str) -> str:
    from common.pipeline.registry import get_stage

    return get_stage(name).notebook


def test_an_arm_whose_candidates_differ_builds_its_own_and_leaves_the_shared_ones(tmp_path):
    from common.pipeline.runner import run_stage

    shared_cfg = load_config(REPO / "configs" / "smoke.yaml", ["recipe=[prepare,candidates]"])
    run_stage("prepare", shared_cfg, tmp_path)
    shared = run_stage("candidates", shared_cfg, tmp_path)
    built = {fingerprint(shared_cfg, name): RunDir(tmp_path).stage_dir(name) for name in ("prepare", "candidates")}
    shared_manifest = read_manifest(shared)
    other = load_config(REPO / "configs" / "smoke.yaml", ["recipe=[prepare,candidates]", "stage1.max_variants=2"])
    arm = RunDir(tmp_path / ARMS / "other")
    run_arm(other, arm, built, force=False)
    assert arm.stage_dir("prepare").is_symlink()  # same tasks: linked
    assert not arm.stage_dir("candidates").is_symlink() and read_manifest(arm.stage_dir("candidates"))
    assert read_manifest(shared) == shared_manifest  # the shared candidates were not rebuilt


def test_study_presets_are_checked_before_anything_runs(tmp_path):
    def preset(arms, extra=""):
        path = tmp_path / "study.yaml"
        path.write_text(f"inherit: {REPO / 'configs' / 'smoke.yaml'}\n{extra}study:\n  arms: {json.dumps(arms)}\n")
        return path

    with pytest.raises(ConfigError, match=r"method must be one of"):
        load_study(preset([{"name": "a", "method": "ppo"}]))
    with pytest.raises(ConfigError, match=r"'a' is taken"):
        load_study(preset([{"name": "a", "method": "dpo"}, {"name": "a", "method": "sft"}]))
    with pytest.raises(ConfigError, match=r"stage2 .* dpo arms only"):
        load_study(preset([{"name": "a", "method": "kto", "stage2": True}]))
    with pytest.raises(ConfigError, match=r"study arm 'a': --set 'dpo.betta=0.2': unknown key 'betta'"):
        load_study(preset([{"name": "a", "method": "dpo", "set": ["dpo.betta=0.2"]}]))
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['signl'\]"):
        load_study(preset([{"name": "a", "method": "dpo", "signl": "mi"}]))
    with pytest.raises(ConfigError, match=r"is a study preset .* `python -m common study"):
        load_config(preset([{"name": "a", "method": "dpo"}]))
    assert arm_recipe(ArmConfig(name="x", method="dpo", stage2=True))[-3:] == ["self-generation", "dpo-further",
                                                                                "evaluate"]


def test_gpu_check_says_what_it_skipped_and_runs_the_same_checks_on_cpu(tmp_path):
    idle = subprocess.run([sys.executable, "-m", "common.gpu_check"], cwd=REPO, env=ENV, capture_output=True,
                          text=True, timeout=120)
    assert idle.returncode == 0 and "skipped everything: no CUDA device" in idle.stdout, idle.stdout + idle.stderr
    done = subprocess.run([sys.executable, "-m", "common.gpu_check", "--cpu", "--config", str(PRESET),
                           "--run-dir", str(tmp_path / "check")], cwd=REPO, env=ENV, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    table = done.stdout.split("| arm | method |", 1)[1]
    for arm in load_study(PRESET).study.arms:
        row = next(line for line in table.splitlines() if line.startswith(f"| {arm.name} |"))
        assert float(row.split("|")[5]) > 0  # s/step measured for every method
    assert "| hf |" in done.stdout and "vLLM sampling: needs CUDA" in done.stdout
