"""Metrics as small scorers over per-sample records: one function per number, shared by ``evaluate``, the
report and ``python -m common score``, so the same number is always computed by the same code.

A record is one sample: ``task_id``, ``code``, the sandbox's ``passed``/``status``/``tests_passed``/
``tests_total``, ``mi`` (radon, None when unparsable), and - for the similarity scorers - ``reference``.
:func:`annotate` adds the per-sample facts the scorers count (``compiles``, ``executed``, ``trivial``).

Scorers (``SCORERS``; pick with ``metrics=[...]``):

``pass``        ``pass_at_<k>`` (Chen et al. 2021, unbiased for n >= k) and ``pass_rate``
``exec``        ``exec_at_<k>``: the sample ran to the end of its tests without an exception, timeout or crash
                (a failed assert still counts as executed), same estimator
``compile``     ``compile_at_<k>``: the sample compiles (Python's ``compile``), same estimator
``pass_ratio``  ``avg_pass_ratio``: per task, the mean share of its tests a sample passes; averaged over tasks
``mi``          the paper's ``avg_mi_macro`` (over tasks with a passing sample, the mean MI of its passing samples),
                ``avg_mi_micro`` (passing samples pooled), ``avg_mi_all`` (every parsable sample), and
                ``trivial_share`` / ``mi_100_share``: radon gives empty or trivial code MI 100, which inflates an
                average over all samples (one published study had a quarter of its generations at exactly 100)
``pylint``      ``pylint_score``: mean pylint rating (default configuration, 0 when pylint gives none)
``bleu``        ``bleu`` (sacrebleu, corpus level) against the task's reference solution
``codebleu``    ``codebleu`` (the ``codebleu`` package, called as (references, predictions))
``bertscore``   ``bertscore_f1`` (BERTScore; CodeBERTScore with a code model), optional: needs a model
"""

from __future__ import annotations

import ast
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

from common.evaluation.metrics import avg_mi_macro, avg_mi_micro, mean_pass_at_k, task_outcomes

EXECUTED_STATUSES = ("passed", "failed")
DEFAULT_METRICS = ("pass", "mi")
ALL_METRICS = ("pass", "exec", "compile", "pass_ratio", "mi", "pylint", "bleu", "codebleu")


def compiles(code: str) -> bool:
    try:
        compile(code, "<sample>", "exec", dont_inherit=True)
        return True
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return False


def is_trivial(code: str) -> bool:
    """Empty code or code that defines and computes nothing (only pass, docstrings, imports, constants)."""
    try:
        body = ast.parse(code).body
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return False
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom, ast.Pass)):
            continue
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue
        return False
    return True


