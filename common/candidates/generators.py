"""Stage 1a candidate generators, all behind one call: ``GENERATORS[name](tasks, config, work_dir) -> rows``, where
``config`` is the ``candidates`` stage's view of the config.

- ``api``: an OpenAI-compatible chat model (the paper used Gemini 2.5 Pro) asked for two different correct
  implementations in one JSON object {task_id, code_output_1, code_output_2}.
- ``local``: any model ``common.generation`` can load samples ``num_candidates`` solutions per prompt.
- ``rewrite``: no LLM at all: behaviour-preserving AST rewrites of the reference solution, so stage 1 runs
  anywhere (``make demo``, CI). With ``stage1.mutants`` N > 0 it adds N semantic mutants of the reference
  (``semantic_mutants``: a flipped comparison, an off-by-one constant, ``and``/``or`` swapped, ...), so the
  ``exec`` signal has failing code to reject.

Each row is one candidate: task_id, candidate_index, code, generator, origin. Execution and MI come later
(``common.signals.scoring``), the same way for every generator. LLM generators stream through the resumable sampling job,
so a crashed stage 1a continues where it stopped.
"""

from __future__ import annotations

import ast
import copy
import json
import random
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
        if config.stage1.mutants > 0:  # read only when asked for: the default leaves the candidates as they were
            first = len(variants) + 1
            mutants = semantic_mutants(reference, config.stage1.mutants, seed=f"{config.stage1.rewrite_seed}:"
                                       f"{int(task['task_id'])}")
            for index, (code, what) in enumerate(mutants, first):
                rows.append(_row(task["task_id"], index, code, "rewrite", f"mutant:{what}"))
    return rows


# Semantic mutations: each changes what the code computes at one site (unlike the rewrites, which must not).
_COMPARE_FLIPS = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq,
                  ast.NotEq: ast.Eq, ast.In: ast.NotIn, ast.NotIn: ast.In, ast.Is: ast.IsNot, ast.IsNot: ast.Is}
_BINOP_FLIPS = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.FloorDiv, ast.FloorDiv: ast.Mult,
                ast.Mod: ast.FloorDiv, ast.Div: ast.Mult}
_SYMBOLS = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!=", ast.In: "in",
            ast.NotIn: "not in", ast.Is: "is", ast.IsNot: "is not", ast.Add: "+", ast.Sub: "-", ast.Mult: "*",
            ast.FloorDiv: "//", ast.Mod: "%", ast.Div: "/", ast.And: "and", ast.Or: "or"}


def _mutation_sites(tree: ast.AST) -> list[tuple[int, str]]:
    """(node number in ``ast.walk`` order, kind) of every site one mutation can change."""
    sites = []
    for number, node in enumerate(ast.walk(tree)):
        if isinstance(node, ast.Compare) and any(type(op) in _COMPARE_FLIPS for op in node.ops):
            sites.append((number, "compare"))
        elif isinstance(node, ast.BinOp) and type(node.op) in _BINOP_FLIPS:
            sites.append((number, "binop"))
        elif isinstance(node, ast.BoolOp):
            sites.append((number, "boolop"))
        elif isinstance(node, ast.Constant) and type(node.value) is int:  # bool is no int here: type() is exact
            sites.extend([(number, "plus1"), (number, "minus1")])
        elif isinstance(node, ast.Return) and node.value is not None:
            sites.append((number, "return_none"))
    return sites


def _mutate(tree: ast.AST, number: int, kind: str, rng: random.Random) -> str:
    """Apply one mutation to node ``number`` of ``tree`` (in place); a description such as ``compare:<-><=@L3``."""
    node = next(n for i, n in enumerate(ast.walk(tree)) if i == number)
    line = f"@L{getattr(node, 'lineno', 0)}"
    if kind == "compare":
        slots = [i for i, op in enumerate(node.ops) if type(op) in _COMPARE_FLIPS]
        slot = rng.choice(slots)
        old = type(node.ops[slot])
        node.ops[slot] = _COMPARE_FLIPS[old]()
        return f"compare:{_SYMBOLS[old]}->{_SYMBOLS[_COMPARE_FLIPS[old]]}{line}"
    if kind == "binop":
        old = type(node.op)
        node.op = _BINOP_FLIPS[old]()
        return f"binop:{_SYMBOLS[old]}->{_SYMBOLS[_BINOP_FLIPS[old]]}{line}"
    if kind == "boolop":
        old = type(node.op)
        node.op = ast.Or() if old is ast.And else ast.And()
        return f"boolop:{_SYMBOLS[old]}->{_SYMBOLS[type(node.op)]}{line}"
    if kind in ("plus1", "minus1"):
        old = node.value
        node.value = old + (1 if kind == "plus1" else -1)
        return f"constant:{old}->{node.value}{line}"
    node.value = None  # return_none: the function returns None instead of its result
    return f"return:None{line}"


def semantic_mutants(code: str, n: int, seed: int | str = 0) -> list[tuple[str, str]]:
    """Up to ``n`` distinct one-site mutants of ``code`` as (mutated code, what changed), seeded.

    Each mutant changes what the code computes at one seeded-random site (a comparison flipped, an integer constant
    off by one, ``and``/``or`` swapped, ``+``/``-`` swapped, a result replaced by None), so most fail their task's
    asserts: failing candidates for the ``exec`` signal. Some may still pass (weak asserts, an equivalent mutant):
    they are executed like every candidate, so a mutant that passes is a passing candidate, labelled by what it
    did, never assumed to fail. The code is written back with ``ast.unparse`` (comments are not kept); code that
    does not parse gives no mutants.
    """
    if n <= 0:
        return []
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, RecursionError):
        return []
    rng = random.Random(f"mutants:{seed}")
    sites = _mutation_sites(tree)
    rng.shuffle(sites)
    seen, mutants = {code.strip(), ast.unparse(tree).strip()}, []
    for number, kind in sites:
        mutated = copy.deepcopy(tree)
        what = _mutate(mutated, number, kind, rng)
        text = ast.unparse(ast.fix_missing_locations(mutated))
        if text.strip() in seen:
            continue
        seen.add(text.strip())
        mutants.append((text, what))
        if len(mutants) == n:
            break
    return mutants


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
