"""Stage ``candidates`` (paper stage 1a): candidate solutions for every training task, each executed and scored.

The configured generator (``stage1.generator``: ``api``, ``local`` or ``rewrite``, see ``generators.py``) writes the
candidates. Then every candidate runs against its task's asserts in the sandbox and is scored by MI
(``common.signals.scoring``), the same way for every generator. The dataset has one row per candidate: task_id,
candidate_index, code, generator, origin, the verdict (passed, status, detail, duration) and mi.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from datasets import Dataset

from common.candidates.generators import GENERATORS
from common.pipeline.artifacts import save_dataset
from common.signals.scoring import score_solutions


def generate_candidates(ctx: Any) -> dict[str, Any]:
    config = ctx.config
    name = config.stage1.generator
    if name not in GENERATORS:
        raise ValueError(f"stage1.generator must be one of {sorted(GENERATORS)}, got {name!r}")
    tasks = ctx.input_dataset("tasks")
    rows = GENERATORS[name](tasks, config, ctx.work)
    by_id = {int(task["task_id"]): task for task in tasks}
    scores = score_solutions([r["task_id"] for r in rows], [r["code"] for r in rows], by_id, config.sandbox,
                             desc="candidates: executing")
    rows = [{**row, **score} for row, score in zip(rows, scores)]
    save_dataset(Dataset.from_list(rows), ctx.output)
    summary = candidate_summary(rows, len(tasks))
    ctx.log(f"{name}: {summary['candidates']} candidates for {summary['tasks']} tasks; pass rate "
            f"{summary['pass_rate']:.1%}; tasks with >= 2 distinct passing: {summary['tasks_with_2_passing']}")
    # index i = the i-th candidate of each task (for `api`: the model's output i+1; the paper reported 245/372 and
    # 242/372 passing for Gemini's outputs 1 and 2; for `rewrite`: index 0 is the reference itself)
    ctx.log("  pass rate by candidate index (the i-th candidate of every task; 0 = the first output"
            + (", the unchanged reference" if name == "rewrite" else "") + "):")
    for index, rate in summary["pass_rate_by_index"].items():
        ctx.log(f"    candidate {index}: {rate:.1%} pass")
    return {"summary": summary}


def candidate_summary(rows: list[dict[str, Any]], n_tasks: int) -> dict[str, Any]:
    """Counts printed after the stage and kept in its manifest (pass rate per candidate index: the paper reported
    245/372 and 242/372 passing for Gemini's outputs 1 and 2)."""
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
        "statuses": dict(Counter(row["status"] for row in rows)),
    }
