"""The study's report: the stage-3 report's tables, tests and figures (``common.evaluation.report.build``), with a
row per arm instead of per stage. ``summary.csv`` leads with ``arm``, ``method`` and ``signal``; Table 2 compares
every arm with the same baseline runs (same seeds), run by run and task by task."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from common.evaluation.report.build import carried_over_notes, collect_runs, report_options, write_report
from common.pipeline.artifacts import RunDir
from common.pipeline.registry import BASELINE
from common.study.config import ArmConfig, Study, arm_recipe
from common.study.run import ARMS, REPORT, arm_columns, evaluate_manifest, renamed


def write_study_report(study: Study, root: Path, arms: Sequence[ArmConfig], log: Any = print) -> Path:
    config = study.shared_config()
    ks, metrics, options = list(config.evaluation.k), list(config.evaluation.metrics), report_options(config)
    results, columns, adapters, notes = [], {}, {}, []
    if study.study.baseline:
        shared = RunDir(root)
        results += collect_runs(shared.stage_dir("evaluate"), evaluate_manifest(shared), ks, metrics, options)
        columns[BASELINE] = arm_columns(None)
    for arm in arms:
        run = RunDir(root / ARMS / arm.name)
        model_stage = arm_recipe(arm)[-2]
        arm_results = collect_runs(run.stage_dir("evaluate"), evaluate_manifest(run), ks, metrics, options)
        results += renamed([res for res in arm_results if res.variant == model_stage], arm.name)
        columns[arm.name] = arm_columns(arm, study.arm_config(arm))
        adapters[arm.name] = run.stage_dir(model_stage)
        notes += [note.replace(model_stage, arm.name, 1)
                  for note in carried_over_notes({model_stage: adapters[arm.name]}, arm_results)]
    out = root / REPORT
    names = ", ".join(f"{arm.name} = {columns[arm.name]['method']} ({columns[arm.name]['signal']})" for arm in arms)
    notes.insert(0, f"arms: {names}; every arm trained from the same stage-1 candidates and evaluated with the "
                    f"same seeds (arms/<arm>/ holds each arm's run)")
    write_report(config, results, out, root, adapters, notes, f"{ARMS}/<arm>/3_evaluation/evaluate",
                 columns=columns, title="Study results")
    log(f"study report: {len(results)} evaluation run(s) of {len(arms)} arm(s)"
        f"{' and the baseline' if study.study.baseline else ''} -> {out}")
    return out
