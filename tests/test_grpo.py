"""GRPO (stage ``grpo``): the sandbox + MI reward on hand-written completions, the no-fork rule, real LoRA GRPO
steps on a tiny random model, and the KL reference checked against direct forward passes."""

from __future__ import annotations

import dataclasses
import json
import multiprocessing.process
import os
import subprocess
from types import SimpleNamespace

import pytest
import torch

from common.config import ConfigError, GRPOTrainingConfig, SandboxConfig, load_model_config
from common.models.loading import load_model
from common.signals.mi import maintainability_index
from common.training.logs import LOG_CSV
from common.training.methods.grpo import build_grpo_trainer, check_grpo_config, grpo_prompts, train_grpo
from common.training.rewards import SandboxReward
from tests.helpers import REPO

SUM_LIST = json.loads((REPO / "common" / "resources" / "demo_tasks.jsonl").read_text().splitlines()[0])
assert SUM_LIST["code"].startswith("def sum_list(")  # asserts: [1,2,3] -> 6, [] -> 0, [-1,5,10] -> 14
CORRECT = "def sum_list(nums):\n    return sum(nums)"
HALF = "def sum_list(nums):\n    return 6 if nums else 0"  # right on the first two asserts only
BROKEN = "def sum_list(nums)\n    return sum(nums)"

# Tasks a random tiny model can "solve": any program that merely runs passes (most random tokens do not: NameError,
# SyntaxError), so 1-token completions differ in reward within a group and the advantages are not all zero.
ANY_CODE = [{"task_id": 9000 + i, "text": f"Write any Python code at all ({i}).", "code": f"def anything_{i}():\n    "
             f"return {i}\n", "test_list": ["assert True", "assert 1 + 1 == 2"], "test_setup_code": "",
             "challenge_test_list": []} for i in range(2)]


