"""Stage ``self-generation`` (paper stage 2a): the ``-dpo`` model builds its own ("local") preference dataset.

For up to ``rounds`` rounds the model samples ``num_samples`` solutions (paper: 10, T=0.6, top_p=0.9) for every
pending train prompt. Passing samples accumulate per task across rounds; a task with fewer than ``min_passing``
distinct passing samples is re-queued, its prompt carrying the last failed solution and the paper's retry message.
Pair = max-MI vs min-MI passing sample (the stage-1 labelling rule, ``common.preference.pairing``). The stored prompt
is the task's original prompt: the retry text only helped sampling and is not what the model will be asked.

The artifact: the pairs dataset at its root (the same schema as stage 1b's, so any DPO stage reads either), every
sample with its verdict and MI in ``samples/``, ``rounds.json``, ``summary.json`` and ``mi_distribution.png``.

Every round streams through the resumable sampling job (``runs/<run>/work/self-generation/round<k>``), and the rounds
are a deterministic function of earlier rounds, so a killed run restarted with the same config replays finished
rounds from disk and continues.
"""

from __future__ import annotations

import json
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Any

from datasets import Dataset

from common.pipeline.artifacts import save_dataset
from common.preference.pairing import Candidate, pair_row, pair_summary, pairs_dataset, plot_mi_distribution, select_pairs
from common.prompting.style import prompt_style
from common.prompting.templates import build_prompt, retry_prompt
from common.signals.scoring import score_solutions

SAMPLES = "samples"


def run_self_generation(ctx: Any) -> dict[str, Any]:
    """Sample, execute, score and pair with the policy adapter (input ``policy``)."""
    config = ctx.config
    by_id = {int(task["task_id"]): task for task in ctx.input_dataset("tasks")}
    style = prompt_style(config.model)
    prompts = {tid: build_prompt(task, style, config.sampling.system_prompt) for tid, task in by_id.items()}
    policy = ctx.input("policy")

    from common.generation import free_accelerator_memory, make_backend

    if ctx.force:
        shutil.rmtree(ctx.work, ignore_errors=True)
    backend = make_backend(config.sampling, config.model, adapter=policy, style=style)
    try:
        samples, stats = sample_rounds(backend, config, by_id, prompts, ctx.work)
    finally:
        del backend
        free_accelerator_memory()

    rows = pair_rows(samples, by_id, prompts, style, config, 
                     label=f"self:{config.model.name}-{ctx.input_manifests['policy']['stage']}")
    out = save_dataset(pairs_dataset(rows, style), ctx.output)
    save_dataset(Dataset.from_list(samples), out / SAMPLES)  # never empty: round 1 samples every task
    (out / "rounds.json").write_text(json.dumps(stats, indent=2))
    summary = {**pair_summary(rows, len(by_id)), "rounds": stats, "prompt_style": style}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    if rows:
        plot_mi_distribution(rows, out / "mi_distribution.png", f"Self-generated pairs ({config.model.name}-dpo)")
    for line in stats:
        ctx.log(f"round {line['round']}: {line['prompts']} prompts, {line['passing_samples']}/{line['samples']} "
                f"samples pass, {line['tasks_done']} tasks have >= {config.self_generation.min_passing} passing "
                f"solutions")
    ctx.log(f"{summary['pairs']} pairs from {summary['tasks_with_pairs']}/{len(by_id)} tasks -> {out}")
    return {"summary": summary}


def sample_rounds(backend: Any, config: Any, tasks: dict[int, Any], prompts: dict[int, Any],
                  work_dir: Path) -> tuple[list[dict], list[dict]]:
    """All rounds of sampling and execution. Returns every sample (with its verdict and MI) and per-round stats."""
    from common.generation import SampleRequest, run_sampling_job

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
                                 desc=f"self-generation round {round_no}/{gen.rounds}")
        rows = [dict(row) for row in drawn]
        scores = score_solutions([r["task_id"] for r in rows], [r["code"] for r in rows], tasks, config.sandbox,
                                 desc=f"self-generation round {round_no}: executing")
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
              config: Any, label: str) -> list[dict]:
    """Max-MI vs min-MI passing sample per task, with the stage-1 margin/tie rule."""
    grouped: dict[int, list[Candidate]] = defaultdict(list)
    for index, sample in enumerate(samples):
        origin = f"self-generation round {sample.get('round')} sample {sample.get('sample_index')}"
        grouped[sample["task_id"]].append(Candidate(sample["code"], sample["mi"], sample["passed"], index, origin))
    rows = []
    for tid in sorted(grouped):
        for chosen, rejected in select_pairs(grouped[tid], "extremes", config.stage1.min_mi_margin,
                                             config.stage1.keep_ties):
            rows.append(pair_row(tasks[tid], prompts[tid], style, chosen, rejected, label))
    return rows
