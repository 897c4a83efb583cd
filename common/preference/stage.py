"""Stage ``pairs`` (paper stage 1b): MI-labelled preference pairs from the passing candidates of each task.

Every task's passing, distinct candidates are paired by the labelling rule in ``pairing.py`` (chosen = higher MI,
ties dropped unless ``stage1.keep_ties``). Each pair's prompt is the task's prompt in the style of the model that will
train on it, with ``sampling.system_prompt`` (the prompt the model is later evaluated with). The artifact is the
dataset (``pairing.PAIR_COLUMNS``) plus ``summary.json`` and ``mi_distribution.png``.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from common.pipeline.artifacts import save_dataset
from common.preference.pairing import Candidate, pair_row, pair_summary, pairs_dataset, plot_mi_distribution, select_pairs
from common.prompting.style import prompt_style
from common.prompting.templates import build_prompt


def label_pairs(ctx: Any) -> dict[str, Any]:
    config = ctx.config
    tasks = ctx.input_dataset("tasks")
    candidates = ctx.input_dataset("candidates")
    style = prompt_style(config.model)
    rows = build_pair_rows(candidates, tasks, config, style)
    out = save_dataset(pairs_dataset(rows, style), ctx.output)
    generator = candidates[0]["generator"] if len(candidates) else None
    summary = {**pair_summary(rows, len(tasks)), "generator": generator, "prompt_style": style,
               "min_mi_margin": config.stage1.min_mi_margin, "keep_ties": config.stage1.keep_ties}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    if rows:
        plot_mi_distribution(rows, out / "mi_distribution.png", f"Stage 1 pairs ({generator})")
    ctx.log(f"{summary['pairs']} pairs from {summary['tasks_with_pairs']}/{summary['tasks']} tasks "
            f"(ties kept: {summary['ties']}); mean MI chosen {_fmt(summary['mean_chosen_mi'])} vs rejected "
            f"{_fmt(summary['mean_rejected_mi'])} -> {out}")
    if not rows:
        ctx.log("WARNING: no pairs survived; DPO cannot run on this dataset")
    return {"summary": summary}


def build_pair_rows(candidates: Any, tasks: Any, config: Any, style: str) -> list[dict]:
    grouped: dict[int, list[Candidate]] = defaultdict(list)
    generator: dict[int, str] = {}
    for row in candidates:
        grouped[row["task_id"]].append(Candidate(row["code"], row["mi"], row["passed"], row["candidate_index"],
                                                 str(row.get("origin") or "")))
        generator[row["task_id"]] = row["generator"]
    rows = []
    for task in tasks:
        tid = int(task["task_id"])
        prompt = build_prompt(task, style, config.sampling.system_prompt)
        for chosen, rejected in select_pairs(grouped.get(tid, []), config.stage1.pairing,
                                             config.stage1.min_mi_margin, config.stage1.keep_ties):
            rows.append(pair_row(task, prompt, style, chosen, rejected, generator[tid]))
    return rows


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"
