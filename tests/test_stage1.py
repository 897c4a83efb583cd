"""Stage 1 end to end on real files: generators -> sandbox -> MI labels -> a DPO-ready dataset on disk."""

import pytest

from common.pipeline.artifacts import ArtifactError, RunDir, load_dataset_dir, read_manifest
from common.prompting.extract import strip_fence
from common.sandbox import run_batch
from common.signals.mi import maintainability_index
from tests.helpers import MBPP_JSONL, requires_mbpp, run_stages, smoke_config

PAIR_COLUMNS = {"prompt", "chosen", "rejected", "task_id", "chosen_mi", "rejected_mi", "generator"}


_config = smoke_config


def _check_pairs(run, config, style):
    pairs = load_dataset_dir(run.stage_dir("pairs"))
    assert PAIR_COLUMNS <= set(pairs.column_names)
    assert len(pairs) > 0
    tasks = {t["task_id"]: t for t in load_dataset_dir(run.stage_dir("prepare"))}
    # one pair per task with the default 'extremes' pairing: no task appears twice
    assert len(set(pairs["task_id"])) == len(pairs)
    jobs = []
    candidates = {(c["task_id"], c["candidate_index"]): c for c in load_dataset_dir(run.stage_dir("candidates"))}
    for row in pairs:
        assert row["chosen_mi"] >= row["rejected_mi"] + config.stage1.min_mi_margin
        assert row["chosen"] != row["rejected"]
        # each side says where it came from: its candidate (index, what made it)
        for side in ("chosen", "rejected"):
            source = candidates[(row["task_id"], row[f"{side}_index"])]
            assert source["code"] == row[f"{side}_code"] and row[f"{side}_origin"] == source["origin"]
        if style == "chat":
            assert isinstance(row["prompt"], list) and row["chosen"].startswith("```python\n")
            chosen, rejected = strip_fence(row["chosen"]), strip_fence(row["rejected"])
        else:
            assert row["prompt"].endswith("```python\n") and row["chosen"].endswith("\n```")
            chosen, rejected = row["chosen"][: -len("\n```")], row["rejected"][: -len("\n```")]
        assert maintainability_index(chosen) == pytest.approx(row["chosen_mi"])
        task = tasks[row["task_id"]]
        jobs += [{"code": code, "tests": task["test_list"], "setup": task["test_setup_code"]}
                 for code in (chosen, rejected)]
    assert all(result.passed for result in run_batch(jobs, progress=False))  # both sides really pass
    return pairs


def test_rewrite_generator_on_demo_tasks_builds_valid_pairs_and_is_idempotent(tmp_path):
    config = _config()
    run = RunDir(tmp_path / "run")
    candidates = run_stages(config, run.root, "prepare", "candidates")
    manifest = read_manifest(candidates)
    assert manifest["summary"]["pass_rate"] > 0.9
    pairs = run_stages(config, run.root, "pairs")
    first = _check_pairs(run, config, "chat").to_list()
    stamp = (pairs / "manifest.json").stat().st_mtime_ns
    run_stages(config, run.root, "pairs")  # up to date: skipped, nothing rewritten
    assert (pairs / "manifest.json").stat().st_mtime_ns == stamp
    run_stages(config, run.root, "candidates", "pairs", force=True)  # recomputed from scratch: the same rows
    assert load_dataset_dir(pairs).to_list() == first
    assert (pairs / "mi_distribution.png").stat().st_size > 1000


def test_label_pairs_refuses_missing_or_foreign_candidates(tmp_path):
    config = _config()
    run_stages(config, tmp_path / "run", "prepare")
    with pytest.raises(ArtifactError, match="python -m common candidates --config .*smoke.yaml --run-dir"):
        run_stages(config, tmp_path / "run", "pairs")
    run_stages(config, tmp_path / "run", "candidates")
    other = _config("stage1.max_variants=2")
    with pytest.raises(ArtifactError, match="different config.*stage1.max_variants.*--set stage1.max_variants=2"):
        run_stages(other, tmp_path / "run", "pairs")


def test_paper_mode_keeps_ties_and_default_drops_them(tmp_path):
    strict = _config("stage1.max_variants=6")
    run_stages(strict, tmp_path / "a", "prepare", "candidates", "pairs")
    paper = _config("stage1.max_variants=6", "stage1.keep_ties=true", "stage1.min_mi_margin=0", "stage1.pairing=all")
    run_stages(paper, tmp_path / "b", "prepare", "candidates", "pairs")
    strict_pairs = load_dataset_dir(RunDir(tmp_path / "a").stage_dir("pairs"))
    all_pairs = load_dataset_dir(RunDir(tmp_path / "b").stage_dir("pairs"))
    assert min(strict_pairs["mi_margin"]) > 0
    assert len(all_pairs) > len(strict_pairs)
    assert all(c != r for c, r in zip(all_pairs["chosen"], all_pairs["rejected"]))


@requires_mbpp
def test_rewrite_generator_on_real_mbpp_train_tasks(tmp_path):
    config = _config(f"data.source={MBPP_JSONL}", "data.max_train_tasks=40", "model=gemma-3-270m")
    run = RunDir(tmp_path / "run")
    run_stages(config, run.root, "prepare")
    assert len(load_dataset_dir(run.stage_dir("prepare"))) == 40
    run_stages(config, run.root, "candidates", "pairs")
    pairs = _check_pairs(run, config, "completion")
    assert len(pairs) >= 30  # measured: pairs for most tasks (see README for the full 372)
