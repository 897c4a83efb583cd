"""Step ``syn``: let a code LLM write a new solution for each task, keeping only solutions that pass its tests.

A generator (``syn_generator``: ``local`` = the step's model config through ``common.generation.make_backend``,
``api`` = an OpenAI-compatible endpoint) gets the task's prompt and writes one solution per try, up to
``syn_tries`` tries. The first solution that passes every test replaces the row's code (origin ``syn:<try>``);
when no try passes, the original solution stays. The published code did neither check: it kept the fifth failing
solution after five failed tries, and never verified the MBPP solutions at all, so its "synthesised" set held
wrong code. Here nothing unverified can enter the training set.

Tries are batched: try 1 asks for every task in one ``generate`` call and verifies all replies in one sandbox
batch; each later try asks again only for the tasks still without a passing solution, with the next seed (a
backend derives each sample's seed from (seed, prompt, index), so a new seed draws a new sample; a greedy
sampling config gives the same reply every try, and extra tries then cost without helping).

Several rows of one task (after ``aug``) each get their own solution: the task is asked for as many samples as
it has rows still waiting, and a passing solution is given to one row only, so no two rows end up identical.

Tests (and callers that already hold a backend) pass ``backend=``: any object with ``generate(prompts,
num_samples, seed) -> [[Completion]]`` and a ``style`` ('chat' or 'completion'); the step closes only backends it
built itself.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Mapping

from common.dataopt.base import StepContext, StepResult, changed_row

GENERATORS = ("local", "api")


def synthesize_step(rows: list[dict[str, Any]], ctx: StepContext, backend: Any = None) -> StepResult:
    """Rows whose code a verified generated solution replaced (origin ``syn:<try>``, steps + ["syn"]) or, when no
    try passed, the original row. counts: changed, kept (the original stays); details: the tries histogram."""
    config = ctx.config
    tries = int(config.syn_tries)
    if tries < 1:
        raise ValueError(f"data_opt.syn_tries must be >= 1, got {config.syn_tries!r}")
    if config.syn_generator not in GENERATORS:
        raise ValueError(f"data_opt.syn_generator must be one of {GENERATORS}, got {config.syn_generator!r}")
    owned = backend is None
    if owned:
        backend, style = make_generator(config.syn_generator, ctx)
    else:
        style = getattr(backend, "style", "chat")
    try:
        solved = _synthesise(rows, ctx, backend, style, tries)
    finally:
        if owned:
            from common.generation import free_accelerator_memory

            backend.close()
            free_accelerator_memory()
    out, histogram = [], Counter()
    for index, row in enumerate(rows):
        if index in solved:
            attempt, code = solved[index]
            out.append(changed_row(row, code, "syn", origin=f"syn:{attempt}"))
            histogram[str(attempt)] += 1
        else:
            out.append(dict(row))
    kept = len(rows) - len(solved)
    ctx.log(f"syn: {len(solved)} of {len(rows)} rows got a passing generated solution; {kept} kept the original")
    details = {"generator": config.syn_generator, "tries": tries,
               "tries_histogram": {**{str(t): histogram[str(t)] for t in range(1, tries + 1)}, "none": kept},
               "kept_original": kept}
    return StepResult(rows=out, counts={"changed": len(solved), "kept": kept}, details=details)


def make_generator(generator: str, ctx: StepContext) -> tuple[Any, str]:
    """(backend, prompt style) for ``generator`` from the step's model and sampling configs, with errors that
    name the setting to change."""
    from common.generation import make_backend

    sampling = ctx.sampling
    if sampling is None:
        raise ValueError(f"data_opt.syn_generator {generator!r} needs sampling settings for the step (none given)")
    if generator == "api":
        if sampling.backend != "api":
            raise ValueError("data_opt.syn_generator 'api' needs sampling settings with backend: api (and "
                             f"api_base_url, api_model; the study: stage1_sampling), got backend {sampling.backend!r}")
        return make_backend(sampling, ctx.model), "chat"
    if ctx.model is None:
        raise ValueError("data_opt.syn_generator 'local' needs a model config (the policy, or generator_model)")
    if sampling.backend == "api":
        raise ValueError("data_opt.syn_generator is 'local' but its sampling backend is 'api': set "
                         "data_opt.syn_generator: api, or a local sampling backend (hf, vllm)")
    from common.prompting.style import prompt_style

    style = prompt_style(ctx.model)
    return make_backend(sampling, ctx.model, style=style), style


def _task_of(row: Mapping[str, Any], ctx: StepContext) -> Mapping[str, Any]:
    """The task a prompt is built from: the frozen task (its reference gives the signature line), else the row."""
    task = ctx.tasks.get(int(row["task_id"]))
    return task if task is not None else row


def _synthesise(rows: list[dict[str, Any]], ctx: StepContext, backend: Any, style: str, tries: int
                ) -> dict[int, tuple[int, str]]:
    """row index -> (try that passed, code), for the rows that got a passing solution."""
    from common.prompting.templates import SYSTEM_PROMPT, build_prompt, program_from_reply

    system_prompt = ctx.sampling.system_prompt if ctx.sampling is not None else SYSTEM_PROMPT
    base_seed = int(ctx.sampling.seed) if ctx.sampling is not None else 0
    waiting: dict[int, list[int]] = {}  # task_id -> indices of its rows still without a passing solution
    for index, row in enumerate(rows):
        waiting.setdefault(int(row["task_id"]), []).append(index)
    tasks = {task_id: _task_of(rows[indices[0]], ctx) for task_id, indices in waiting.items()}
    prompts = {task_id: build_prompt(task, style, system_prompt) for task_id, task in tasks.items()}
    given: dict[int, set[str]] = {task_id: set() for task_id in waiting}  # passing codes already handed out
    solved: dict[int, tuple[int, str]] = {}
    for attempt in range(1, tries + 1):
        if not waiting:
            break
        replies: list[tuple[int, str]] = []  # (task_id, code), in request order
        by_need: dict[int, list[int]] = {}
        for task_id, indices in waiting.items():
            by_need.setdefault(len(indices), []).append(task_id)
        # one generate call per number of samples wanted: a single call whenever each task has one row waiting
        for need, task_ids in sorted(by_need.items()):
            outputs = backend.generate([prompts[t] for t in task_ids], need, base_seed + attempt - 1)
            if len(outputs) != len(task_ids):
                raise RuntimeError(f"syn: the generator returned {len(outputs)} results for {len(task_ids)} prompts")
            for task_id, completions in zip(task_ids, outputs):
                replies.extend((task_id, program_from_reply(tasks[task_id], c.code or "", style))
                               for c in completions)
        # an empty reply cannot pass: it is not worth a sandbox run
        runnable = [(task_id, code) for task_id, code in replies if code.strip()]
        verdicts = ctx.verify([{"task_id": t, "code": c} for t, c in runnable],
                              desc=f"syn: verifying try {attempt}") if runnable else []
        for (task_id, code), verdict in zip(runnable, verdicts):
            indices = waiting.get(task_id)
            if not indices or not verdict["passed"] or code.strip() in given[task_id]:
                continue
            given[task_id].add(code.strip())
            solved[indices.pop(0)] = (attempt, code)
            if not indices:
                del waiting[task_id]
        ctx.log(f"syn: try {attempt}: {len(solved)} rows solved so far, {sum(map(len, waiting.values()))} waiting")
    return solved
