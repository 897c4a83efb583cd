"""``python -m common run``: every stage in order, each skipping itself when its artifact is complete.

The order is the paper's: stage 1 (prepare, generate, label) -> 1c DPO -> 2a self-generation -> 2c further DPO
-> 3 evaluation and report. A crash anywhere is resumed by running the same command again: finished stages are
skipped by their manifests and the sampling jobs inside a stage continue from their last committed rows.
"""

from __future__ import annotations

import time
from pathlib import Path

from .config import PipelineConfig

STAGES = (
    ("prepare", "common.stage1", "prepare_mbpp", {}),
    ("generate-candidates", "common.stage1", "generate_candidates", {}),
    ("label-pairs", "common.stage1", "label_pairs", {}),
    ("dpo", "common.training", "run_dpo_stage", {"stage": "dpo"}),
    ("self-generate", "common.self_generation", "run_self_generation", {}),
    ("dpo-further", "common.training", "run_dpo_stage", {"stage": "dpo_further"}),
    ("evaluate", "common.evaluation", "run_evaluation", {}),
    ("report", "common.report", "run_report", {}),
)


def run_pipeline(config: PipelineConfig, run_dir: Path | str, force: bool = False) -> Path:
    """Run all stages; ``force`` recomputes every one of them."""
    import importlib

    run_dir = Path(run_dir)
    timings = []
    for name, module, function, extra in STAGES:
        print(f"\n=== {name} ===", flush=True)
        start = time.perf_counter()
        getattr(importlib.import_module(module), function)(config, run_dir, force=force, **extra)
        timings.append((name, time.perf_counter() - start))
    # the report stage has just printed the table; the timings close the run
    print("\nstage timings: " + ", ".join(f"{name} {seconds:.0f}s" for name, seconds in timings))
    return run_dir
