"""Stage 1: the global preference dataset (DESIGN §1, stage 1a/1b).

prepare_mbpp  -> runs/<run>/stage1/mbpp/{train,test}   the paper's splits, frozen into the run
generate_candidates -> stage1/candidates                every candidate, its sandbox verdict and its MI
label_pairs   -> stage1/pairs                           the DPO-ready dataset + summary.json + mi_distribution.png

Each function is ``fn(config, run_dir, force=False) -> Path`` (the CLI and notebooks call exactly these), skips
its work when the artifact is already complete for this config, and refuses to start when its input is missing.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from datasets import Dataset

from .artifacts import (RunDir, is_complete, load_dataset_dir, record_config, require, save_dataset, skip_if_complete,
                        write_manifest)
from .config import PipelineConfig
from .data import load_mbpp
from .generators import GENERATORS, prompt_style_for
from .pairing import Candidate, pair_row, pair_summary, plot_mi_distribution, select_pairs
from .prompts import build_prompt
from .scoring import score_solutions


def prepare_mbpp(config: PipelineConfig, run_dir: Path | str, force: bool = False) -> Path:
    """Freeze the train and evaluation splits (with the config's task limits) into the run directory."""
    run = RunDir(run_dir)
    record_config(run, config)
    if skip_if_complete(run.mbpp, config, "mbpp", "prepare", force):
        return run.mbpp
    data = config.data
    splits = {
        "train": load_mbpp(data.train_split, data.source, limit=data.max_train_tasks),
        "test": load_mbpp(data.eval_split, data.source, limit=data.max_eval_tasks),
    }
    for name, tasks in splits.items():
        save_dataset(tasks, run.mbpp / name)
    counts = {name: len(tasks) for name, tasks in splits.items()}
    write_manifest(run.mbpp, config, "mbpp", extra={"counts": counts})
    print(f"[prepare] MBPP source {data.source or 'MBPP_PATH/hub'}: {counts['train']} train tasks "
          f"({data.train_split}), {counts['test']} evaluation tasks ({data.eval_split}) -> {run.mbpp}")
    return run.mbpp


def load_tasks(run: RunDir, config: PipelineConfig, split: str, needed_by: str) -> Dataset:
    """The frozen split of this run ('train' or 'test'), prepared on demand."""
    if not is_complete(run.mbpp, config, "mbpp"):
        prepare_mbpp(config, run.root)
    require(run.mbpp, config, "mbpp", needed_by)
    return load_dataset_dir(run.mbpp / split)


def generate_candidates(config: PipelineConfig, run_dir: Path | str, force: bool = False) -> Path:
    """Stage 1a + execution: candidates from the configured generator, each run against its task's asserts in
    the sandbox and scored by MI."""
    run = RunDir(run_dir)
    record_config(run, config)
    if skip_if_complete(run.candidates, config, "candidates", "candidates", force):
        return run.candidates
    name = config.stage1.generator
    if name not in GENERATORS:
        raise ValueError(f"stage1.generator must be one of {sorted(GENERATORS)}, got {name!r}")
    tasks = load_tasks(run, config, "train", "generate-candidates")
    rows = GENERATORS[name](tasks, config, run.path("stage1", "generator_work"))
    by_id = {int(task["task_id"]): task for task in tasks}
    scores = score_solutions([r["task_id"] for r in rows], [r["code"] for r in rows], by_id, config.sandbox,
                             desc="stage 1a: executing candidates")
    rows = [{**row, **score} for row, score in zip(rows, scores)]
    save_dataset(Dataset.from_list(rows), run.candidates)
    summary = candidate_summary(rows, len(tasks))
    write_manifest(run.candidates, config, "candidates", extra={"summary": summary})
    print(f"[candidates] {name}: {summary['candidates']} candidates for {summary['tasks']} tasks; pass rate "
          f"{summary['pass_rate']:.1%}; tasks with >= 2 distinct passing: {summary['tasks_with_2_passing']}")
    for index, rate in summary["pass_rate_by_index"].items():
        print(f"  output {index}: {rate:.1%} pass")
    return run.candidates


def candidate_summary(rows: list[dict[str, Any]], n_tasks: int) -> dict[str, Any]:
    by_index: dict[int, list[bool]] = defaultdict(list)
    passing: dict[int, set[str]] = defaultdict(set)
    for row in rows:
        by_index[row["candidate_index"]].append(row["passed"])
        if row["passed"]:
            passing[row["task_id"]].add(row["code"].strip())
    return {
        "tasks": n_tasks,
        "candidates": len(rows),
        "pass_rate": sum(r["passed"] for r in rows) / max(1, len(rows)),
        "pass_rate_by_index": {str(i): sum(v) / len(v) for i, v in sorted(by_index.items())[:10]},
        "tasks_with_2_passing": sum(len(codes) >= 2 for codes in passing.values()),
        "statuses": _count(row["status"] for row in rows),
    }


def _count(values) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for value in values:
        counts[value] += 1
    return dict(counts)


def label_pairs(config: PipelineConfig, run_dir: Path | str, force: bool = False) -> Path:
    """Stage 1b: MI-labelled (chosen, rejected) pairs from the passing candidates of each task."""
    run = RunDir(run_dir)
    record_config(run, config)
    if skip_if_complete(run.pairs, config, "pairs", "pairs", force):
        return run.pairs
    require(run.candidates, config, "candidates", "label-pairs")
    candidates = load_dataset_dir(run.candidates)
    tasks = load_tasks(run, config, "train", "label-pairs")
    style = prompt_style_for(config.model)
    rows = build_pair_rows(candidates, tasks, config, style)
    out = save_dataset(Dataset.from_list(rows) if rows else _empty_pairs(), run.pairs)
    summary = pair_summary(rows, len(tasks))
    summary.update({"generator": config.stage1.generator, "prompt_style": style,
                    "min_mi_margin": config.stage1.min_mi_margin, "keep_ties": config.stage1.keep_ties})
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    if rows:
        plot_mi_distribution(rows, out / "mi_distribution.png", f"Stage 1 pairs ({config.stage1.generator})")
    write_manifest(out, config, "pairs", extra={"summary": summary})
    print(f"[pairs] {summary['pairs']} pairs from {summary['tasks_with_pairs']}/{summary['tasks']} tasks "
          f"(ties kept: {summary['ties']}); mean MI chosen {_fmt(summary['mean_chosen_mi'])} vs rejected "
          f"{_fmt(summary['mean_rejected_mi'])} -> {out}")
    if not rows:
        print("[pairs] WARNING: no pairs survived; DPO cannot run on this dataset")
    return out


def build_pair_rows(candidates: Dataset, tasks: Dataset, config: PipelineConfig, style: str) -> list[dict]:
    grouped: dict[int, list[Candidate]] = defaultdict(list)
    generator: dict[int, str] = {}
    for row in candidates:
        grouped[row["task_id"]].append(Candidate(row["code"], row["mi"], row["passed"], row["candidate_index"]))
        generator[row["task_id"]] = row["generator"]
    rows = []
    for task in tasks:
        tid = int(task["task_id"])
        prompt = build_prompt(task, style, config.sampling.system_prompt)
        for chosen, rejected in select_pairs(grouped.get(tid, []), config.stage1.pairing,
                                             config.stage1.min_mi_margin, config.stage1.keep_ties):
            rows.append(pair_row(task, prompt, style, chosen, rejected, generator[tid]))
    return rows


def _empty_pairs() -> Dataset:
    """A zero-row pairs dataset with a concrete schema (an untyped empty table cannot be saved and reloaded)."""
    from datasets import Features, Value

    features = Features({"task_id": Value("int64"), "prompt": Value("string"), "chosen": Value("string"),
                         "rejected": Value("string"), "chosen_mi": Value("float64"), "rejected_mi": Value("float64"),
                         "mi_margin": Value("float64"), "generator": Value("string")})
    return Dataset.from_dict({name: [] for name in features}, features=features)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"
