"""Stage 1a candidate generators, all behind one call: ``GENERATORS[name](tasks, config, work_dir) -> rows``, where
``config`` is the ``candidates`` stage's view of the config.

- ``api``: an OpenAI-compatible chat model (the paper used Gemini 2.5 Pro) asked for two different correct
  implementations in one JSON object {task_id, code_output_1, code_output_2}.
- ``local``: any model ``common.generation`` can load samples ``num_candidates`` solutions per prompt.
- ``rewrite``: no LLM at all: behaviour-preserving AST rewrites of the reference solution, so stage 1 runs
  anywhere (``make demo``, CI).

Each row is one candidate: task_id, candidate_index, code, generator, origin. Execution and MI come later
(``common.signals.scoring``), the same way for every generator. LLM generators stream through the resumable sampling job,
so a crashed stage 1a continues where it stopped.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

from datasets import Dataset

from common.prompting.extract import extract_code
from common.prompting.style import prompt_style
from common.prompting.templates import build_prompt, user_message

TWO_SOLUTION_SCHEMA = {
    "type": "object",
    "properties": {
        "task_id": {"type": "integer"},
        "code_output_1": {"type": "string"},
        "code_output_2": {"type": "string"},
    },
    "required": ["task_id", "code_output_1", "code_output_2"],
}

Rows = list[dict[str, Any]]


def normalise_reference(code: str) -> str:
    """MBPP references use CRLF line ends; a training target should not."""
    return code.replace("\r\n", "\n").replace("\r", "\n").strip("\n")


def rewrite_candidates(tasks: Dataset, config: Any, work_dir: Path) -> Rows:
    """The reference solution plus up to ``max_variants`` AST rewrites of it (candidate 0 is the reference)."""
    from common.rewrite import generate_variants

    from tqdm.auto import tqdm

    rows: Rows = []
    for task in tqdm(tasks, desc="candidates: AST rewrites", unit="task"):
        reference = normalise_reference(task["code"])
        rows.append(_row(task["task_id"], 0, reference, "rewrite", "reference"))
        # The reference is candidate 0 already, so its reformatted twin would only add a near-duplicate; the task
        # sentence lets `add_docstring` write a real docstring instead of one made from the function name.
        variants = generate_variants(reference, max_variants=config.stage1.max_variants,
                                     seed=config.stage1.rewrite_seed + int(task["task_id"]), task_text=task["text"],
                                     include_reformat=False)
        for index, variant in enumerate(variants, 1):
            rows.append(_row(task["task_id"], index, variant.code, "rewrite", "+".join(variant.transforms)))
    return rows


def local_candidates(tasks: Dataset, config: Any, work_dir: Path) -> Rows:
    """``num_candidates`` samples per task from a local model (``generator_model``, default: the policy)."""
    from common.generation import SampleRequest, make_backend, run_sampling_job

    model_cfg = config.generator_model or config.model
    style = prompt_style(model_cfg)
    sampling = config.stage1_sampling
    requests = [
        SampleRequest(key=str(task["task_id"]), prompt=build_prompt(task, style, sampling.system_prompt),
                      num_samples=config.stage1.num_candidates, seed=sampling.seed,
                      meta={"task_id": int(task["task_id"])})
        for task in tasks
    ]
    backend = make_backend(sampling, model_cfg, style=style)
    samples = run_sampling_job(backend, requests, work_dir / "samples", desc=f"candidates ({model_cfg.name})")
    return [_row(row["task_id"], row["sample_index"], row["code"], f"local:{model_cfg.name}", "sample")
            for row in samples]


class TwoSolutionBackend:
    """Adapts an API backend to the sampling-job interface: one JSON request yields the task's two candidates."""

    def __init__(self, api: Any, concurrency: int) -> None:
        self.api = api
        self.concurrency = max(1, concurrency)

    def generate(self, prompts: list, num_samples: int, seed: int) -> list:
        from common.generation import Completion

        def one(messages: list) -> list:
            reply = self.api.generate_json(messages, TWO_SOLUTION_SCHEMA)
            outputs = [reply.get(f"code_output_{i}", "") or "" for i in (1, 2)]
            return [Completion(text=json.dumps(reply), code=extract_code(text), finish_reason="stop", num_tokens=0)
                    for text in outputs[:num_samples]]

        with ThreadPoolExecutor(self.concurrency) as pool:
            return list(pool.map(one, prompts))


def api_messages(task: Any, instruction: str) -> list[dict[str, str]]:
    """The paper's generator prompt: Task_ID, the two-implementation instruction, then the task (with the signature
    line, so the generated function has the name the asserts call)."""
    return [{"role": "user", "content": f"Task_ID:{task['task_id']}\n{instruction}\n\n{user_message(task)}"}]


def api_candidates(tasks: Dataset, config: Any, work_dir: Path) -> Rows:
    from common.generation import SampleRequest, make_backend, run_sampling_job

    sampling = config.stage1_sampling
    if sampling.backend != "api":
        raise ValueError("stage1.generator 'api' needs stage1_sampling.backend: api (and api_base_url, api_model)")
    api = make_backend(sampling, config.generator_model or config.model)
    requests = [
        SampleRequest(key=str(task["task_id"]), prompt=api_messages(task, config.stage1.api_prompt), num_samples=2,
                      seed=sampling.seed, meta={"task_id": int(task["task_id"])})
        for task in tasks
    ]
    backend = TwoSolutionBackend(api, sampling.api_max_concurrency)
    samples = run_sampling_job(backend, requests, work_dir / "samples", desc=f"candidates ({sampling.api_model})",
                               chunk_size=max(1, sampling.api_max_concurrency))
    return [_row(row["task_id"], row["sample_index"], row["code"], f"api:{sampling.api_model}",
                 f"code_output_{row['sample_index'] + 1}") for row in samples]


def _row(task_id: int, index: int, code: str, generator: str, origin: str) -> dict[str, Any]:
    return {"task_id": int(task_id), "candidate_index": int(index), "code": code, "generator": generator,
            "origin": origin}


GENERATORS: dict[str, Callable[[Dataset, Any, Path], Rows]] = {
    "rewrite": rewrite_candidates,
    "local": local_candidates,
    "api": api_candidates,
}
