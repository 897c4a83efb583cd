"""The data-optimisation steps sel (selection), aug (augmentation) and syn (synthesis), with the real sandbox.

Only the generation backend is ever faked (a scripted object returning known code); every verdict comes from
running the code against its task's tests, and every step's output is verified again here.
"""

from __future__ import annotations

import dataclasses
import math
import random
from pathlib import Path

import pytest

from common.config import SamplingConfig, SandboxConfig, load_model_config
from common.dataopt.base import StepContext, load_step, rows_from_tasks
from common.dataopt.config import DataOptConfig
from common.generation import Completion
from common.signals.mi import maintainability_indices
from common.tasks.mbpp import DEMO_TASKS, load_mbpp, read_tasks_jsonl
from tests.helpers import MBPP_JSONL, requires_mbpp

SANDBOX = SandboxConfig(workers=2)  # the machine is shared: two sandbox workers at most


@dataclasses.dataclass
class CountingContext(StepContext):
    """A step context that records the size of each verification batch (the steps promise one batch per pass)."""

    batches: list = dataclasses.field(default_factory=list)

    def verify(self, rows, desc="verifying"):
        self.batches.append(len(rows))
        return super().verify(rows, desc)


def make_ctx(tasks, tmp_path, sampling=None, model=None, **settings) -> CountingContext:
    return CountingContext(config=DataOptConfig(**settings), tasks={int(t["task_id"]): dict(t) for t in tasks},
                           sandbox=SANDBOX, work=Path(tmp_path), model=model, sampling=sampling, log=lambda _: None)


@pytest.fixture(scope="module")
def demo_tasks():
    return [t for t in read_tasks_jsonl(DEMO_TASKS) if t["split"] == "train"]


@pytest.fixture(scope="module")
def mbpp_train():
    return [dict(t) for t in load_mbpp("train", str(MBPP_JSONL))]


def assert_all_pass(rows, ctx):
    verdicts = ctx.verify(rows, desc="re-verifying")
    failing = [(r["task_id"], v["status"]) for r, v in zip(rows, verdicts) if not v["passed"]]
    assert not failing, failing


def expected_top(rows, scores, keep):
    """Independent ranking: score desc (None last), task_id, code."""
    order = sorted(range(len(rows)), key=lambda i: (scores[i] is None, -(scores[i] or 0.0), rows[i]["task_id"],
                                                   rows[i]["code"]))
    return sorted(order[:keep])


# ---------------------------------------------------------------------------------------------------------------
# sel


@pytest.mark.parametrize("fraction", [0.2, 0.5, 1.0, 0.01])
def test_selection_by_mi_keeps_exactly_the_top_fraction(demo_tasks, tmp_path, fraction):
    rows = rows_from_tasks(demo_tasks)
    ctx = make_ctx(demo_tasks, tmp_path, sel_score="mi", sel_fraction=fraction)
    result = load_step("sel")(rows, ctx)
    keep = max(1, math.floor(fraction * len(rows) + 1e-9))
    mis = maintainability_indices(r["code"] for r in rows)
    assert result.counts == {"kept": keep, "dropped": len(rows) - keep}
    assert result.rows == [rows[i] for i in expected_top(rows, mis, keep)]  # top rows, in input order
    kept_mis = maintainability_indices(r["code"] for r in result.rows)
    dropped_mis = [m for i, m in enumerate(mis) if rows[i] not in result.rows]
    assert result.details["threshold"] == min(kept_mis) >= max(dropped_mis, default=-math.inf)
    assert set(result.details["kept_quantiles"]) == {"min", "q25", "median", "q75", "max"}
    assert ctx.batches == []  # selection changes no code, so it runs nothing


def test_selection_by_pylint_keeps_exactly_the_top_fraction(demo_tasks, tmp_path):
    from common.signals.pylint_score import pylint_scores

    rows = rows_from_tasks(demo_tasks)
    result = load_step("sel")(rows, make_ctx(demo_tasks, tmp_path, sel_score="pylint", sel_fraction=0.25))
    scores = pylint_scores([r["code"] for r in rows], workers=1, progress=False)
    keep = len(rows) // 4
    assert result.counts == {"kept": keep, "dropped": len(rows) - keep}
    assert result.rows == [rows[i] for i in expected_top(rows, scores, keep)]
    assert result.details["threshold"] == sorted(scores, reverse=True)[keep - 1]
    assert_all_pass(result.rows, make_ctx(demo_tasks, tmp_path))


