"""Stage 3 evaluation: the pass@k / MI aggregates on hand-made samples with known answers, and the evaluation stage
end to end on a real run directory (real sandbox, real MI): a fake backend that answers with the reference solution
for a known share of samples, resuming after a crash, no recomputation of finished runs, and a tiny random model."""

import itertools
import math
import random

import pytest

import common.generation
from common.config import ConfigError, load_config
from common.evaluation.sampling import run_seed
from common.pipeline.artifacts import ArtifactError, RunDir, load_dataset_dir, read_manifest
from common.pipeline.runner import run_stage
from common.tasks.mbpp import load_mbpp
from common.evaluation.metrics import (aggregate_run, avg_mi_macro, avg_mi_micro, mean_pass_at_k, pass_at_k, task_outcomes)
from common.signals.mi import maintainability_index
from common.prompting.templates import user_message
from tests.helpers import REPO

# --------------------------------------------------------------------------------------------------------------
# Aggregates on hand-made per-sample rows

# task 1: 2 of 4 pass (MI 80, 60); task 2: none pass; task 3: all 4 pass (MI 100, 90, 95, 95)
ROWS = [(1, True, 80.0), (1, False, 10.0), (1, True, 60.0), (1, False, None),
        (2, False, 50.0), (2, False, 50.0), (2, False, None), (2, False, 70.0),
        (3, True, 100.0), (3, True, 90.0), (3, True, 95.0), (3, True, 95.0)]


def test_aggregate_run_known_values():
    ids, passed, mis = zip(*ROWS)
    m = aggregate_run(ids, passed, mis, ks=[1, 2, 4])
    assert m["pass_at_1"] == pytest.approx((2 / 4 + 0 + 1) / 3)
    assert m["pass_at_2"] == pytest.approx(((1 - 1 / 6) + 0 + 1) / 3)  # task 1: 1 - C(2,2)/C(4,2)
    assert m["pass_at_4"] == pytest.approx(2 / 3)
    assert m["avg_mi_macro"] == pytest.approx((70 + 95) / 2)  # mean over solved tasks of their passing mean
    assert m["avg_mi_micro"] == pytest.approx((80 + 60 + 100 + 90 + 95 + 95) / 6)  # pooled passing samples
    assert m["pass_rate"] == pytest.approx(6 / 12)
    assert (m["n_tasks"], m["n_tasks_solved"], m["n_samples"], m["n_passing"]) == (3, 2, 12, 6)


def test_macro_and_micro_differ_when_tasks_pass_unevenly():
    # one task passes once at MI 50, another passes 9 times at MI 100: macro 75, micro 95
    outcomes = task_outcomes([1] * 10 + [2] * 10, [True] + [False] * 9 + [True] * 9 + [False],
                             [50.0] * 10 + [100.0] * 10)
    assert avg_mi_macro(outcomes) == pytest.approx(75.0)
    assert avg_mi_micro(outcomes) == pytest.approx(95.0)


def test_pass_at_n_equals_share_of_tasks_with_any_pass():
    rng = random.Random(0)
    ids, passed = [], []
    for tid in range(200):
        p = rng.choice([0.0, 0.05, 0.3, 1.0])
        for _ in range(10):
            ids.append(tid)
            passed.append(rng.random() < p)
    outcomes = task_outcomes(ids, passed, [90.0] * len(ids))
    any_pass = sum(o.c > 0 for o in outcomes) / len(outcomes)
    assert mean_pass_at_k(outcomes, 10) == pytest.approx(any_pass)
    assert mean_pass_at_k(outcomes, 1) == pytest.approx(sum(passed) / len(passed))


def test_pass_at_k_estimator_matches_brute_force():
    for n, c, k in [(10, 3, 1), (10, 3, 5), (6, 0, 2), (6, 6, 3), (7, 2, 7)]:
        draws = list(itertools.combinations([True] * c + [False] * (n - c), k))
        assert pass_at_k(n, c, k) == pytest.approx(sum(any(d) for d in draws) / len(draws))


def test_unscored_mi_and_too_large_k():
    outcomes = task_outcomes([1, 1, 2], [True, True, True], [None, float("nan"), 70.0])
    assert outcomes[0].c == 2 and outcomes[0].passing_mi == () and outcomes[0].mean_passing_mi is None
    assert avg_mi_macro(outcomes) == 70.0 and avg_mi_micro(outcomes) == 70.0
    assert mean_pass_at_k(outcomes, 2) is None  # task 2 has a single sample: pass@2 undefined
    empty = aggregate_run([], [], [], ks=[1])
    assert empty["pass_at_1"] is None and empty["avg_mi_macro"] is None and empty["n_tasks"] == 0


# --------------------------------------------------------------------------------------------------------------
# The stage, end to end through the sandbox

