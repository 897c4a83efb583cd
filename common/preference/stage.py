"""Stages ``pairs`` (paper stage 1b), ``singles`` and ``targets``: training data from the scored candidates.

All three rank each task's candidates by ``stage1.signal`` (``signals.py``; the paper's ``mi``: chosen = the passing
candidate with the higher MI, ties dropped unless ``stage1.keep_ties``) and differ only in what they keep:

* ``pairs`` (DPO): (chosen, rejected) pairs, ``pairing.PAIR_COLUMNS``; with a signal other than mi also
  ``pairing.SIGNAL_PAIR_COLUMNS``. Plus ``summary.json`` and ``mi_distribution.png``. With ``mi`` the rows are
  exactly those of the paper's rule (``pairing.select_pairs``; tests/test_signals.py compares them).
* ``singles`` (KTO): every candidate the signal labels, desirable or not (SINGLE_COLUMNS).
* ``targets`` (SFT): the best candidate of each task (TARGET_COLUMNS).

Each prompt is the task's prompt in the style of the model that will train on it, with ``sampling.system_prompt``
(the prompt the model is later evaluated with); completions are fenced as the pairs' (``completion_target``).
The ``compile`` signal's negatives are corrupted copies made here (``corruption.py``), seeded per task by
``stage1.corruption_seed``: candidate_index -1, origin ``corrupt:<what>``.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from typing import Any

from common.pipeline.artifacts import save_dataset
from common.preference import signals
from common.preference.pairing import Candidate, pair_row, pair_summary, pairs_dataset, plot_mi_distribution
from common.prompting.style import prompt_style
from common.prompting.templates import build_prompt, completion_target

SINGLE_COLUMNS = ("task_id", "prompt", "completion", "label", "code", "candidate_index", "origin", "signal", "score")
TARGET_COLUMNS = ("task_id", "prompt", "completion", "code", "candidate_index", "origin", "signal", "score")


def label_pairs(ctx: Any) -> dict[str, Any]:
    config = ctx.config
    tasks = ctx.input_dataset("tasks")
    candidates = ctx.input_dataset("candidates")
    style = prompt_style(config.model)
    criteria = signals.parse_signal(config.stage1.signal)
    rows = build_pair_rows(candidates, tasks, config, style)
    out = save_dataset(pairs_dataset(rows, style, signal_columns=criteria != ("mi",)), ctx.output)
    generator = candidates[0]["generator"] if len(candidates) else None
    summary = {**pair_summary(rows, len(tasks)), "generator": generator, "prompt_style": style,
               "min_mi_margin": config.stage1.min_mi_margin, "keep_ties": config.stage1.keep_ties,
               "signal": ",".join(criteria)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    if any(row["chosen_mi"] is not None or row["rejected_mi"] is not None for row in rows):
        plot_mi_distribution(rows, out / "mi_distribution.png", f"Stage 1 pairs ({generator})")
    by = "" if criteria == ("mi",) else f"signal {summary['signal']}: "
    ctx.log(f"{by}{summary['pairs']} pairs from {summary['tasks_with_pairs']}/{summary['tasks']} tasks "
            f"(ties kept: {summary['ties']}); mean MI chosen {_fmt(summary['mean_chosen_mi'])} vs rejected "
            f"{_fmt(summary['mean_rejected_mi'])} -> {out}")
    if not rows:
        ctx.log("WARNING: no pairs survived; DPO cannot run on this dataset")
    return {"summary": summary}


def task_pools(candidates: Any, tasks: Any, config: Any) -> list[tuple[Any, str | None, list[signals.Scored]]]:
    """(task, generator, ranked pool) for every task, in task order (``signals.build_pool``)."""
    criteria = signals.parse_signal(config.stage1.signal)
    grouped: dict[int, list[Candidate]] = defaultdict(list)
    generator: dict[int, str] = {}
    for row in candidates:
        grouped[row["task_id"]].append(Candidate(row["code"], row["mi"], row["passed"], row["candidate_index"],
                                                 str(row.get("origin") or "")))
        generator[row["task_id"]] = row["generator"]
    pylint = None
    if "pylint" in criteria:  # only passing code is ranked by pylint; every distinct code is linted once
        from common.signals.pylint_score import pylint_scores

        codes = list(dict.fromkeys(c.code for pool in grouped.values() for c in pool if c.passed))
        pylint = dict(zip(codes, pylint_scores(codes)))
    negatives, seed = 0, 0
    if "compile" in criteria:
        negatives, seed = config.stage1.compile_negatives, config.stage1.corruption_seed
    pools = []
    for task in tasks:
        tid = int(task["task_id"])
        pool = signals.build_pool(grouped.get(tid, []), criteria, pylint, negatives, f"{seed}:{tid}")
        pools.append((task, generator.get(tid), pool))
    return pools


def build_pair_rows(candidates: Any, tasks: Any, config: Any, style: str) -> list[dict]:
    criteria = signals.parse_signal(config.stage1.signal)
    name = None if criteria == ("mi",) else ",".join(criteria)  # mi: exactly the paper's columns
    rows = []
    for task, generator, pool in task_pools(candidates, tasks, config):
        prompt = build_prompt(task, style, config.sampling.system_prompt)
        for chosen, rejected in signals.select_pairs(pool, config.stage1.pairing, config.stage1.min_mi_margin,
                                                     config.stage1.keep_ties):
            scores = None if name is None else (chosen.score_json(), rejected.score_json())
            rows.append(pair_row(task, prompt, style, chosen.candidate, rejected.candidate, generator, name, scores))
    return rows


def _example(task: Any, prompt: Any, style: str, scored: signals.Scored) -> dict[str, Any]:
    candidate = scored.candidate
    return {"task_id": int(task["task_id"]), "prompt": prompt, "completion": completion_target(candidate.code, style),
            "code": candidate.code, "candidate_index": int(candidate.index), "origin": candidate.origin,
            "signal": ",".join(scored.criteria), "score": scored.score_json()}


def _examples_dataset(rows: list[dict[str, Any]], columns: tuple[str, ...], style: str) -> Any:
    """Rows as a dataset with a fixed schema (also when empty): prompt a string or chat messages, like the pairs."""
    from datasets import Dataset, Features, List, Value

    prompt = Value("string") if style == "completion" else List({"role": Value("string"), "content": Value("string")})
    kinds = {"task_id": Value("int64"), "prompt": prompt, "label": Value("bool"), "candidate_index": Value("int64")}
    features = Features({name: kinds.get(name, Value("string")) for name in columns})
    if not rows:
        return Dataset.from_dict({name: [] for name in features}, features=features)
    return Dataset.from_list([{name: row[name] for name in columns} for row in rows], features=features)


def build_single_rows(candidates: Any, tasks: Any, config: Any, style: str) -> list[dict]:
    rows = []
    for task, _generator, pool in task_pools(candidates, tasks, config):
        prompt = build_prompt(task, style, config.sampling.system_prompt)
        for scored, desirable in signals.label_singles(pool):
            rows.append({**_example(task, prompt, style, scored), "label": bool(desirable)})
    return rows


def label_singles(ctx: Any) -> dict[str, Any]:
    """Stage ``singles``: every candidate the signal labels (``signals.label_singles``), for KTO."""
    config = ctx.config
    tasks = ctx.input_dataset("tasks")
    style = prompt_style(config.model)
    rows = build_single_rows(ctx.input_dataset("candidates"), tasks, config, style)
    out = save_dataset(_examples_dataset(rows, SINGLE_COLUMNS, style), ctx.output)
    labels: dict[int, set[bool]] = defaultdict(set)
    for row in rows:
        labels[row["task_id"]].add(row["label"])
    summary = {"tasks": len(tasks), "examples": len(rows), "desirable": sum(row["label"] for row in rows),
               "undesirable": sum(not row["label"] for row in rows), "tasks_covered": len(labels),
               "tasks_with_both_labels": sum(len(v) == 2 for v in labels.values()),
               "corrupted": sum(row["candidate_index"] == signals.CORRUPT_INDEX for row in rows),
               "signal": ",".join(signals.parse_signal(config.stage1.signal)), "prompt_style": style}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    ctx.log(f"signal {summary['signal']}: {summary['examples']} singles ({summary['desirable']} desirable, "
            f"{summary['undesirable']} undesirable) from {summary['tasks_covered']}/{summary['tasks']} tasks "
            f"(both labels in {summary['tasks_with_both_labels']}) -> {out}")
    if not rows:
        ctx.log("WARNING: no candidate was labelled; KTO cannot run on this dataset")
    elif not summary["desirable"] or not summary["undesirable"]:
        ctx.log("WARNING: only one label occurs; KTO needs desirable and undesirable examples")
    return {"summary": summary}


def build_target_rows(candidates: Any, tasks: Any, config: Any, style: str) -> list[dict]:
    rows = []
    for task, _generator, pool in task_pools(candidates, tasks, config):
        best = signals.select_target(pool)
        if best is not None:
            rows.append({**_example(task, build_prompt(task, style, config.sampling.system_prompt), style, best),
                         "mi": best.candidate.mi})
    return rows


def select_targets(ctx: Any) -> dict[str, Any]:
    """Stage ``targets``: the best candidate of each task (``signals.select_target``), for SFT."""
    config = ctx.config
    tasks = ctx.input_dataset("tasks")
    style = prompt_style(config.model)
    rows = build_target_rows(ctx.input_dataset("candidates"), tasks, config, style)
    out = save_dataset(_examples_dataset(rows, TARGET_COLUMNS, style), ctx.output)
    mis = [row["mi"] for row in rows if row["mi"] is not None]
    summary = {"tasks": len(tasks), "targets": len(rows), "tasks_covered": len({row["task_id"] for row in rows}),
               "mean_mi": sum(mis) / len(mis) if mis else None,
               "origins": dict(Counter(row["origin"] for row in rows).most_common(10)),
               "signal": ",".join(signals.parse_signal(config.stage1.signal)), "prompt_style": style}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    ctx.log(f"signal {summary['signal']}: {summary['targets']} targets from {summary['tasks_covered']}/"
            f"{summary['tasks']} tasks; mean MI {_fmt(summary['mean_mi'])} -> {out}")
    if not rows:
        ctx.log("WARNING: no task has a target; SFT cannot run on this dataset")
    return {"summary": summary}


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"