def test_selection_ties_are_deterministic_and_unscorable_rows_rank_last(demo_tasks, tmp_path):
    base = rows_from_tasks(demo_tasks[:3])
    same = "def f(x):\n    return x\n"
    rows = [{**base[0], "task_id": 9, "code": same}, {**base[1], "task_id": 3, "code": same},
            {**base[2], "task_id": 5, "code": same}, {**base[0], "task_id": 1, "code": "def broken(:\n"},
            {**base[1], "task_id": 3, "code": same + "\n"}]  # same task and MI as row 1: the code decides
    tasks = [{**t, "task_id": r["task_id"]} for t, r in zip(demo_tasks * 2, rows)]
    picks = []
    for seed in range(4):
        shuffled = rows[:]
        random.Random(seed).shuffle(shuffled)
        result = load_step("sel")(shuffled, make_ctx(tasks, tmp_path, sel_score="mi", sel_fraction=0.4))
        picks.append(sorted((r["task_id"], r["code"]) for r in result.rows))
    assert all(p == [(3, same), (3, same + "\n")] for p in picks), picks
    everything = load_step("sel")(rows, make_ctx(tasks, tmp_path, sel_score="mi", sel_fraction=1.0))
    assert everything.counts == {"kept": 5, "dropped": 0} and everything.details["unscorable"] == 1
    four = load_step("sel")(rows, make_ctx(tasks, tmp_path, sel_score="mi", sel_fraction=0.8))
    assert "def broken(:\n" not in [r["code"] for r in four.rows]  # the broken row is the one dropped


def test_selection_rejects_bad_settings(demo_tasks, tmp_path):
    rows = rows_from_tasks(demo_tasks)
    with pytest.raises(ValueError, match="data_opt.sel_fraction"):
        load_step("sel")(rows, make_ctx(demo_tasks, tmp_path, sel_fraction=0.0))
    with pytest.raises(ValueError, match="data_opt.sel_score"):
        load_step("sel")(rows, make_ctx(demo_tasks, tmp_path, sel_score="bleu"))


@pytest.mark.parametrize("model", [None, "no-such-org/no-such-ranker", "/nonexistent/ranker-folder"])
def test_ranker_without_a_model_fails_naming_the_setting(demo_tasks, tmp_path, model):
    ctx = make_ctx(demo_tasks, tmp_path, sel_score="ranker", sel_ranker_model=model)
    with pytest.raises(ValueError, match="data_opt.sel_ranker_model"):
        load_step("sel")(rows_from_tasks(demo_tasks), ctx)


@pytest.mark.parametrize("num_labels", [1, 2])
def test_a_tiny_local_ranker_scores_and_selects(demo_tasks, tmp_path, tiny_bert, num_labels):
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from common.dataopt.select import ranker_scores

    torch.manual_seed(0)
    folder = tmp_path / "ranker"
    BertForSequenceClassification(BertConfig.from_pretrained(tiny_bert, num_labels=num_labels)).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_bert).save_pretrained(folder)
    rows = rows_from_tasks(demo_tasks)
    result = load_step("sel")(rows, make_ctx(demo_tasks, tmp_path, sel_score="ranker", sel_ranker_model=str(folder),
                                             sel_fraction=0.25))
    scores = ranker_scores([r["text"] for r in rows], [r["code"] for r in rows], str(folder))
    assert all(math.isfinite(s) for s in scores) and len(set(scores)) > 1  # the model really read each pair
    assert result.counts == {"kept": 4, "dropped": len(rows) - 4}
    assert result.rows == [rows[i] for i in expected_top(rows, scores, 4)]
    assert result.details["threshold"] == pytest.approx(sorted(scores, reverse=True)[3])


# ---------------------------------------------------------------------------------------------------------------
# aug


def test_augmentation_adds_only_passing_distinct_variants_and_keeps_originals(demo_tasks, tmp_path):
    rows = rows_from_tasks(demo_tasks)
    ctx = make_ctx(demo_tasks, tmp_path, aug_variants_per_task=2)
    result = load_step("aug")(rows, ctx)
    originals = [r for r in result.rows if r["origin"] == "reference"]
    added = [r for r in result.rows if r["origin"].startswith("aug:")]
    assert originals == rows and len(originals) + len(added) == len(result.rows)
    assert result.counts["kept"] == len(rows) and result.counts["added"] == len(added) > len(rows)
    assert all(r["steps"] == ["aug"] for r in added)
    assert len({(r["task_id"], r["code"].strip()) for r in result.rows}) == len(result.rows)  # all distinct
    assert all(sum(r["task_id"] == t["task_id"] for r in added) <= 2 for t in demo_tasks)
    assert ctx.batches == [result.counts["added"] + result.counts["rejected"]]  # ONE verification batch
    assert_all_pass(result.rows, ctx)
    assert load_step("aug")(rows, make_ctx(demo_tasks, tmp_path, aug_variants_per_task=2)).rows == result.rows


