"""Running a study: the shared stages once, every arm in its own run folder, one report over all of them.

Layout under the study's run directory (``runs/<run_name>/`` by default)::

    1_global_dataset_generation/{prepare,candidates}/   the shared stage-1 artifacts
    3_evaluation/evaluate/                              the baseline's evaluation
    arms/<arm>/...                                      each arm's own run folder (config.yaml, its stages)
    study/                                              summary.csv (a row per arm x run), tables.md, figures

An arm's stage whose fingerprint equals an artifact already built in this study (the shared candidates, or the
``sft`` adapter that an ``sft`` arm and an ``sft_dpo`` arm on the same signal both need) is a symlink to that
artifact instead of a second copy: the stage graph's fingerprints say when two arms would compute the same thing.
A stage whose fingerprint differs (an arm that ``set:`` another generator) is built in the arm's own folder, never
into the shared one. Re-running the same command resumes: finished stages are skipped, as for ``run``.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path
from typing import Any, Sequence

from common.config import ConfigError, PipelineConfig
from common.pipeline.artifacts import RunDir, read_manifest, record_config
from common.pipeline.registry import BASELINE, fingerprint, recipe
from common.pipeline.runner import run_stage, staleness
from common.study.config import ArmConfig, Study, arm_recipe

ARMS = "arms"
REPORT = "study"


def _link(target: Path, link: Path) -> None:
    """``link`` -> ``target`` (relative, so the study folder can be moved), replacing what was there."""
    if link.is_symlink() or link.is_file():
        link.unlink()
    elif link.is_dir():
        shutil.rmtree(link)
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(os.path.relpath(target.resolve(), link.parent.resolve()), target_is_directory=True)


def run_arm(arm_cfg: PipelineConfig, arm_run: RunDir, built: dict[str, Path], force: bool) -> None:
    """Run the arm's recipe; a stage already built in this study with the same fingerprint is linked, not rebuilt.
    ``built``: fingerprint -> finished artifact folder (grows as stages finish)."""
    record_config(arm_run, arm_cfg)
    for stage in recipe(arm_cfg):
        folder = arm_run.stage_dir(stage.name)
        key = fingerprint(arm_cfg, stage.name)
        if key in built:
            if built[key].resolve() != folder.resolve():
                _link(built[key], folder)
            if staleness(arm_run, arm_cfg, stage.name) is None:
                continue
        elif folder.is_symlink():  # linked earlier, but this arm now computes something else: its own folder
            folder.unlink()
        run_stage(stage.name, arm_cfg, arm_run.root, force=force)
        built.setdefault(key, folder)


def run_study(study: Study, root: Path | str, force: bool = False, only: Sequence[str] | None = None,
              log: Any = print) -> Path:
    """Shared stages, then every arm (or the ``only`` ones), then the report; returns the report folder."""
    root = Path(root)
    arms = [arm for arm in study.study.arms if not only or arm.name in only]
    unknown = sorted(set(only or ()) - {arm.name for arm in study.study.arms})
    if unknown:
        raise ConfigError(f"--arms: no arm named {unknown} in {study.path} (arms: "
                          f"{[arm.name for arm in study.study.arms]})")
    shared_cfg = study.shared_config()
    shared = RunDir(root)
    record_config(shared, shared_cfg)
    built: dict[str, Path] = {}
    needs_candidates = any("candidates" in arm_recipe(arm) for arm in arms)
    for name in ("prepare", "candidates", "evaluate"):
        if name == "candidates" and not needs_candidates:
            continue
        if name == "evaluate" and not study.study.baseline:
            continue
        log(f"== study {root.name}: shared stage {name}")
        built[fingerprint(shared_cfg, name)] = run_stage(name, shared_cfg, root, force=force)
    for number, arm in enumerate(arms, 1):
        log(f"== study {root.name}: arm {number}/{len(arms)} {arm.name} ({arm.method}, signal {arm.signal}"
            f"{', with stage 2' if arm.stage2 else ''})")
        run_arm(study.arm_config(arm), RunDir(root / ARMS / arm.name), built, force)
    from common.study.report import write_study_report

    return write_study_report(study, root, arms, log=log)


def arm_columns(arm: ArmConfig | None, config: PipelineConfig | None = None) -> dict[str, Any]:
    if arm is None:
        return {"arm": BASELINE, "method": "-", "signal": "-"}
    # grpo learns from its own samples' rewards (the sandbox and MI), not from a labelled candidate pool; sft_data
    # from the references after the data-optimisation steps
    signal = arm.signal
    if arm.method == "grpo":
        signal = "reward: pass, tests, mi"
    elif arm.method in ("sft_data", "dpo_data"):
        signal = "data: " + ("+".join(config.data_opt.steps) if config and config.data_opt.steps else "original")
        if arm.method == "dpo_data":
            signal += f"; pairs: {arm.signal}"
    return {"arm": arm.name, "method": arm.method + ("+stage2" if arm.stage2 else ""), "signal": signal}


def renamed(results: Sequence[Any], name: str) -> list[Any]:
    return [dataclasses.replace(res, variant=name) for res in results]


def evaluate_manifest(run: RunDir) -> dict[str, Any]:
    manifest = read_manifest(run.stage_dir("evaluate"))
    if manifest is None:
        raise ConfigError(f"{run.root}: no finished evaluation; run the study again to finish it")
    return manifest