N = 4
WRONG = "def wrong(*args):\n    return None\n"


def run_evaluation(config, run_dir, force=False):
    return run_stage("evaluate", config, run_dir, force=force)


def unit_dir(run, variant, r):
    return run.stage_dir("evaluate") / variant.replace("/", "_") / f"run{r}"


def smoke_config(*extra):
    return load_config(REPO / "configs" / "smoke.yaml",
                       [f"sampling.num_samples={N}", "evaluation.k=[1,2,4]", "evaluation.runs=2",
                        "evaluation.variants=[baseline]", *extra])


class FakeBackend:
    """Answers task j (in task_id order) with its reference solution for the first j samples and with a wrong
    function for the rest, so c = 0, 1, 2, 3 of 4 and every metric has a known value. Records every call."""

    def __init__(self, tasks, fail_on_seed=None):
        self.tasks = sorted(tasks, key=lambda t: t["task_id"])
        self.fail_on_seed = fail_on_seed
        self.calls = []  # (seed, number of prompts)

    def correct_count(self, task):
        return min(N - 1, [t["task_id"] for t in self.tasks].index(task["task_id"]))

    def _task(self, prompt):
        text = prompt if isinstance(prompt, str) else prompt[-1]["content"]
        [task] = [t for t in self.tasks if user_message(t) in text]
        return task

    def generate(self, prompts, num_samples, seed):
        from common.generation import Completion

        if seed == self.fail_on_seed:
            raise RuntimeError("simulated crash")
        self.calls.append((seed, len(prompts)))
        out = []
        for prompt in prompts:
            task = self._task(prompt)
            codes = [task["code"] if i < self.correct_count(task) else WRONG for i in range(num_samples)]
            out.append([Completion(text=f"```python\n{code}\n```", code=code, finish_reason="stop", num_tokens=5)
                        for code in codes])
        return out


@pytest.fixture
def fake(monkeypatch, tmp_path):
    """Patch make_backend; returns (run, tasks, backends made)."""
    config = smoke_config()
    run = RunDir(tmp_path / "run")
    tasks = [dict(t) for t in load_mbpp("test", config.data.source, limit=config.data.max_eval_tasks)]
    made = []

    def factory(fail_on_seed=None):
        def make_backend(sampling_cfg, model_cfg, adapter=None, style=None):
            backend = FakeBackend(tasks, fail_on_seed)
            made.append((backend, adapter))
            return backend
        monkeypatch.setattr(common.generation, "make_backend", make_backend)

    factory()
    return run, tasks, made, factory


def expected_metrics(tasks):
    ordered = sorted(tasks, key=lambda t: t["task_id"])
    counts = [min(N - 1, j) for j in range(len(ordered))]
    mis = [maintainability_index(t["code"]) for t in ordered]
    solved = [(c, mi) for c, mi in zip(counts, mis) if c > 0]
    return {
        "pass_at_1": sum(counts) / (N * len(counts)),
        "pass_at_2": sum(1 - math.comb(N - c, 2) / math.comb(N, 2) for c in counts) / len(counts),
        "pass_at_4": sum(c > 0 for c in counts) / len(counts),
        "avg_mi_macro": sum(mi for _, mi in solved) / len(solved),
        "avg_mi_micro": sum(c * mi for c, mi in solved) / sum(c for c, _ in solved),
    }


def test_fake_backend_metrics_through_the_real_sandbox(fake):
    run, tasks, made, _ = fake
    config = smoke_config()
    run_evaluation(config, run.root)
    assert len(made) == 1  # one model load for both runs
    backend = made[0][0]
    assert sorted({seed for seed, _ in backend.calls}) == [run_seed(config, 1), run_seed(config, 2)] == [0, 1]
    expected = expected_metrics(tasks)
    for r in (1, 2):
        folder = unit_dir(run, "baseline", r)
        rows = load_dataset_dir(folder)
        assert len(rows) == len(tasks) * N
        assert {"task_id", "sample_index", "code", "text", "passed", "status", "mi", "variant", "run",
                "seed"} <= set(rows.column_names)
        assert sorted(zip(rows["task_id"], rows["sample_index"])) == sorted(
            (t["task_id"], i) for t in tasks for i in range(N))
        assert all(ok == (code != WRONG) for ok, code in zip(rows["passed"], rows["code"]))  # real verdicts
        summary = read_manifest(folder)["summary"]
        for key, value in expected.items():
            assert summary[key] == pytest.approx(value), key
        manifest = read_manifest(folder)
        assert manifest["stage"] == "evaluate" and manifest["variant"] == "baseline"
        assert manifest["seed"] == r - 1 and manifest["run"] == r
    assert not run.work_dir("evaluate").exists()  # work folder cleaned up when finished
    # the evaluated tasks are frozen beside the samples, and the stage manifest lists every unit
    assert len(load_dataset_dir(run.stage_dir("evaluate") / "tasks")) == len(tasks)
    units = read_manifest(run.stage_dir("evaluate"))["units"]
    assert [(u["variant"], u["run"], u["folder"]) for u in units] == [("baseline", 1, "baseline/run1"),
                                                                       ("baseline", 2, "baseline/run2")]


