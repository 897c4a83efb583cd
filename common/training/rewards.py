"""The GRPO reward: each sampled completion is executed against its task's asserts in the sandbox and scored by MI.

    reward = reward_pass * passed + reward_tests * pass_ratio + reward_mi * (MI / 100 if passed else 0)

``passed`` is 1 when every test passes, ``pass_ratio`` the share of tests passed (partial credit, so a group of
wrong completions still has a gradient), and MI (radon, ``common.signals.mi``) counts only for passing code: a
maintainability bonus must never pay for wrong code.

TRL calls reward functions once per generation batch with every completion of that batch
(``GRPOTrainer._calculate_rewards``). :class:`SandboxReward` gives TRL one function per component (``pass``,
``tests``, ``mi``) and the weights for ``GRPOConfig.reward_weights``: TRL sums ``weight * component`` (exactly the
formula above) and logs each component's mean and std as ``rewards/<name>/mean`` (pass rate, mean test share, mean
gated MI/100) beside the total ``reward``. The three calls of one batch share a single batched sandbox execution:
the first executes every distinct (task, program) of the batch at once, the other two read its verdicts. Calling
the object itself returns the weighted sum (the same numbers, for use as a single reward function).

The trainer process never forks. The sandbox executor is one separate process, started lazily by ``Sandbox`` with
``subprocess.Popen`` on the first batch (CPython's C ``fork_exec``, which execs a fresh ``python -I`` at once: no
``os.fork``, no at-fork handlers, no copy of the trainer and its weights left running) and reused for the whole run;
each candidate is forked *by the executor*. MI is computed in-process (``maintainability_indices`` would start a
process pool per batch for large ones). Call :meth:`SandboxReward.close` at the end (``train_grpo`` does).

The task of each prompt travels with it as a JSON ``task`` column of the prompt dataset (``grpo_prompts``); TRL
hands dataset columns to reward functions as keyword arguments, one value per completion.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from common.config import SandboxConfig
from common.generation.base import FINISH_LENGTH, to_completion
from common.prompting.templates import program_from_reply
from common.signals.mi import maintainability_indices
from common.signals.scoring import sandbox_job

COMPONENTS = ("pass", "tests", "mi")  # reward function names, as TRL logs them: rewards/<name>/mean


@dataclass(frozen=True)
class Verdict:
    """One completion's reward components (each in [0, 1])."""

    passed: float  # 1.0 when every test passed
    tests: float  # share of the task's tests passed
    mi: float  # MI / 100 when passed, else 0
    status: str  # the sandbox status (passed, failed, error, timeout, killed)

    def part(self, name: str) -> float:
        return {"pass": self.passed, "tests": self.tests, "mi": self.mi}[name]


def completion_text(completion: Any) -> tuple[str, str]:
    """``(text, style)`` of a TRL completion: a string for completion-style prompts, a message list (the assistant
    turn) for chat prompts."""
    if isinstance(completion, str):
        return completion, "completion"
    if isinstance(completion, Sequence) and completion and isinstance(completion[-1], Mapping):
        return str(completion[-1].get("content") or ""), "chat"
    raise TypeError(f"unexpected completion {type(completion).__name__}: a string or a list of messages is expected")


def program_of(task: Mapping[str, Any], completion: Any) -> str:
    """The program a completion stands for, by the generation backends' own rule: the reply is cut at the fence that
    closes its first code block and its code extracted (``to_completion``), then placed after a HumanEval prompt
    where the task has one (``program_from_reply``)."""
    text, style = completion_text(completion)
    code = to_completion(text, style, FINISH_LENGTH, 0).code
    return program_from_reply(task, code, style)


class _Component:
    """One reward component as a TRL reward function (TRL names it by ``__name__``)."""

    def __init__(self, owner: "SandboxReward", name: str):
        self.owner, self.__name__ = owner, name

    def __call__(self, prompts: list, completions: list, **columns: Any) -> list[float]:
        verdicts = self.owner.verdicts(completions, columns["task"], columns.get("log_metric"))
        return [verdict.part(self.__name__) for verdict in verdicts]


