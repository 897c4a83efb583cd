"""Stage ``optimize-data``: the training set (each training task's reference solution) through the steps of
``data_opt.steps`` in order, every solution verified in the sandbox, with a report of what each step changed.

The artifact (``1_global_dataset_generation/optimize-data/``) is the final training set (``base.ROW_COLUMNS``: task_id,
code, test_list, steps, ...; plus ``prompt`` and ``completion`` in the trained model's style, which stage ``sft-data``
trains on), ``report.json`` (per step: kept / changed / dropped / added / reverted
counts, MI and pylint before and after, the step's own details), ``quality.png`` (MI and pylint distributions before
and after each step) and ``steps/<i>_<name>/``, the set after each step. Before the first step the references
themselves are run: one that fails its own tests (MBPP task 927 does) is dropped and counted, never trained on. After
the last step every row is run again; a failure there is an error (a step broke its promise), not a silent drop.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

from datasets import Dataset

from common.dataopt.base import ROW_COLUMNS, StepContext, load_step, rows_from_tasks
from common.pipeline.artifacts import save_dataset

QUALITY_PNG = "quality.png"


def _quality(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    from common.signals.mi import maintainability_indices
    from common.signals.pylint_score import pylint_scores

    codes = [row["code"] for row in rows]
    mis = [mi for mi in maintainability_indices(codes) if mi is not None]
    lints = pylint_scores(codes, progress=False) if codes else []
    return {"rows": len(rows), "mi_mean": sum(mis) / len(mis) if mis else None,
            "pylint_mean": sum(lints) / len(lints) if lints else None, "mi": mis, "pylint": list(lints)}


def _dataset(rows: Sequence[dict[str, Any]], extra: Sequence[str] = ()) -> Dataset:
    return Dataset.from_list([{name: row[name] for name in (*ROW_COLUMNS, *extra)} for row in rows])


def _with_sft_columns(rows: Sequence[dict[str, Any]], tasks: Any, config: Any) -> list[dict[str, Any]]:
    """``prompt`` (the task in the trained model's style, with the evaluation's system prompt) and ``completion``
    (the optimised solution, fenced to match) for the ``sft-data`` stage."""
    from common.prompting.style import prompt_style
    from common.prompting.templates import build_prompt, completion_target

    style = prompt_style(config.model)
    return [{**row, "prompt": build_prompt(tasks[int(row["task_id"])], style, config.sampling.system_prompt),
             "completion": completion_target(row["code"], style)} for row in rows]


def _verified_references(rows: list[dict[str, Any]], ctx: StepContext) -> tuple[list[dict[str, Any]], list[int]]:
    verdicts = ctx.verify(rows, desc="optimize-data: references")
    failing = [int(row["task_id"]) for row, v in zip(rows, verdicts) if not v["passed"]]
    return [row for row, v in zip(rows, verdicts) if v["passed"]], failing


def optimize(tasks: Sequence[dict[str, Any]], ctx: StepContext, steps: Sequence[str], out: Any = None,
             rows: list[dict[str, Any]] | None = None, start: str = "references"
             ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(final rows, one report entry per step). The set starts as the tasks' references, or as ``rows`` (a
    candidate pool); either way the starting solutions are run first and failing ones left out. ``out``: where
    each step's set is saved (``steps/<i>_<name>``)."""
    for name in steps:
        load_step(name)  # an unknown step fails before anything runs
    rows, failing = _verified_references(rows if rows is not None else rows_from_tasks(tasks), ctx)
    if failing:
        ctx.log(f"WARNING: {len(failing)} starting solution(s) fail their own tests and are left out: {failing}")
    reports = [{"step": start, "counts": {"kept": len(rows), "dropped": len(failing)},
                "details": {"failing_task_ids": failing}}]
    before = _quality(rows)
    for number, name in enumerate(steps, 1):
        result = load_step(name)(rows, ctx)
        after = _quality(result.rows)
        reports.append({"step": name, "counts": result.counts, "details": result.details,
                        "before": {k: v for k, v in before.items() if k not in ("mi", "pylint")},
                        "after": {k: v for k, v in after.items() if k not in ("mi", "pylint")},
                        "_distributions": (before, after)})
        ctx.log(f"{name}: {result.counts}; MI {_fmt(before['mi_mean'])} -> {_fmt(after['mi_mean'])}, pylint "
                f"{_fmt(before['pylint_mean'])} -> {_fmt(after['pylint_mean'])}")
        rows, before = result.rows, after
        if out is not None:
            save_dataset(_dataset(rows), out / "steps" / f"{number}_{name}")
    verdicts = ctx.verify(rows, desc="optimize-data: final check")
    broken = sorted({int(row["task_id"]) for row, v in zip(rows, verdicts) if not v["passed"]})
    if broken:
        raise RuntimeError(f"optimize-data: after steps {list(steps)} the solutions of tasks {broken[:20]} fail "
                           f"their tests; a step must keep every solution correct")
    return rows, reports