def test_augmentation_rejects_failing_and_duplicate_variants(demo_tasks, tmp_path, monkeypatch):
    import common.rewrite
    from common.rewrite import Variant

    task = demo_tasks[0]
    reference = task["code"]
    scripted = [Variant(code=reference, transforms=["noop"]),  # the original itself: a duplicate
                Variant(code=reference.replace("return", "return None and", 1), transforms=["breaks"]),
                Variant(code="# a comment\n" + reference, transforms=["add_comments"]),
                Variant(code="# a comment\n" + reference + "\n", transforms=["again"])]  # same after strip
    monkeypatch.setattr(common.rewrite, "generate_variants", lambda code, **kw: scripted)
    ctx = make_ctx([task], tmp_path, aug_variants_per_task=4)
    result = load_step("aug")(rows_from_tasks([task]), ctx)
    assert result.counts == {"kept": 1, "added": 1, "rejected": 1}
    assert [r["origin"] for r in result.rows] == ["reference", "aug:add_comments"]
    assert result.details["duplicates"] == 2 and ctx.batches == [2]


@requires_mbpp
def test_augmentation_on_the_372_mbpp_train_tasks_keeps_every_solution_passing(mbpp_train, tmp_path):
    assert len(mbpp_train) == 372
    rows = rows_from_tasks(mbpp_train)
    ctx = make_ctx(mbpp_train, tmp_path, aug_variants_per_task=2)
    result = load_step("aug")(rows, ctx)
    assert result.counts["kept"] == 372 and result.counts["added"] > 372
    assert len(ctx.batches) == 1
    assert_all_pass(result.rows, ctx)


@requires_mbpp
def test_selection_on_the_372_mbpp_train_tasks_keeps_74(mbpp_train, tmp_path):
    result = load_step("sel")(rows_from_tasks(mbpp_train), make_ctx(mbpp_train, tmp_path, sel_score="mi"))
    assert result.counts == {"kept": 74, "dropped": 298}


# ---------------------------------------------------------------------------------------------------------------
# syn


WRONG = "def solution(*args):\n    return None\n"


class ScriptedBackend:
    """A test double of the generation backend: ``script(task_id, attempt)`` gives the code of each reply."""

    style = "chat"

    def __init__(self, script, task_of_prompt):
        self.script, self.task_of_prompt, self.calls, self.asked = script, task_of_prompt, [], {}

    def generate(self, prompts, num_samples, seed):
        self.calls.append((len(prompts), num_samples, seed))
        out = []
        for prompt in prompts:
            task_id = self.task_of_prompt(prompt)
            self.asked[task_id] = self.asked.get(task_id, 0) + 1
            out.append([Completion(text="", code=self.script(task_id, self.asked[task_id], index), finish_reason="stop",
                                   num_tokens=0) for index in range(num_samples)])
        return out


def _task_finder(tasks):
    return lambda prompt: next(t["task_id"] for t in tasks if prompt[-1]["content"].startswith(t["text"]))


def test_synthesis_replaces_the_original_with_the_first_passing_try(demo_tasks, tmp_path):
    tasks = demo_tasks[:3]
    solved_third, solved_first, never = (t["task_id"] for t in tasks)
    correct = {t["task_id"]: "# synthesised\n" + t["code"] for t in tasks}

    def script(task_id, attempt, index):
        if task_id == solved_first or (task_id == solved_third and attempt >= 3):
            return correct[task_id]
        return WRONG

    backend = ScriptedBackend(script, _task_finder(tasks))
    ctx = make_ctx(tasks, tmp_path, sampling=SamplingConfig(seed=7), syn_tries=5)
    rows = rows_from_tasks(tasks)
    result = load_step("syn")(rows, ctx, backend=backend)
    by_task = {r["task_id"]: r for r in result.rows}
    assert by_task[solved_third]["code"] == correct[solved_third] and by_task[solved_third]["origin"] == "syn:3"
    assert by_task[solved_first]["origin"] == "syn:1" and by_task[solved_first]["steps"] == ["syn"]
    assert by_task[never] == rows[2]  # five failures: the original stays, never the fifth failing try
    assert result.counts == {"changed": 2, "kept": 1}
    assert result.details["tries_histogram"] == {"1": 1, "2": 0, "3": 1, "4": 0, "5": 0, "none": 1}
    # batched: try 1 asks for all three, later tries only for the tasks still unsolved, each with its own seed
    assert backend.calls == [(3, 1, 7), (2, 1, 8), (2, 1, 9), (1, 1, 10), (1, 1, 11)]
    assert ctx.batches == [3, 2, 2, 1, 1]
    assert_all_pass(result.rows, ctx)


