"""``make gpu-check``: run every GPU path for real on a CUDA machine, offline, in a few minutes, and print what it
measured (training s/step and tokens/s per method, sampling tokens/s per backend) and what it skipped and why.

It is the study machinery on ``configs/gpu-check.yaml`` (the embedded 270M in bf16, a few steps of each method,
QLoRA included), so it checks the code a real study runs, not a separate script. Without CUDA it says so and runs
nothing unless ``--cpu`` asks for the same checks on the CPU (slow; the tests do this with a tiny model).
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path
from typing import Any

from common.config import REPO_ROOT

PRESET = REPO_ROOT / "configs" / "gpu-check.yaml"


def _cuda() -> tuple[bool, str]:
    import torch

    if not torch.cuda.is_available():
        return False, "no CUDA device visible to torch " + (f"(torch {torch.__version__})")
    return True, f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}, bf16 {torch.cuda.is_bf16_supported()}"


def sampling_throughput(config: Any, backend: str, prompts: int = 8) -> dict[str, Any]:
    """Tokens/s of one sampling pass over the first evaluation prompts with ``backend`` (hf or vllm)."""
    import dataclasses

    from common.generation import free_accelerator_memory, make_backend
    from common.prompting.style import prompt_style
    from common.prompting.templates import build_prompt
    from common.evaluation.sampling import evaluation_tasks

    style = prompt_style(config.model)
    tasks = list(evaluation_tasks(config, "mbpp"))[:prompts]
    texts = [build_prompt(task, style, config.sampling.system_prompt) for task in tasks]
    sampling = dataclasses.replace(config.sampling, backend=backend)
    engine = make_backend(sampling, config.model, style=style)
    try:
        start = time.perf_counter()
        groups = engine.generate(texts, sampling.num_samples, sampling.seed)
        seconds = time.perf_counter() - start
    finally:
        engine.close()
        free_accelerator_memory()
    tokens = sum(c.num_tokens for group in groups for c in group)
    return {"backend": backend, "sequences": sum(map(len, groups)), "tokens": tokens, "seconds": seconds,
            "tokens_per_second": tokens / seconds if seconds else None}


def training_rows(root: Path, study: Any) -> list[dict[str, Any]]:
    from common.pipeline.artifacts import RunDir, read_manifest
    from common.study.config import arm_recipe
    from common.study.run import ARMS

    rows = []
    for arm in study.study.arms:
        stage = arm_recipe(arm)[-2]
        manifest = read_manifest(RunDir(root / ARMS / arm.name).stage_dir(stage)) or {}
        metrics = manifest.get("metrics") or {}
        rows.append({"arm": arm.name, "method": arm.method, "stage": stage, "steps": metrics.get("global_step"),
                     "s_per_step": metrics.get("seconds_per_step"), "tokens_per_second": metrics.get("tokens_per_second")})
    return rows


def _fmt(value: Any, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m common.gpu_check", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(PRESET))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--run-dir", default="runs/gpu-check")
    parser.add_argument("--cpu", action="store_true", help="run the checks without CUDA (slow)")
    args = parser.parse_args(argv)

    from common.study.config import load_study
    from common.study.run import run_study

    cuda, device = _cuda()
    print(f"device: {device}")
    skipped = []
    if not cuda and not args.cpu:
        print("skipped everything: no CUDA device (pass --cpu to run the same checks on the CPU)")
        return 0
    overrides = list(args.overrides)
    if not cuda:  # bf16 autocast on CPU works but is slow; the checks stay the same otherwise
        skipped.append("CUDA: --cpu given, so every path ran on the CPU")
    study = load_study(args.config, overrides)
    start = time.perf_counter()
    root = Path(args.run_dir)
    run_study(study, root, force=True)
    trained = time.perf_counter() - start

    config = study.shared_config()
    sampling = [sampling_throughput(config, "hf")]
    if not cuda:
        skipped.append("vLLM sampling: needs CUDA")
    elif importlib.util.find_spec("vllm") is None:
        skipped.append("vLLM sampling: vllm is not installed (pip install -r requirements-gpu.txt)")
    else:
        sampling.append(sampling_throughput(config, "vllm"))

    print(f"\nstudy of {len(study.study.arms)} arms (train + evaluate + report): {trained:.0f} s -> {root / 'study'}")
    print("\n| arm | method | stage | steps | s/step | train tokens/s |\n|---|---|---|---|---|---|")
    for row in training_rows(root, study):
        print(f"| {row['arm']} | {row['method']} | {row['stage']} | {_fmt(row['steps'])} | {_fmt(row['s_per_step'])} "
              f"| {_fmt(row['tokens_per_second'], 0)} |")
    print("\n| sampling backend | sequences | tokens | s | tokens/s |\n|---|---|---|---|---|")
    for row in sampling:
        print(f"| {row['backend']} | {row['sequences']} | {row['tokens']} | {row['seconds']:.1f} "
              f"| {_fmt(row['tokens_per_second'], 0)} |")
    print("\nskipped: " + ("; ".join(skipped) if skipped else "nothing"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
