"""Execute solutions against their task's asserts and score them by MI: the step every stage shares.

Stage 1b validates generator candidates, stage 2a filters self-generated samples and stage 3 computes pass@k
and average MI; all of them call :func:`score_solutions`, so the sandbox limits and the MI rule are the same
everywhere. Identical (task, code) pairs are executed once.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from common.config import SandboxConfig
from common.signals.mi import maintainability_indices

SCORE_COLUMNS = ("passed", "status", "detail", "duration", "tests_passed", "tests_total", "mi")


def entry_points(task: Mapping[str, Any]) -> list[str]:
    """The names a task's reference solution defines at top level: the functions under test. The sandbox lets
    a builtin name a test calls resolve to the candidate's definition only for these (MBPP task 126 tests its
    own ``sum``), so a candidate cannot redefine ``sorted`` or ``set`` to bend what the test computes."""
    import ast

    try:
        tree = ast.parse(task.get("code") or "")
    except (SyntaxError, ValueError):
        return []
    return sorted({node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                                       ast.ClassDef))})


def sandbox_job(task: Mapping[str, Any]) -> dict[str, Any]:
    """The sandbox job fields of a task in any benchmark's format (``common.tasks.benchmarks``), without the code."""
    names = entry_points(task)
    first = task.get("entry_point") or ""
    if first:
        names = [first] + [n for n in names if n != first]
    return {"tests": list(task["test_list"]), "setup": task.get("test_setup_code") or "",
            "imports": list(task.get("test_imports") or []), "entry_points": names,
            "form": task.get("test_form") or "asserts"}


def score_solutions(task_ids: Sequence[int], codes: Sequence[str], tasks: Mapping[int, Mapping[str, Any]],
                    sandbox: SandboxConfig | None = None, desc: str = "executing") -> list[dict[str, Any]]:
    """One dict per solution (input order): sandbox verdict fields plus ``mi`` (None when unparsable)."""
    from common.sandbox import run_batch

    sandbox = sandbox or SandboxConfig()
    if len(task_ids) != len(codes):
        raise ValueError(f"{len(task_ids)} task ids for {len(codes)} solutions")
    missing = sorted({int(t) for t in task_ids} - set(tasks))
    if missing:
        raise KeyError(f"solutions reference unknown task ids {missing[:10]}")
    keys = list(dict.fromkeys(zip((int(t) for t in task_ids), codes)))
    jobs = {tid: sandbox_job(tasks[tid]) for tid in {tid for tid, _ in keys}}
    jobs = [{**jobs[tid], "code": code} for tid, code in keys]
    results = run_batch(jobs, workers=sandbox.workers, timeout=sandbox.timeout, memory_mb=sandbox.memory_mb,
                        desc=desc, test_timeout=sandbox.test_timeout) if jobs else []
    mis = maintainability_indices(code for _, code in keys)
    by_key = {
        key: {"passed": bool(res.passed), "status": res.status, "detail": res.detail[:300],
              "duration": float(res.duration), "tests_passed": int(res.tests_passed),
              "tests_total": int(res.tests_total), "mi": mi}
        for key, res, mi in zip(keys, results, mis)
    }
    return [dict(by_key[(int(tid), code)]) for tid, code in zip(task_ids, codes)]
