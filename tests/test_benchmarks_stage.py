"""Stage 3 on several benchmarks at once (``evaluation.benchmarks``) with extra scorers (``evaluation.metrics``):
real sandbox, real report; a fake backend answers MBPP and HumanEval prompts with known right and wrong code."""

from __future__ import annotations

import csv

import pytest

import common.generation
from common.config import load_config
from common.pipeline.artifacts import RunDir, load_dataset_dir, read_manifest
from common.pipeline.runner import run_stage
from common.prompting.templates import build_prompt, program_from_reply, user_message
from common.tasks.benchmarks import load_benchmark
from common.tasks.mbpp import load_mbpp
from tests.helpers import REPO

N = 2
WRONG = "def nothing():\n    return None\n"


class TwoBenchmarkBackend:
    """MBPP: the reference for sample 0, a wrong program for sample 1. HumanEval: the canonical solution for
    sample 0 (as the style asks: a body for completion prompts, the whole function for chat), ``pass`` for 1."""

    def __init__(self, mbpp, humaneval):
        self.mbpp, self.humaneval = mbpp, humaneval

    def answer(self, prompt, i):
        text = prompt if isinstance(prompt, str) else prompt[-1]["content"]
        for task in self.humaneval:
            if task["prompt"].strip() in text:
                body = task["code"][len(task["prompt"]):]
                if i:
                    return "    pass\n" if isinstance(prompt, str) else task["prompt"] + "    pass\n"
                return body if isinstance(prompt, str) else task["code"]
        [task] = [t for t in self.mbpp if user_message(t) in text]
        return task["code"] if i == 0 else WRONG

    def generate(self, prompts, num_samples, seed):
        from common.generation import Completion

        return [[Completion(text=self.answer(p, i), code=self.answer(p, i), finish_reason="stop", num_tokens=3)
                 for i in range(num_samples)] for p in prompts]


def test_two_benchmarks_and_extra_scorers_end_to_end(monkeypatch, tmp_path):
    config = load_config(REPO / "configs" / "smoke.yaml", [
        f"sampling.num_samples={N}", "evaluation.k=[1,2]", "evaluation.runs=1", "evaluation.variants=[baseline]",
        "evaluation.benchmarks=[mbpp,humaneval]", "evaluation.metrics=[pass,mi,exec,compile,pass_ratio]"])
    mbpp = [dict(t) for t in load_mbpp("test", config.data.source, limit=config.data.max_eval_tasks)]
    humaneval = load_benchmark("humaneval")[: config.data.max_eval_tasks]
    monkeypatch.setattr(common.generation, "make_backend",
                        lambda *a, **k: TwoBenchmarkBackend(mbpp, humaneval))
    run = RunDir(tmp_path / "run")
    run_stage("evaluate", config, run.root)
    samples = run.stage_dir("evaluate")
    units = read_manifest(samples)["units"]
    assert [(u.get("benchmark", "mbpp"), u["folder"]) for u in units] == [
        ("mbpp", "baseline/run1"), ("humaneval", "humaneval/baseline/run1")]
    rows = load_dataset_dir(samples / "humaneval" / "baseline" / "run1")
    assert rows["passed"] == [i == 0 for _ in humaneval for i in range(N)]
    assert set(rows["tests_total"]) != {0} and len(load_dataset_dir(samples / "humaneval" / "tasks")) == len(humaneval)
    report = run_stage("report", config, run.root)
    table = (report / "tables.md").read_text()
    assert "## humaneval: Table 1." in table and "exec@1 (%)" in table and "tests passed (%)" in table
    with (report / "summary.csv").open() as handle:
        summary = list(csv.DictReader(handle))
    by_bench = {row["benchmark"]: row for row in summary}
    assert set(by_bench) == {"mbpp", "humaneval"}
    assert float(by_bench["humaneval"]["pass_at_1"]) == pytest.approx(50.0)
    assert float(by_bench["humaneval"]["pass_at_2"]) == pytest.approx(100.0)
    assert float(by_bench["humaneval"]["compile_at_1"]) == pytest.approx(100.0)
    # HumanEval's wrong body returns None: its asserts fail, but it executed; MBPP's wrong program lacks the
    # function, a NameError: not executed
    assert float(by_bench["humaneval"]["exec_at_1"]) == pytest.approx(100.0)
    assert float(by_bench["mbpp"]["exec_at_1"]) == pytest.approx(50.0)
    assert float(by_bench["humaneval"]["avg_pass_ratio"]) == pytest.approx(50.0)


def test_humaneval_prompts_and_programs_fit_each_style():
    task = load_benchmark("humaneval")[2]
    completion = build_prompt(task, "completion")
    assert isinstance(completion, str) and completion.endswith(task["prompt"].strip() + "\n")
    assert "```python\n" in completion  # the fence is open: generation stops at the closing one, as for MBPP
    chat = build_prompt(task, "chat")
    assert task["prompt"].strip() in chat[-1]["content"] and "```python" in chat[-1]["content"]
    body = task["code"][len(task["prompt"]):]
    assert program_from_reply(task, body, "completion").endswith(body)
    assert program_from_reply(task, task["code"], "chat").startswith(task["prompt"])