def test_synthesis_gives_rows_of_one_task_distinct_solutions(demo_tasks, tmp_path):
    task = demo_tasks[0]
    backend = ScriptedBackend(lambda task_id, attempt, index: "# same\n" + task["code"], _task_finder([task]))
    rows = rows_from_tasks([task]) * 2
    result = load_step("syn")(rows, make_ctx([task], tmp_path, syn_tries=2), backend=backend)
    # one identical passing reply per try: the first row gets it at try 1, the second never a copy of it
    assert [r["origin"] for r in result.rows] == ["syn:1", "reference"]
    assert backend.calls == [(1, 2, 0), (1, 1, 1)]


def test_synthesis_with_a_backend_that_never_passes_keeps_every_original(demo_tasks, tmp_path):
    backend = ScriptedBackend(lambda *_: WRONG, _task_finder(demo_tasks))
    rows = rows_from_tasks(demo_tasks)
    ctx = make_ctx(demo_tasks, tmp_path, syn_tries=2)
    result = load_step("syn")(rows, ctx, backend=backend)
    assert result.rows == rows and result.counts == {"changed": 0, "kept": len(rows)}
    assert result.details["kept_original"] == len(rows) and ctx.batches == [len(rows)] * 2


def test_synthesis_rejects_bad_settings(demo_tasks, tmp_path):
    rows = rows_from_tasks(demo_tasks)
    with pytest.raises(ValueError, match="data_opt.syn_tries"):
        load_step("syn")(rows, make_ctx(demo_tasks, tmp_path, syn_tries=0))
    with pytest.raises(ValueError, match="data_opt.syn_generator"):
        load_step("syn")(rows, make_ctx(demo_tasks, tmp_path, syn_generator="oracle"))
    with pytest.raises(ValueError, match="data_opt.syn_generator 'local' needs a model"):
        load_step("syn")(rows, make_ctx(demo_tasks, tmp_path, sampling=SamplingConfig()))
    with pytest.raises(ValueError, match="data_opt.syn_generator 'api' needs sampling settings with backend: api"):
        load_step("syn")(rows, make_ctx(demo_tasks, tmp_path, sampling=SamplingConfig(), syn_generator="api"))


def test_synthesis_with_a_tiny_real_local_model_runs_end_to_end(demo_tasks, tmp_path):
    tasks = demo_tasks[:3]
    rows = rows_from_tasks(tasks)
    ctx = make_ctx(tasks, tmp_path, sampling=SamplingConfig(max_new_tokens=12, temperature=1.0),
                   model=load_model_config("tiny-gemma3"), syn_generator="local", syn_tries=2)
    result = load_step("syn")(rows, ctx)
    assert result.rows == rows  # random weights write garbage: nothing passes, every original stays
    assert result.counts == {"changed": 0, "kept": 3}
    assert ctx.batches == [3, 3]  # both tries were generated and really run in the sandbox
    assert_all_pass(result.rows, ctx)


def test_the_api_generator_is_the_api_backend_in_chat_style(demo_tasks, tmp_path):
    from common.dataopt.synthesize import make_generator
    from common.generation.api import APIBackend

    sampling = SamplingConfig(backend="api", api_base_url="http://127.0.0.1:9/v1", api_model="served")
    backend, style = make_generator("api", make_ctx(demo_tasks, tmp_path, sampling=sampling, syn_generator="api"))
    assert isinstance(backend, APIBackend) and style == "chat" and backend.model == "served"
    with pytest.raises(ValueError, match="data_opt.syn_generator is 'local' but its sampling backend is 'api'"):
        make_generator("local", make_ctx(demo_tasks, tmp_path, sampling=sampling,
                                         model=load_model_config("tiny-gemma3")))
