"""Stage 2a: the ``-dpo`` model builds its own ("local") preference dataset (DESIGN §1).

For up to ``rounds`` rounds the model samples ``num_samples`` solutions (paper: 10, T=0.6, top_p=0.9) for every
pending train prompt. Passing samples accumulate per task across rounds; a task with fewer than ``min_passing``
distinct passing samples is re-queued, its prompt carrying the last failed solution and the paper's retry message.
Pair = max-MI vs min-MI passing sample (the stage-1 labelling rule, ``common.pairing``). The stored prompt is the
task's original prompt: the retry text only helped sampling and is not what the model will be asked.

Every round streams through the resumable sampling job, and the rounds are a deterministic function of earlier
rounds, so a killed run restarted with the same config replays finished rounds from disk and continues.
"""

from __future__ import annotations

import gc
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from datasets import Dataset

from .artifacts import RunDir, load_dataset_dir, record_config, require, save_dataset, skip_if_complete, write_manifest
from .config import PipelineConfig
from .generators import prompt_style_for
from .pairing import Candidate, pair_row, pair_summary, plot_mi_distribution, select_pairs
from .prompts import build_prompt, retry_prompt
from .scoring import score_solutions
from .stage1 import _empty_pairs, load_tasks


def run_self_generation(config: PipelineConfig, run_dir: Path | str, force: bool = False) -> Path:
    """Sample, execute, score and pair; writes ``stage2/selfgen`` (all samples) and ``stage2/selfgen_pairs``."""
    run = RunDir(run_dir)
    record_config(run, config)
    if skip_if_complete(run.selfgen_pairs, config, "selfgen", "self-generation", force):
        return run.selfgen_pairs
    require(run.dpo_adapter, config, "dpo", "self-generate")
    tasks = load_tasks(run, config, "train", "self-generate")
    by_id = {int(task["task_id"]): task for task in tasks}
    style = prompt_style_for(config.model)
    prompts = {tid: build_prompt(task, style, config.sampling.system_prompt) for tid, task in by_id.items()}

    from .generation import make_backend

    backend = make_backend(config.sampling, config.model, adapter=run.dpo_adapter)
    try:
        samples, stats = sample_rounds(backend, config, by_id, prompts, run.selfgen / "rounds")
    finally:
        del backend
        _free_accelerator_memory()

    save_dataset(Dataset.from_list(samples), run.selfgen / "samples")  # never empty: round 1 samples every task
    (run.selfgen / "rounds.json").write_text(json.dumps(stats, indent=2))

    rows = pair_rows(samples, by_id, prompts, style, config)
    out = save_dataset(Dataset.from_list(rows) if rows else _empty_pairs(), run.selfgen_pairs)
    summary = {**pair_summary(rows, len(by_id)), "rounds": stats}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    if rows:
        plot_mi_distribution(rows, out / "mi_distribution.png", f"Self-generated pairs ({config.model.name}-dpo)")
    write_manifest(run.selfgen, config, "selfgen")
    write_manifest(out, config, "selfgen", extra={"summary": summary})
    for line in stats:
        print(f"[self-generation] round {line['round']}: {line['prompts']} prompts, {line['passing_samples']}/"
              f"{line['samples']} samples pass, {line['tasks_done']} tasks have >= {config.self_generation.min_passing}"
              f" passing solutions")
    print(f"[self-generation] {summary['pairs']} pairs from {summary['tasks_with_pairs']}/{len(by_id)} tasks -> {out}")
    return out


def sample_rounds(backend: Any, config: PipelineConfig, tasks: dict[int, Any], prompts: dict[int, Any],
                  work_dir: Path) -> tuple[list[dict], list[dict]]:
    """All rounds of sampling and execution. Returns every sample (with its verdict and MI) and per-round stats."""
    from .generation import SampleRequest, run_sampling_job

    gen = config.self_generation
    passing: dict[int, set[str]] = defaultdict(set)
    last_failed: dict[int, str] = {}
    pending = sorted(tasks)
    samples: list[dict] = []
    stats: list[dict] = []
    for round_no in range(1, gen.rounds + 1):
        if not pending:
            break
        requests = []
        for tid in pending:
            prompt = prompts[tid]
            if tid in last_failed:
                prompt = retry_prompt(prompt, last_failed[tid], gen.retry_message)
            requests.append(SampleRequest(key=f"{tid}/round{round_no}", prompt=prompt,
                                          num_samples=config.sampling.num_samples,
                                          seed=config.sampling.seed + round_no,
                                          meta={"task_id": tid, "round": round_no}))
        drawn = run_sampling_job(backend, requests, work_dir / f"round{round_no}",
                                 desc=f"stage 2a round {round_no}/{gen.rounds}")
        rows = [dict(row) for row in drawn]
        scores = score_solutions([r["task_id"] for r in rows], [r["code"] for r in rows], tasks, config.sandbox,
                                 desc=f"stage 2a round {round_no}: executing")
        for row, score in zip(rows, scores):
            record = {"task_id": int(row["task_id"]), "round": round_no, "sample_index": int(row["sample_index"]),
                      "code": row["code"], "finish_reason": row.get("finish_reason", ""), **score}
            samples.append(record)
            if score["passed"] and score["mi"] is not None and row["code"].strip():
                passing[record["task_id"]].add(row["code"].strip())
            elif not score["passed"]:
                last_failed[record["task_id"]] = row["code"]
        stats.append({
            "round": round_no,
            "prompts": len(requests),
            "samples": len(rows),
            "passing_samples": sum(s["passed"] for s in scores),
            "tasks_done": sum(len(passing[t]) >= gen.min_passing for t in tasks),
        })
        pending = [tid for tid in pending if len(passing[tid]) < gen.min_passing]
    return samples, stats


def pair_rows(samples: list[dict], tasks: dict[int, Any], prompts: dict[int, Any], style: str,
              config: PipelineConfig) -> list[dict]:
    """Max-MI vs min-MI passing sample per task, with the stage-1 margin/tie rule."""
    grouped: dict[int, list[Candidate]] = defaultdict(list)
    for index, sample in enumerate(samples):
        grouped[sample["task_id"]].append(Candidate(sample["code"], sample["mi"], sample["passed"], index))
    rows = []
    for tid in sorted(grouped):
        for chosen, rejected in select_pairs(grouped[tid], "extremes", config.stage1.min_mi_margin,
                                             config.stage1.keep_ties):
            rows.append(pair_row(tasks[tid], prompts[tid], style, chosen, rejected, f"self:{config.model.name}-dpo"))
    return rows


def _free_accelerator_memory() -> None:
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


def load_selfgen_samples(run_dir: Path | str) -> Dataset:
    return load_dataset_dir(RunDir(run_dir).selfgen / "samples")
