"""Stage 2a with a scripted backend: rounds, re-queuing with the failed solution, pairing, resume after a crash."""

import json

import pytest

import common.generation as generation
from common.generation import Completion, GenerationBackend
from common.pipeline.artifacts import ArtifactError, RunDir, load_dataset_dir
from common.pipeline.runner import write_stage_manifest
from common.preference.self_generation import SAMPLES
from tests.helpers import run_stages, smoke_config

FAILING = "def nothing():\n    return None"


class ScriptedBackend(GenerationBackend):
    """Answers like a model that solves even-numbered tasks at once and odd ones only after a retry prompt."""

    style = "chat"

    def __init__(self, tasks, crash_after=None):
        self.tasks = tasks
        self.prompts_seen = []
        self.crash_after = crash_after

    def generate(self, prompts, num_samples, seed):
        out = []
        for prompt in prompts:
            if self.crash_after is not None and len(self.prompts_seen) >= self.crash_after:
                raise KeyboardInterrupt("simulated crash")
            self.prompts_seen.append(prompt)
            text = prompt[-1]["content"]
            task = next(t for t in self.tasks if t["text"] in text)
            retry = "did not pass all test cases" in text
            reference = task["code"].replace("\r\n", "\n")
            documented = "# Documented solution.\n# Comments raise the Maintainability Index.\n" + reference
            if task["task_id"] % 2 == 0 or retry:
                codes = [reference, documented] + [reference] * (num_samples - 2)
            else:
                codes = [FAILING] * num_samples
            out.append([Completion(text=f"```python\n{c}\n```", code=c, finish_reason="stop", num_tokens=5)
                        for c in codes])
        return out


@pytest.fixture
def run_with_stage1_adapter(tmp_path):
    config = smoke_config("sampling.num_samples=3", "self_generation.rounds=3")
    run = RunDir(tmp_path / "run")
    tasks = list(load_dataset_dir(run_stages(config, run.root, "prepare")))
    write_stage_manifest(run, config, "dpo")  # stands in for a trained -dpo adapter: the backend is scripted
    return config, run, tasks


def self_generate(config, run):
    return run_stages(config, run.root, "self-generation")


def samples_of(run):
    return load_dataset_dir(run.stage_dir("self-generation") / SAMPLES)


def test_rounds_requeue_failed_prompts_with_the_failed_solution(run_with_stage1_adapter, monkeypatch):
    config, run, tasks = run_with_stage1_adapter
    backend = ScriptedBackend(tasks)
    seen = {}
    monkeypatch.setattr(generation, "make_backend", lambda s, m, adapter=None, style=None: seen.setdefault("adapter", adapter)
                        and backend or backend)
    self_generate(config, run)
    assert seen["adapter"] == run.stage_dir("dpo")  # the -dpo model samples
    rounds = json.loads((run.stage_dir("self-generation") / "rounds.json").read_text())
    odd = [t for t in tasks if t["task_id"] % 2]
    assert [r["prompts"] for r in rounds] == [len(tasks), len(odd)]  # round 3 never needed
    retried = [p for p in backend.prompts_seen if "did not pass all test cases" in p[-1]["content"]]
    assert len(retried) == len(odd) and all(FAILING in p[-1]["content"] for p in retried)
    pairs = load_dataset_dir(run.stage_dir("self-generation"))
    assert sorted(pairs["task_id"]) == sorted(t["task_id"] for t in tasks)
    for row in pairs:
        assert row["chosen_mi"] > row["rejected_mi"] and "# Documented solution." in row["chosen"]
        assert "did not pass" not in row["prompt"][-1]["content"]  # the stored prompt is the original one
    samples = samples_of(run)
    assert len(samples) == 3 * (len(tasks) + len(odd))
    assert set(samples["round"]) == {1, 2}


def test_a_crash_mid_round_resumes_without_losing_or_duplicating_rows(run_with_stage1_adapter, monkeypatch, tmp_path):
    config, run, tasks = run_with_stage1_adapter
    crashing = ScriptedBackend(tasks, crash_after=len(tasks) + 1)  # dies inside round 2
    monkeypatch.setattr(generation, "make_backend", lambda *a, **k: crashing)
    with pytest.raises(KeyboardInterrupt):
        self_generate(config, run)
    resumed = ScriptedBackend(tasks)
    monkeypatch.setattr(generation, "make_backend", lambda *a, **k: resumed)
    self_generate(config, run)
    odd = [t for t in tasks if t["task_id"] % 2]
    # round 1 came from disk; round 2 was lost with its chunk (a backend without `stream` commits per call)
    assert len(resumed.prompts_seen) == len(odd)
    assert all("did not pass all test cases" in p[-1]["content"] for p in resumed.prompts_seen)

    clean = RunDir(tmp_path / "clean")
    run_stages(config, clean.root, "prepare")
    write_stage_manifest(clean, config, "dpo")
    monkeypatch.setattr(generation, "make_backend", lambda *a, **k: ScriptedBackend(tasks))
    self_generate(config, clean)
    def rows(root):  # every column but the measured execution time
        return [{k: v for k, v in row.items() if k != "duration"} for row in samples_of(root)]

    assert rows(run) == rows(clean)
    assert (load_dataset_dir(run.stage_dir("self-generation")).to_list()
            == load_dataset_dir(clean.stage_dir("self-generation")).to_list())


def test_refuses_to_start_without_the_stage1_adapter(tmp_path):
    config = smoke_config()
    run_stages(config, tmp_path / "run", "prepare")
    with pytest.raises(ArtifactError, match="python -m common dpo"):
        self_generate(config, RunDir(tmp_path / "run"))