def optimize_data(ctx: Any) -> dict[str, Any]:
    config = ctx.config
    steps = list(config.data_opt.steps)
    step_ctx = _step_context(ctx)
    rows, reports = optimize(list(step_ctx.tasks.values()), step_ctx, steps, ctx.output)
    save_dataset(_dataset(_with_sft_columns(rows, step_ctx.tasks, config), ("prompt", "completion")), ctx.output)
    public = _write_report(reports, ctx.output)
    ctx.log(f"{len(rows)} training rows after {steps or 'no steps'} -> {ctx.output}")
    return {"steps": steps, "rows": len(rows), "report": public}


def _step_context(ctx: Any) -> StepContext:
    """The steps' context for a stage: its tasks, the sandbox, and the generator of the syn step."""
    config = ctx.config
    return StepContext(config=config.data_opt, tasks={int(t["task_id"]): t for t in ctx.input_dataset("tasks")},
                       sandbox=config.sandbox, work=ctx.work, model=config.generator_model or config.model,
                       sampling=config.stage1_sampling, log=ctx.log)


def _write_report(reports: Sequence[dict[str, Any]], out: Any) -> list[dict[str, Any]]:
    """``quality.png`` and ``report.json`` beside the dataset; returns the report without the distributions."""
    _plot(reports, out / QUALITY_PNG)
    public = [{k: v for k, v in entry.items() if not k.startswith("_")} for entry in reports]
    (out / "report.json").write_text(json.dumps(public, indent=2))
    return public


def _plot(reports: Sequence[dict[str, Any]], path: Any) -> None:
    """MI and pylint distributions before and after each step, one column per step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entries = [entry for entry in reports if "_distributions" in entry]
    if not entries:
        return
    fig, axes = plt.subplots(2, len(entries), figsize=(3.6 * len(entries), 5.5), squeeze=False)
    for column, entry in enumerate(entries):
        before, after = entry["_distributions"]
        for row, (metric, bins) in enumerate((("mi", range(0, 105, 5)), ("pylint", [x / 2 for x in range(21)]))):
            ax = axes[row][column]
            ax.hist([before[metric], after[metric]], bins=list(bins), label=["before", "after"], alpha=0.7)
            ax.set_title(f"{entry['step']}: {'MI' if metric == 'mi' else 'pylint score'}")
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


# --------------------------------------------------------------------------------------------------------------
# Candidate pools before pairing


CANDIDATE_FIELDS = ("task_id", "candidate_index", "code", "generator", "origin")


def optimize_candidates(ctx: Any) -> dict[str, Any]:
    """Stage ``optimize-candidates``: the passing candidates of every task through ``data_opt.steps``, then
    executed and MI-scored again, in the candidates' own schema, so ``pairs-optimized`` labels them as ``pairs``
    labels the originals. Failing candidates pass through unchanged (the exec and compile signals need them).
    A candidate a step rewrote keeps its index; one a step added (aug) gets the next free index of its task;
    its origin gains ``|<steps>``."""
    from common.signals.scoring import score_solutions

    config = ctx.config
    step_ctx = _step_context(ctx)
    tasks = step_ctx.tasks
    pool = ctx.input_dataset("candidates").to_list()
    passing = [c for c in pool if c["passed"]]
    start = [{**{k: c[k] for k in CANDIDATE_FIELDS}, "test_list": list(tasks[int(c["task_id"])]["test_list"]),
              "test_setup_code": tasks[int(c["task_id"])].get("test_setup_code") or "",
              "text": tasks[int(c["task_id"])]["text"], "steps": []} for c in passing]
    steps = list(config.data_opt.steps)
    rows, reports = optimize(list(tasks.values()), step_ctx, steps, ctx.output, rows=start, start="candidates")
    taken: dict[int, set[int]] = {}
    for c in pool:
        taken.setdefault(int(c["task_id"]), set()).add(int(c["candidate_index"]))
    seen: set[tuple[int, int]] = set()
    for row in rows:
        key = (int(row["task_id"]), int(row["candidate_index"]))
        if key in seen:  # a row a step added: the next free index of its task
            index = max(taken[key[0]]) + 1
            taken[key[0]].add(index)
            row["candidate_index"], key = index, (key[0], index)
        seen.add(key)
        if row["steps"]:
            row["origin"] = f"{row['origin']}|{'+'.join(row['steps'])}"
    scores = score_solutions([r["task_id"] for r in rows], [r["code"] for r in rows], tasks, config.sandbox,
                             desc="optimize-candidates: scoring")
    out_rows = [{**{k: r[k] for k in CANDIDATE_FIELDS}, **score} for r, score in zip(rows, scores)]
    out_rows += [c for c in pool if not c["passed"]]
    out_rows.sort(key=lambda r: (int(r["task_id"]), int(r["candidate_index"])))
    save_dataset(Dataset.from_list(out_rows), ctx.output)
    public = _write_report(reports, ctx.output)
    ctx.log(f"{len(rows)} passing candidates after {steps or 'no steps'} (+{len(pool) - len(passing)} failing, "
            f"unchanged) -> {ctx.output}")
    return {"steps": steps, "rows": len(out_rows), "report": public}