def test_crash_then_resume_then_no_recompute(fake):
    run, tasks, made, factory = fake
    config = smoke_config()
    factory(fail_on_seed=run_seed(config, 2))  # run 2 crashes
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_evaluation(config, run.root)
    assert read_manifest(unit_dir(run, "baseline", 1)) is not None
    assert read_manifest(unit_dir(run, "baseline", 2)) is None

    factory()
    run_evaluation(config, run.root)
    resumed = made[-1][0]
    assert {seed for seed, _ in resumed.calls} == {run_seed(config, 2)}  # run 1 was not sampled again
    rows = load_dataset_dir(unit_dir(run, "baseline", 2))
    keys = list(zip(rows["task_id"], rows["sample_index"]))
    assert len(keys) == len(set(keys)) == len(tasks) * N  # no duplicates

    count = len(made)
    run_evaluation(config, run.root)
    assert len(made) == count  # everything finished: no model is even loaded

    # more runs keep the finished ones (evaluation.runs is not part of a run's fingerprint)
    more = smoke_config("evaluation.runs=3")
    run_evaluation(more, run.root)
    assert {seed for seed, _ in made[-1][0].calls} == {run_seed(more, 3)}

    # force recomputes finished runs; a sampling change makes them stale
    run_evaluation(config, run.root, force=True)
    assert {seed for seed, _ in made[-1][0].calls} == {0, 1}
    run_evaluation(smoke_config("sampling.temperature=0.7"), run.root)
    assert {seed for seed, _ in made[-1][0].calls} == {0, 1}


def test_partial_work_is_resumed_chunk_by_chunk(fake, monkeypatch):
    """A crash in the middle of a run keeps the chunks already sampled."""
    import common.evaluation.sampling as evaluation

    run, tasks, made, factory = fake
    config = smoke_config("evaluation.runs=1")
    monkeypatch.setattr(evaluation, "SAMPLING_CHUNK_SIZE", 1)

    class Flaky(FakeBackend):
        def generate(self, prompts, num_samples, seed):
            if len(self.calls) == 2:
                raise RuntimeError("simulated crash")
            return super().generate(prompts, num_samples, seed)

    monkeypatch.setattr(common.generation, "make_backend", lambda *a, **k: made.append((Flaky(tasks), None))
                        or made[-1][0])
    with pytest.raises(RuntimeError):
        run_evaluation(config, run.root)
    factory()
    run_evaluation(config, run.root)
    assert sum(n for _, n in made[-1][0].calls) == len(tasks) - 2  # only the prompts not sampled before the crash
    rows = load_dataset_dir(unit_dir(run, "baseline", 1))
    assert len(rows) == len(set(zip(rows["task_id"], rows["sample_index"]))) == len(tasks) * N


def test_adapter_variants_are_checked(fake, tmp_path):
    run, tasks, made, _ = fake
    with pytest.raises(ArtifactError, match="dpo"):
        run_evaluation(smoke_config("evaluation.variants=[dpo]"), run.root)
    with pytest.raises(ArtifactError, match="adapter"):
        run_evaluation(smoke_config(f"evaluation.variants=[{tmp_path / 'nowhere'}]"), run.root)
    adapter = tmp_path / "my_adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    run_evaluation(smoke_config("evaluation.runs=1", f"evaluation.variants=[{adapter}]"), run.root)
    assert made[-1][1] == adapter.resolve()
    assert len(load_dataset_dir(unit_dir(run, str(adapter), 1))) == len(tasks) * N
    with pytest.raises(ConfigError, match="evaluation.k"):
        run_evaluation(smoke_config("evaluation.k=[8]"), run.root)


def test_tiny_random_model_end_to_end(tmp_path):
    """The real backend on a random tiny model: it passes nothing, but every sample is on disk with a verdict."""
    config = load_config(REPO / "configs" / "smoke.yaml", ["evaluation.runs=1", "evaluation.variants=[baseline]",
                                                           "sampling.max_new_tokens=8"])
    run = RunDir(tmp_path / "run")
    run_evaluation(config, run.root)
    rows = load_dataset_dir(unit_dir(run, "baseline", 1))
    assert len(rows) == config.data.max_eval_tasks * config.sampling.num_samples
    assert set(rows["status"]) and all(isinstance(p, bool) for p in rows["passed"])
    assert read_manifest(unit_dir(run, "baseline", 1))["summary"]["n_samples"] == len(rows)
