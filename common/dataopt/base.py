"""What every data-optimisation step shares: the row format, the context a step runs in, its result, and the
verification that keeps every solution correct.

A training set is a list of rows, one solution each: ``task_id``, ``code`` (the current solution), ``test_list``,
``test_setup_code``, ``text`` (the task), ``origin`` (what made this solution: ``reference``, ``aug:<rewrites>``,
``syn:<try>``) and ``steps`` (the steps that changed this row, in order, e.g. ``["syn", "ref"]``). A step takes the
rows and returns new rows plus counts; it never mutates its input. Steps are named in ``STEPS`` and imported only
when used.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

# step name -> "module:function"; the function is fn(rows, ctx: StepContext) -> StepResult
STEPS: dict[str, str] = {
    "ref": "common.dataopt.refactor:refactor_step",
    "cle": "common.dataopt.clean:clean_step",
    "sel": "common.dataopt.select:select_step",
    "aug": "common.dataopt.augment:augment_step",
    "syn": "common.dataopt.synthesize:synthesize_step",
}
ROW_COLUMNS = ("task_id", "code", "test_list", "test_setup_code", "text", "origin", "steps")


@dataclass
class StepResult:
    """A step's output rows and what it did. ``counts``: kept (unchanged), changed, dropped, added, and
    ``reverted`` (a rewrite that failed its tests, so the original was kept). ``details``: anything else worth
    reporting (per-reason drop counts, tries used)."""

    rows: list[dict[str, Any]]
    counts: dict[str, int]
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class StepContext:
    """What a step may use: its settings, the tasks (for tests), the sandbox settings, scratch space, the model
    configs a generating step needs, and a logger."""

    config: Any  # DataOptConfig
    tasks: Mapping[int, Mapping[str, Any]]  # task_id -> task dict (text, code, test_list, test_setup_code, ...)
    sandbox: Any  # SandboxConfig
    work: Path
    model: Any = None  # ModelConfig of a generating step (syn, local)
    sampling: Any = None  # SamplingConfig of a generating step
    log: Callable[[str], None] = print

    def verify(self, rows: Sequence[Mapping[str, Any]], desc: str = "verifying") -> list[dict[str, Any]]:
        """Run each row's ``code`` against its task's tests in the sandbox: one verdict dict (passed, status,
        tests_passed, tests_total, mi) per row, in order. Every step that writes code calls this."""
        from common.signals.scoring import score_solutions

        return score_solutions([int(r["task_id"]) for r in rows], [r["code"] for r in rows], self.tasks,
                               self.sandbox, desc=desc)


def load_step(name: str) -> Callable[[list[dict[str, Any]], StepContext], StepResult]:
    if name not in STEPS:
        raise ValueError(f"unknown data-optimisation step {name!r}; steps: {sorted(STEPS)}")
    module, _, function = STEPS[name].partition(":")
    return getattr(importlib.import_module(module), function)


def changed_row(row: Mapping[str, Any], code: str, step: str, origin: str | None = None) -> dict[str, Any]:
    """A copy of ``row`` with new code, ``step`` appended to its steps (and a new origin when given)."""
    return {**row, "code": code, "steps": [*row.get("steps", []), step],
            **({"origin": origin} if origin is not None else {})}


def rows_from_tasks(tasks: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The starting training set: each task's reference solution."""
    return [{"task_id": int(t["task_id"]), "code": t["code"], "test_list": list(t["test_list"]),
             "test_setup_code": t.get("test_setup_code") or "", "text": t["text"], "origin": "reference",
             "steps": []} for t in tasks]