def chat(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def fenced(code: str) -> list[dict]:
    return chat(f"Here it is:\n```python\n{code}\n```\nDone.")


def tcfg(**overrides) -> GRPOTrainingConfig:
    """2 prompts x 8 completions of 1 token per step; seed 0 gives groups with differing rewards."""
    base = dict(lora_r=4, lora_alpha=8, lora_dropout=0.0, learning_rate=1e-2, max_steps=2, num_generations=8,
                per_device_train_batch_size=8, gradient_accumulation_steps=2, max_completion_length=1,
                gradient_checkpointing=False, seed=0)
    return GRPOTrainingConfig(**{**base, **overrides})


@pytest.fixture(scope="module")
def chat_cfg():
    return load_model_config("tiny-gemma3")


@pytest.fixture(scope="module")
def prompts(chat_cfg):
    return grpo_prompts(ANY_CODE, SimpleNamespace(model=chat_cfg, sampling=SimpleNamespace(system_prompt="")))


class SpawnRecorder:
    """Records every way this process could start another one (fork, posix_spawn, subprocess, multiprocessing)
    while ``active``. Fork hooks cannot be unregistered, so one recorder serves the whole module."""

    def __init__(self, monkeypatch):
        self.active, self.events = False, []
        for name in ("fork", "forkpty", "posix_spawn", "posix_spawnp"):
            if hasattr(os, name):
                monkeypatch.setattr(os, name, self._wrap(name, getattr(os, name)))
        monkeypatch.setattr(subprocess.Popen, "_execute_child",
                            self._wrap("subprocess", subprocess.Popen._execute_child))
        monkeypatch.setattr(multiprocessing.process.BaseProcess, "start",
                            self._wrap("multiprocessing", multiprocessing.process.BaseProcess.start))
        _FORK_HOOK.append(self)

    def _wrap(self, name, original):
        def recorded(*args, **kwargs):
            if self.active:
                self.events.append(name)
            return original(*args, **kwargs)
        return recorded


_FORK_HOOK: list[SpawnRecorder] = []
os.register_at_fork(before=lambda: [r.events.append("at_fork") for r in _FORK_HOOK if r.active])


@pytest.fixture
def spawns(monkeypatch):
    recorder = SpawnRecorder(monkeypatch)
    yield recorder
    _FORK_HOOK.remove(recorder)


# ----------------------------------------------------------------------------------------------------------------
# The reward


def test_reward_components_on_a_real_task(monkeypatch):
    reward = SandboxReward({"pass": 2.0, "tests": 0.5, "mi": 3.0}, SandboxConfig())
    calls = []
    box = reward.sandbox()
    original = box.run_batch
    monkeypatch.setattr(box, "run_batch", lambda jobs, **kw: calls.append(list(jobs)) or original(jobs, **kw))
    task = json.dumps(SUM_LIST)
    completions = [fenced(CORRECT), fenced(HALF), fenced(BROKEN), fenced(CORRECT), chat("no code at all (")]
    funcs, weights = reward.reward_functions()
    assert [f.__name__ for f in funcs] == ["pass", "tests", "mi"] and weights == [2.0, 0.5, 3.0]
    parts = {f.__name__: f(prompts=[None] * 5, completions=completions, task=[task] * 5) for f in funcs}
    total = reward(prompts=[None] * 5, completions=completions, task=[task] * 5)
    try:
        assert len(calls) == 1 and len(calls[0]) == 4  # one batched execution; the duplicate ran once
        mi = maintainability_index(CORRECT) / 100
        assert 0 < mi <= 1
        assert parts["pass"] == [1.0, 0.0, 0.0, 1.0, 0.0]
        assert parts["tests"] == pytest.approx([1.0, 2 / 3, 0.0, 1.0, 0.0])
        assert parts["mi"] == pytest.approx([mi, 0.0, 0.0, mi, 0.0])  # MI never pays for wrong code
        assert total == pytest.approx([2 + 0.5 + 3 * mi, 0.5 * 2 / 3, 0.0, 2 + 0.5 + 3 * mi, 0.0])
        # completion style: the prompt opened the fence; the reply is cut at the fence that closes it
        again = reward(prompts=[None] * 2, completions=[f"{CORRECT}\n```\n```python\nboom(", f"{HALF}\n```"],
                       task=[SUM_LIST, SUM_LIST])
        assert len(calls) == 2 and again == pytest.approx([2 + 0.5 + 3 * mi, 0.5 * 2 / 3])
        assert reward.executions == 2
    finally:
        reward.close()


def test_reward_never_forks_the_trainer_process(spawns):
    reward = SandboxReward(sandbox_cfg=SandboxConfig())
    try:
        spawns.active = True
        reward(prompts=[None], completions=[fenced(CORRECT)], task=[SUM_LIST])
        assert spawns.events == ["subprocess"]  # the executor: one fresh interpreter, started once
        executor = reward.sandbox()._proc.pid
        spawns.events.clear()
        codes = [f"def sum_list(nums):\n    return sum(nums) + {i} - {i}" for i in range(12)] + [HALF]
        scores = reward(prompts=[None] * 13, completions=[fenced(c) for c in codes], task=[SUM_LIST] * 13)
        assert spawns.events == [] and reward.sandbox()._proc.pid == executor
        assert scores[:12] == [scores[0]] * 12 and scores[0] > 2 and 0 < scores[12] < 1  # the candidates did run
        subprocess.run(["true"], check=True)
        assert spawns.events == ["subprocess"]  # the recorder does see a process start
    finally:
        spawns.active = False
        reward.close()


# ----------------------------------------------------------------------------------------------------------------
# Prompts and config


def test_prompts_carry_the_task(prompts, chat_cfg):
    assert prompts.column_names == ["prompt", "task_id", "task"]
    assert prompts[0]["prompt"][-1]["role"] == "user" and "any Python code" in prompts[0]["prompt"][-1]["content"]
    assert json.loads(prompts[1]["task"])["test_list"] == ANY_CODE[1]["test_list"]
    plain = grpo_prompts(ANY_CODE, SimpleNamespace(model=load_model_config("tiny-llama"),
                                                   sampling=SimpleNamespace(system_prompt="")))
    assert plain[0]["prompt"].endswith("```python\n")


@pytest.mark.parametrize("overrides, message", [
    ({"per_device_train_batch_size": 3, "num_generations": 2, "gradient_accumulation_steps": 1}, "multiple of 2"),
    ({"num_generations": 1, "per_device_train_batch_size": 1}, "num_generations must be >= 2"),
    ({"gradient_accumulation_steps": 4}, "only 2 prompt"),
    ({"loss_type": "sigmoid"}, "loss_type"),
    ({"eval_fraction": 0.2}, "no held-out evaluation"),
])
def test_batch_rules_are_config_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        check_grpo_config(tcfg(**overrides), n_prompts=2)


# ----------------------------------------------------------------------------------------------------------------
# Training


def _lora_b_moved(model) -> bool:
    return any(p.detach().abs().max() > 0 for n, p in model.named_parameters() if "lora_B" in n)


@pytest.fixture(scope="module")
def trained(prompts, chat_cfg, tmp_path_factory):
    """Two real GRPO steps (new adapter, beta 0); the no-fork recorder is active inside every reward call."""
    mp = pytest.MonkeyPatch()
    recorder = SpawnRecorder(mp)
    calls = []
    verdicts = SandboxReward.verdicts

    def recorded(self, *args, **kwargs):
        recorder.active, before = True, len(recorder.events)
        try:
            return verdicts(self, *args, **kwargs)
        finally:
            recorder.active = False
            calls.append(recorder.events[before:])

    mp.setattr(SandboxReward, "verdicts", recorded)
    try:
        result = train_grpo(prompts, chat_cfg, tcfg(), tmp_path_factory.mktemp("grpo") / "adapter",
                            sandbox_cfg=SandboxConfig())
    finally:
        mp.undo()
        _FORK_HOOK.remove(recorder)
    return result, calls


def test_grpo_trains_only_lora_and_saves_no_reference(trained, chat_cfg):
    result, calls = trained
    assert len(calls) == 2 * 3  # 2 steps x 3 reward components
    # the first call starts the executor (a fresh interpreter, not a fork); no call creates a process after that
    assert calls[0] == ["subprocess"] and all(events == [] for events in calls[1:])
    assert result.metrics["global_step"] == 2 and result.metrics["sandbox_executions"] == 2
    steps = [entry for entry in result.log_history if "reward" in entry]
    assert len(steps) == 2 and all("rewards/pass/mean" in e and "rewards/mi/mean" in e for e in steps)
    assert any(e["reward_std"] > 0 for e in steps), "every reward equal: pick another seed in tcfg()"
    assert any(e["frac_reward_zero_std"] < 1 for e in steps)
    base = dict(load_model(chat_cfg, device="cpu")[0].named_parameters())
    for name, param in result.model.named_parameters():
        if "lora_" in name:
            assert ".default." in name and param.requires_grad, name
            continue
        assert not param.requires_grad, name
        key = name.removeprefix("base_model.model.").replace(".base_layer.", ".")
        assert torch.equal(param.detach(), base[key].detach()), f"frozen weight changed: {name}"
    assert _lora_b_moved(result.model)
    from peft import load_peft_weights

    saved = load_peft_weights(str(result.adapter_dir), device="cpu")
    assert saved and not any(".ref." in key for key in saved) and not (result.adapter_dir / "ref").exists()
    assert (result.adapter_dir / LOG_CSV).is_file() and result.seconds_per_step > 0
    print(f"\nGRPO tiny-gemma3: {result.seconds_per_step:.3f} s/step (16 completions, 1 token each)")


def _direct_logps(model, out) -> torch.Tensor:
    """log p(completion token) from a plain forward pass over TRL's own prompt+completion tensors."""
    ids = torch.cat([out["prompt_ids"], out["completion_ids"]], dim=1)
    mask = torch.cat([out["prompt_mask"], out["completion_mask"]], dim=1)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits.float()
    logps = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    return logps[:, -out["completion_ids"].size(1):]


def _scored_batch(trainer):
    """TRL's generate-and-score step on one generation batch (eval mode: no dropout in the policy)."""
    trainer.model.eval()
    rows = [trainer.train_dataset[i] for i in range(2) for _ in range(trainer.num_generations)]
    return trainer._generate_and_score_completions(rows)


@pytest.mark.parametrize("continued", [False, True], ids=["new-adapter", "continued-stage1"])
def test_kl_reference_log_probs(trained, prompts, chat_cfg, tmp_path, continued):
    """beta > 0: the reference is the base model (adapter disabled), or, continuing an adapter with
    reference='stage1', TRL's frozen 'ref' copy of it; never a second model."""
    result, _ = trained
    cfg = tcfg(beta=0.1, max_completion_length=4, max_steps=1)
    reward = SandboxReward.from_config(cfg)
    kwargs = {"init_adapter": result.adapter_dir, "reference": "stage1"} if continued else {}
    try:
        trainer = build_grpo_trainer(prompts, chat_cfg, cfg, tmp_path / "kl", reward, **kwargs)
        model = trainer.model
        assert trainer.ref_model is None
        assert set(model.peft_config) == ({"default", "ref"} if continued else {"default"})
        torch.manual_seed(1)
        with torch.no_grad():  # move the policy away from its reference
            for name, param in model.named_parameters():
                if "lora_B" in name and ".default." in name:
                    param.normal_(0.0, 0.5)
        out = _scored_batch(trainer)
    finally:
        reward.close()
    if continued:
        reference_model = load_model(chat_cfg, adapter=result.adapter_dir, device="cpu")[0]
    else:
        reference_model = load_model(chat_cfg, device="cpu")[0]
    mask = out["completion_mask"].bool()
    ref = out["ref_per_token_logps"][mask]
    if continued:  # the two candidate references are distinguishable
        base = _direct_logps(load_model(chat_cfg, device="cpu")[0], out)[mask]
        assert (_direct_logps(reference_model, out)[mask] - base).abs().max() > 1e-2
    torch.testing.assert_close(ref, _direct_logps(reference_model, out)[mask], atol=1e-4, rtol=1e-4)
    assert (ref - _direct_logps(model, out)[mask]).abs().max() > 1e-2  # the policy does differ from it


def test_continued_adapter_with_kl_saves_only_default(trained, prompts, chat_cfg, tmp_path):
    result, _ = trained
    out = tmp_path / "continued"
    again = train_grpo(prompts, chat_cfg, tcfg(beta=0.1, max_steps=1), out, init_adapter=result.adapter_dir,
                       reference="stage1", sandbox_cfg=SandboxConfig())
    assert set(again.model.peft_config) == {"default", "ref"}
    from peft import load_peft_weights

    saved = load_peft_weights(str(out), device="cpu")
    assert saved and not any(".ref." in key for key in saved) and not (out / "ref").exists()
    assert again.metrics["global_step"] == 1


def test_completion_prompts_stop_at_the_closing_fence(tmp_path):
    """With Gemma-3's vocabulary the fence tokens become end-of-sequence ids for the run (TRL's copy only)."""
    cfg = dataclasses.replace(load_model_config("tiny-llama"), tiny_tokenizer="gemma")
    plain = grpo_prompts(ANY_CODE, SimpleNamespace(model=cfg, sampling=SimpleNamespace(system_prompt="")))
    reward = SandboxReward()
    try:
        trainer = build_grpo_trainer(plain, cfg, tcfg(max_steps=1), tmp_path / "f", reward)
    finally:
        reward.close()
    tokenizer = trainer.processing_class
    fences = [i for i in trainer.eos_token_ids if tokenizer.decode([i]).lstrip().startswith("```")]
    closing = tokenizer("x = 1\n```", add_special_tokens=False).input_ids[-1]
    assert closing in fences and tokenizer.eos_token_id in trainer.eos_token_ids
    assert set(fences) <= set(trainer.generation_config.eos_token_id)
    after = trainer.model.generation_config.eos_token_id  # the model itself is given back unchanged
    assert not set(fences) & set([after] if isinstance(after, int) else after or [])
