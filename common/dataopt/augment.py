"""Step ``aug``: add semantics-preserving rewrites of each solution, keeping the originals.

The rewrite engine (``common.rewrite.generate_variants``) writes up to ``aug_variants_per_task`` variants of each
row's code: loops <-> comprehensions, guard clauses, helper extraction, renames, docstrings, ... Its transforms are
conservative but rest on assumptions beyond plain Python semantics (see ``common.rewrite``), so a variant is never
trusted: every variant of every row is run against its task's tests in ONE ``ctx.verify`` call (one sandbox batch
keeps the workers busy, where a call per row would pay the start-up each time), and only passing ones are added.

A variant is added only when it differs from every solution the task already has (its originals and the
variants added before it, compared after stripping surrounding blank lines), so augmentation never duplicates a
training example. Seeds are ``aug_seed + task_id``, as for the stage-1 rewrite generator: each task draws its own
rewrites, and the same settings always give the same training set.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from common.dataopt.base import StepContext, StepResult, changed_row


def augment_step(rows: list[dict[str, Any]], ctx: StepContext) -> StepResult:
    """Every row, each followed by its passing, distinct variants (origin ``aug:<rewrites>``, steps + ["aug"]).
    counts: kept (the originals), added, rejected (variants that failed their tests)."""
    from common.rewrite import generate_variants

    config = ctx.config
    per_row = int(config.aug_variants_per_task)
    if per_row < 0:
        raise ValueError(f"data_opt.aug_variants_per_task must be >= 0, got {config.aug_variants_per_task!r}")
    # what each task already has: a variant equal to any of these adds nothing
    seen: dict[int, set[str]] = {}
    for row in rows:
        seen.setdefault(int(row["task_id"]), set()).add(row["code"].strip())
    candidates: list[tuple[int, dict[str, Any]]] = []  # (index of the original row, variant row)
    duplicates = no_variants = 0
    for index, row in enumerate(rows):
        task_id = int(row["task_id"])
        variants = generate_variants(row["code"], max_variants=per_row, seed=int(config.aug_seed) + task_id,
                                     task_text=row.get("text") or None, include_reformat=False) if per_row else []
        if per_row and not variants:
            no_variants += 1
        for variant in variants:
            key = variant.code.strip()
            if key in seen[task_id]:
                duplicates += 1
                continue
            seen[task_id].add(key)  # reserved now, so two rows of one task cannot both add the same rewrite
            candidates.append((index, changed_row(row, variant.code, "aug",
                                                  origin="aug:" + "+".join(variant.transforms))))
    verdicts = ctx.verify([variant for _, variant in candidates], desc="aug: verifying variants") if candidates else []
    added: dict[int, list[dict[str, Any]]] = {}
    failures: Counter = Counter()
    transforms: Counter = Counter()
    for (index, variant), verdict in zip(candidates, verdicts):
        if verdict["passed"]:
            added.setdefault(index, []).append(variant)
            transforms.update(variant["origin"][len("aug:"):].split("+"))
        else:
            failures[verdict["status"]] += 1
    out: list[dict[str, Any]] = []
    for index, row in enumerate(rows):
        out.append(dict(row))
        out.extend(added.get(index, []))
    n_added = sum(len(group) for group in added.values())
    n_rejected = sum(failures.values())
    ctx.log(f"aug: {len(rows)} originals kept, {n_added} variants added, {n_rejected} rejected (failed their tests)")
    details = {"candidates": len(candidates), "duplicates": duplicates, "rows_without_variants": no_variants,
               "rejected_by_status": dict(failures), "transforms_added": dict(sorted(transforms.items()))}
    return StepResult(rows=out, counts={"kept": len(rows), "added": n_added, "rejected": n_rejected}, details=details)