def annotate(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Records with ``compiles``, ``executed`` and ``trivial`` filled in (kept when already there)."""
    out = []
    for r in records:
        r = dict(r)
        code = r.get("code") or ""
        r.setdefault("compiles", compiles(code))
        r.setdefault("executed", r.get("status") in EXECUTED_STATUSES)
        r.setdefault("trivial", is_trivial(code))
        out.append(r)
    return out


def unbiased_at_k(records: Sequence[Mapping[str, Any]], flag: str, k: int) -> float | None:
    """The mean over tasks of 1 - C(n-c, k)/C(n, k) for the per-sample boolean ``flag``; None when some task has
    fewer than k samples (undefined there). The very functions stage 3 uses for pass@k (``metrics``), with
    ``flag`` in the place of ``passed``, so pass@k from ``score`` and from ``run`` are one computation."""
    outcomes = task_outcomes([r["task_id"] for r in records], [bool(r[flag]) for r in records],
                             [None] * len(records))
    return mean_pass_at_k(outcomes, k)


def score_pass(records, ks, options=None) -> dict[str, Any]:
    out = {f"pass_at_{k}": unbiased_at_k(records, "passed", k) for k in ks}
    out["pass_rate"] = sum(bool(r["passed"]) for r in records) / len(records) if records else None
    return out


def score_exec(records, ks, options=None) -> dict[str, Any]:
    return {f"exec_at_{k}": unbiased_at_k(records, "executed", k) for k in ks}


def score_compile(records, ks, options=None) -> dict[str, Any]:
    return {f"compile_at_{k}": unbiased_at_k(records, "compiles", k) for k in ks}


def score_pass_ratio(records, ks, options=None) -> dict[str, Any]:
    per_task: dict[int, list[float]] = {}
    for r in records:
        total = int(r.get("tests_total") or 0)
        ratio = int(r.get("tests_passed") or 0) / total if total else 0.0
        per_task.setdefault(int(r["task_id"]), []).append(ratio)
    means = [sum(v) / len(v) for v in per_task.values()]
    return {"avg_pass_ratio": sum(means) / len(means) if means else None}


def _mi(value) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def score_mi(records, ks, options=None) -> dict[str, Any]:
    outcomes = task_outcomes([r["task_id"] for r in records], [r["passed"] for r in records],
                             [r.get("mi") for r in records])
    parsable = [m for m in (_mi(r.get("mi")) for r in records) if m is not None]
    n = len(records)
    return {"avg_mi_macro": avg_mi_macro(outcomes), "avg_mi_micro": avg_mi_micro(outcomes),
            "avg_mi_all": sum(parsable) / len(parsable) if parsable else None,
            "trivial_share": sum(bool(r["trivial"]) for r in records) / n if n and "code" in records[0] else None,
            "mi_100_share": sum(m == 100.0 for m in parsable) / len(parsable) if parsable else None}


def score_pylint(records, ks, options=None) -> dict[str, Any]:
    if records and "pylint" not in records[0]:
        from common.signals.pylint_score import pylint_scores

        scores = pylint_scores([r.get("code") or "" for r in records])
        for r, s in zip(records, scores):
            r["pylint"] = s
    values = [float(r["pylint"]) for r in records]
    return {"pylint_score": sum(values) / len(values) if values else None}


def _references(records) -> tuple[list[str], list[str]]:
    missing = [r["task_id"] for r in records if not r.get("reference")]
    if missing:
        raise ValueError(f"similarity scorers need each task's reference solution; missing for tasks {missing[:5]}")
    return [r["reference"] for r in records], [r.get("code") or "" for r in records]


def score_bleu(records, ks, options=None) -> dict[str, Any]:
    from common.signals.similarity import bleu

    refs, preds = _references(records)
    return {"bleu": bleu(refs, preds) if records else None}


def score_codebleu(records, ks, options=None) -> dict[str, Any]:
    from common.signals.similarity import codebleu

    refs, preds = _references(records)
    return {"codebleu": codebleu(refs, preds)["codebleu"] if records else None}


def score_bertscore(records, ks, options=None) -> dict[str, Any]:
    """BERTScore F1 against the reference (CodeBERTScore with a code model); needs ``options["bertscore_model"]``,
    a local path or hub id (e.g. ``neulab/codebert-python``, ``bertscore_layers`` 11)."""
    from common.signals.similarity import bertscore

    model = (options or {}).get("bertscore_model")
    if not model:
        raise ValueError("the bertscore scorer needs a model: evaluation.bertscore_model / --bertscore-model")
    refs, preds = _references(records)
    result = bertscore(refs, preds, model, num_layers=(options or {}).get("bertscore_layers"))
    return {"bertscore_f1": result["f1"] if records else None}


@dataclass(frozen=True)
class Scorer:
    name: str
    compute: Callable[..., dict[str, Any]]  # (records, ks, options) -> numbers


SCORERS = {s.name: s for s in (Scorer("pass", score_pass), Scorer("exec", score_exec), Scorer("compile", score_compile),
                               Scorer("pass_ratio", score_pass_ratio), Scorer("mi", score_mi),
                               Scorer("pylint", score_pylint), Scorer("bleu", score_bleu),
                               Scorer("codebleu", score_codebleu), Scorer("bertscore", score_bertscore))}


def check_metrics(metrics: Iterable[str]) -> list[str]:
    chosen = list(dict.fromkeys(metrics))
    unknown = [m for m in chosen if m not in SCORERS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; expected some of {list(SCORERS)}")
    return chosen


def score_records(records: Iterable[Mapping[str, Any]], ks: Sequence[int] = (1, 10),
                  metrics: Iterable[str] = DEFAULT_METRICS, options: Mapping[str, Any] | None = None
                  ) -> dict[str, Any]:
    """Every selected number for one set of samples, plus ``n_tasks`` and ``n_samples``; ``options`` carries
    what a scorer needs besides the records (``bertscore_model``, ``bertscore_layers``)."""
    rows = annotate(records)
    out: dict[str, Any] = {"n_tasks": len({int(r["task_id"]) for r in rows}), "n_samples": len(rows)}
    for name in check_metrics(metrics):
        out.update(SCORERS[name].compute(rows, ks, options))
    return out