class SandboxReward:
    """Sandbox + MI reward for TRL's ``GRPOTrainer`` (see the module docstring); holds one sandbox executor for the
    trainer's lifetime. ``weights`` maps each of ``COMPONENTS`` to its weight."""

    __name__ = "sandbox_mi"  # TRL's name for the combined reward, when the object itself is the reward function

    def __init__(self, weights: Mapping[str, float] | None = None, sandbox_cfg: SandboxConfig | None = None,
                 isolation: str | None = None):
        weights = dict(weights or {name: 1.0 for name in COMPONENTS})
        if set(weights) != set(COMPONENTS):
            raise ValueError(f"reward weights must name exactly {COMPONENTS}, got {sorted(weights)}")
        self.weights = {name: float(weights[name]) for name in COMPONENTS}
        self.sandbox_cfg = sandbox_cfg or SandboxConfig()
        self.isolation = isolation or os.environ.get("MI_SANDBOX_ISOLATION", "auto")
        self.executions = 0  # batched sandbox calls made (one per generation batch)
        self._box: Any = None
        self._batch: tuple[tuple, list[Verdict]] | None = None  # the last batch's key and verdicts
        self._tasks: dict[str, dict] = {}  # parsed task JSON

    @classmethod
    def from_config(cls, train_cfg: Any, sandbox_cfg: SandboxConfig | None = None) -> "SandboxReward":
        """The weights of a ``GRPOTrainingConfig`` (reward_pass, reward_tests, reward_mi)."""
        return cls({"pass": train_cfg.reward_pass, "tests": train_cfg.reward_tests, "mi": train_cfg.reward_mi},
                   sandbox_cfg)

    # -- TRL interface
    def reward_functions(self) -> tuple[list[_Component], list[float]]:
        """``(reward_funcs, reward_weights)`` for ``GRPOTrainer`` / ``GRPOConfig``: one function per component."""
        return [_Component(self, name) for name in COMPONENTS], [self.weights[name] for name in COMPONENTS]

    def __call__(self, prompts: list, completions: list, **columns: Any) -> list[float]:
        """The weighted sum of the components, one per completion (the components are logged through TRL's
        ``log_metric`` as ``reward_parts/<name>`` when TRL provides it)."""
        log_metric = columns.get("log_metric")
        verdicts = self.verdicts(completions, columns["task"], log_metric)
        if log_metric is not None and verdicts:
            for name in COMPONENTS:
                log_metric(f"reward_parts/{name}", sum(v.part(name) for v in verdicts) / len(verdicts))
        return [sum(self.weights[name] * v.part(name) for name in COMPONENTS) for v in verdicts]

    # -- execution
    def sandbox(self) -> Any:
        """The executor, started on first use (and by ``Sandbox`` again only if it died)."""
        if self._box is None:
            from common.sandbox import Sandbox

            self._box = Sandbox(self.isolation)
            self._box.isolation_level()  # starts the executor now, outside any timed reward call
        return self._box

    def _task(self, task: Any) -> dict:
        if isinstance(task, Mapping):
            return dict(task)
        if task not in self._tasks:
            self._tasks[task] = json.loads(task)
        return self._tasks[task]

    def verdicts(self, completions: Sequence[Any], tasks: Sequence[Any], log_metric: Any = None) -> list[Verdict]:
        """The verdict of every completion (``tasks[i]``: the task of completion ``i``, a dict or its JSON). A batch
        equal to the previous one is answered from it: TRL calls each component function on the same batch."""
        if len(tasks) != len(completions):
            raise ValueError(f"{len(tasks)} tasks for {len(completions)} completions")
        key = tuple((task if isinstance(task, str) else json.dumps(task, sort_keys=True, default=str),
                     json.dumps(completion, sort_keys=True, default=str)) for task, completion in zip(tasks, completions))
        if self._batch is not None and self._batch[0] == key:
            return self._batch[1]
        start = time.perf_counter()
        parsed = [self._task(task) for task in tasks]
        programs = [program_of(task, completion) for task, completion in zip(parsed, completions)]
        # identical programs for the same task (frequent within a group) are executed once
        unique = list(dict.fromkeys((task_key, program) for (task_key, _), program in zip(key, programs)))
        index = {item: i for i, item in enumerate(unique)}
        task_of = dict(zip((task_key for task_key, _ in key), parsed))
        job_of = {task_key: sandbox_job(task) for task_key, task in task_of.items()}
        jobs = [{**job_of[task_key], "code": program} for task_key, program in unique]
        cfg = self.sandbox_cfg
        results = self.sandbox().run_batch(jobs, workers=cfg.workers, timeout=cfg.timeout, memory_mb=cfg.memory_mb,
                                           progress=False, test_timeout=cfg.test_timeout) if jobs else []
        self.executions += 1
        mis = maintainability_indices((program for _, program in unique), workers=1)  # in-process: no pool
        by_job = [Verdict(passed=float(res.passed), tests=float(res.pass_ratio),
                          mi=(mi / 100.0 if res.passed and mi is not None else 0.0), status=res.status)
                  for res, mi in zip(results, mis)]
        verdicts = [by_job[index[(task_key, program)]] for (task_key, _), program in zip(key, programs)]
        self._batch = (key, verdicts)
        if log_metric is not None:
            log_metric("sandbox/seconds", time.perf_counter() - start)
            log_metric("sandbox/distinct_programs", float(len(unique)))
            passing = [mi for res, mi in zip(results, mis) if res.passed and mi is not None]
            if passing:
                log_metric("sandbox/mi_of_passing", sum(passing) / len(passing))  # raw MI, 0-100
        return verdicts

    def close(self) -> None:
        """Stop the executor (a later call starts a new one)."""
        if self._box is not None:
            self._box.close()
            self._box = None
        self._batch = None
